"""A private PostgreSQL server for tests and benchmarks: its own cluster in a temp directory.

The gateway's store can live in PostgreSQL, which several gateway replicas share. Tests and
benchmarks start Debian's PostgreSQL (``apt install postgresql``) on a free port of 127.0.0.1
with :class:`PostgresServer`, never touching a system cluster::

    with PostgresServer() as server:
        url = server.create_database("gateway")      # postgresql://...@127.0.0.1:PORT/gateway
        store = Store(url)

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` system
user (``nobody`` if there is none); otherwise to the caller. Only the ``postgres`` process this
object started is stopped (by its PID), and its directory deleted. Without the programs,
:meth:`PostgresServer.start` raises :class:`PostgresUnavailableError` so tests can skip.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresServer", "PostgresUnavailableError", "postgres_bindir"]

_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL is not installed or could not start."""


def postgres_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/VERSION/bin`` with ``initdb`` and ``postgres`` (Debian
    keeps them off the PATH), else the directory of ``initdb`` on the PATH, else ``None``."""
    versions = []
    if _DEBIAN_ROOT.is_dir():
        for path in _DEBIAN_ROOT.iterdir():
            if path.name.isdigit() and (path / "bin" / "initdb").exists():
                versions.append((int(path.name), path / "bin"))
    if versions:
        return max(versions)[1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, served on 127.0.0.1.

    ``fsync=False`` trades durability for speed (tests); benchmarks keep the default, as a
    deployment would.
    """

    def __init__(self, *, fsync: bool = True, start_timeout: float = 60.0) -> None:
        self.fsync = fsync
        self.start_timeout = start_timeout
        self.port = 0
        self.user = ""
        self.directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._command: list[str] = []
        self._owner = pwd.getpwuid(os.geteuid())

    @property
    def url(self) -> str:
        """The URL of the ``postgres`` database (the superuser, no password: local trust)."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        """The URL of database ``name`` on this server."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def start(self) -> PostgresServer:
        """Create the cluster and start ``postgres``; return once it accepts connections."""
        bindir = postgres_bindir()
        if bindir is None:
            raise PostgresUnavailableError(
                "PostgreSQL is not installed (Debian: apt install postgresql, or run "
                "scripts/install-system-deps as root)"
            )
        owner = _owner()
        self.user = owner.pw_name
        self.directory = Path(tempfile.mkdtemp(prefix="qrmi-postgres-"))
        os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        data = self.directory / "data"
        self._run_as(
            owner,
            [str(bindir / "initdb"), "-D", str(data), "-U", owner.pw_name, "--auth=trust"],
        )
        self.port = _free_port()
        command = [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self.directory),  # the Unix socket stays in our directory
            "-c",
            "max_connections=200",
            "-c",
            f"fsync={'on' if self.fsync else 'off'}",
        ]
        self._command, self._owner = command, owner
        self._serve()
        return self

    def restart(self) -> None:
        """Stop the server (fast shutdown: every client connection is cut) and start it again
        on the same port and data, as a database restart or failover looks to its clients."""
        process, self._process = self._process, None
        if process is not None:
            _shut_down(process)
        self._serve()

    def _serve(self) -> None:
        assert self.directory is not None
        as_root = os.geteuid() == 0
        with (self.directory / "postgres.log").open("ab") as log:
            self._process = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                user=self._owner.pw_uid if as_root else None,
                group=self._owner.pw_gid if as_root else None,
                start_new_session=True,  # a Ctrl-C of the tests reaches it only through stop()
            )
        self._wait_until_ready()

    def create_database(self, name: str) -> str:
        """Create database ``name`` (lower-case letters, digits, ``_``); return its URL."""
        import psycopg

        if not _DATABASE_NAME.fullmatch(name):
            raise ValueError(f"database name {name!r} must match {_DATABASE_NAME.pattern}")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # checked above
        return self.database_url(name)

    def stop(self) -> None:
        """Stop the server this object started (fast shutdown) and delete its files."""
        process, self._process = self._process, None
        if process is not None:
            _shut_down(process)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    @property
    def log(self) -> str:
        """The server's log (for failure messages)."""
        if self.directory is None or not (self.directory / "postgres.log").exists():
            return ""
        return (self.directory / "postgres.log").read_text(errors="replace")

    def _run_as(self, owner: pwd.struct_passwd, command: list[str]) -> None:
        as_root = os.geteuid() == 0
        done = subprocess.run(
            command,
            capture_output=True,
            timeout=120,
            user=owner.pw_uid if as_root else None,
            group=owner.pw_gid if as_root else None,
            cwd=self.directory,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()
            self.stop()
            raise PostgresUnavailableError(f"{Path(command[0]).name} failed: {output}")

    def _wait_until_ready(self) -> None:
        import psycopg

        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        log = self.log
        self.stop()
        raise PostgresUnavailableError(f"postgres did not accept connections: {log[-2000:]}")

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port})"


def _shut_down(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # "fast" shutdown: clients are disconnected
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _owner() -> pwd.struct_passwd:
    """Who owns the cluster: the caller, or (as root, whom PostgreSQL refuses) ``postgres``."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailableError("running as root, and neither user postgres nor nobody exists")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
