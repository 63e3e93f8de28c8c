"""A private ``munged`` for tests and demos: its own key, socket and files in a temp directory.

Pasqal's Warden authenticates callers with MUNGE credentials. Tests must not depend on (or
disturb) a system ``munged``, so :class:`MungeDaemon` starts one on a private socket::

    with MungeDaemon() as munge:
        env = {"QRMI_MUNGE_SOCKET": munge.socket}   # tell the pasqal-local client
        fake = pasqal_warden_server(munge_socket=munge.socket)

It needs the ``munged`` and ``mungekey`` programs (Debian: ``apt install munge``); without them
:meth:`MungeDaemon.start` raises :class:`MungeUnavailableError` so tests can skip. It runs
``munged --force --foreground`` as a child process (so it works as root in containers and is
reaped properly); only that child is stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["MungeDaemon", "MungeUnavailableError", "munge_available"]

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


class MungeUnavailableError(RuntimeError):
    """``munged`` is not installed or could not start."""


def _program(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH_PATH)


def munge_available() -> bool:
    """True when ``munged`` is installed (libmunge comes with it)."""
    return _program("munged") is not None


class MungeDaemon:
    """A ``munged`` serving a private socket under a temporary directory."""

    def __init__(self, *, start_timeout: float = 10.0, key: bytes | None = None) -> None:
        self.start_timeout = start_timeout
        self._key = key
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.directory: Path | None = None

    @property
    def socket(self) -> str:
        """Path of the daemon's socket (pass it as ``QRMI_MUNGE_SOCKET``)."""
        if self.directory is None:
            raise RuntimeError("MungeDaemon has not been started: call start() first.")
        return str(self.directory / "munge.socket")

    def start(self) -> MungeDaemon:
        """Create a key and start the daemon; return once its socket exists."""
        munged = _program("munged")
        if munged is None:
            raise MungeUnavailableError("munged is not installed (Debian: apt install munge)")
        self._tmp = tempfile.TemporaryDirectory(prefix="qrmi-munge-")
        self.directory = Path(self._tmp.name)
        key_file = self._write_key(self.directory / "munge.key")
        pid_file = self.directory / "munged.pid"  # munged insists on writing one
        command = [
            munged,
            "--force",
            f"--socket={self.socket}",
            f"--key-file={key_file}",
            f"--pid-file={pid_file}",
            f"--seed-file={self.directory / 'munged.seed'}",
            f"--log-file={self.directory / 'munged.log'}",
            "--num-threads=2",
        ]
        self._process = subprocess.Popen(
            [*command, "--foreground"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_for_socket()
        return self

    def stop(self) -> None:
        """Stop the daemon this object started and delete its files."""
        process, self._process = self._process, None
        if process is not None:
            _terminate(process)
        self._cleanup()

    @property
    def log(self) -> str:
        """The daemon's log text (for test failure messages)."""
        if self.directory is None:
            return ""
        path = self.directory / "munged.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_key(self, path: Path) -> Path:
        mungekey = _program("mungekey")
        if self._key is None and mungekey is not None:
            subprocess.run(
                [mungekey, "--create", f"--keyfile={path}", "--bits=1024"],
                capture_output=True,
                timeout=30,
                check=True,
            )
        else:
            path.write_bytes(self._key or os.urandom(128))
        path.chmod(0o600)
        return path

    def _wait_for_socket(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if Path(self.socket).exists():
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.01)
        stderr = b""
        if self._process.poll() is not None and self._process.stderr is not None:
            stderr = self._process.stderr.read()
        log = self.log
        self.stop()
        raise MungeUnavailableError(
            f"munged did not create its socket within {self.start_timeout} s: "
            f"{stderr.decode(errors='replace').strip()}\n{log}"
        )

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
        self._tmp = None
        self.directory = None

    def __enter__(self) -> MungeDaemon:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MungeDaemon(socket={self.socket if self.directory else None!r})"


def _terminate(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    if process.stderr is not None:
        process.stderr.close()
