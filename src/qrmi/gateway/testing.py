"""A gateway running in this process, for tests, demos and benchmarks.

:class:`LocalGateway` serves :func:`~qrmi.gateway.app.create_app` on a free port of 127.0.0.1
(through :class:`qrmi.testing.server.FakeServer`, so requests are recorded and faults can be
injected), with its store in ``directory``::

    with LocalGateway(config, tmp_path, munge_socket=munge.socket) as gateway:
        token, variables = gateway.open_job("101", uid=1000, qpus=["emu"])
        qpu = QuantumResource("emu", "local-emulator", environ=variables)
        gateway.restart()          # a new process would see the same store

:meth:`LocalGateway.open_job` skips the MUNGE check (it calls the service directly); use
:func:`qrmi.gateway.client.start_job` against :attr:`LocalGateway.url` to go through it.

:class:`GatewayProcess` runs ``qrmi gateway`` as a process of its own instead, for what needs
one: replicas sharing a PostgreSQL store, ``kill -9``, load tests::

    replica = GatewayProcess(config_file, store=postgres_url, log=tmp / "gw1.log").start()
    replica.kill()                 # SIGKILL, by PID
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from qrmi.config import Config
from qrmi.gateway.app import ASGIApp, create_app
from qrmi.gateway.service import GatewayService
from qrmi.gateway.store import Store

__all__ = ["GatewayProcess", "LocalGateway"]


class LocalGateway:
    """A gateway for ``config`` whose store is ``directory/gateway.db``, or ``store`` (a
    ``postgresql://`` URL, for instance) when given."""

    def __init__(
        self,
        config: Config | dict[str, Any],
        directory: str | Path,
        *,
        munge_socket: str | None = None,
        admin_hashes: frozenset[str] = frozenset(),
        max_body_bytes: int | None = None,
        token_grace_seconds: float = 300.0,
        body_timeout: float = 30.0,
        store: str | Path | None = None,
    ) -> None:
        self.config = config if isinstance(config, Config) else Config.from_dict(config)
        self.directory = Path(directory)
        self.store_location = self.directory / "gateway.db" if store is None else store
        self.munge_socket = munge_socket
        self._app_options: dict[str, Any] = {
            "munge_socket": munge_socket,
            "admin_hashes": admin_hashes,
            "body_timeout": body_timeout,
        }
        if max_body_bytes is not None:
            self._app_options["max_body_bytes"] = max_body_bytes
        self.token_grace_seconds = token_grace_seconds
        self.service: GatewayService | None = None
        self.server: Any = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return str(self.server.url)

    def _build(self) -> ASGIApp:
        store = Store(self.store_location)
        self.service = GatewayService(
            self.config, store, token_grace_seconds=self.token_grace_seconds
        )
        return create_app(self.service, **self._app_options)

    def start(self) -> LocalGateway:
        """Serve (on a free port the first time, on the same port after :meth:`stop`), with
        fresh objects over the same store file, as a restarted gateway; return ``self``."""
        from qrmi.testing.server import FakeServer

        port = self.server.port if self.server is not None else 0
        self.server = FakeServer(self._build(), name="qrmi-gateway", port=port).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the store."""
        if self.server is not None:
            self.server.stop()
        if self.service is not None:
            self.service.store.close()

    def restart(self) -> None:
        """Stop, then serve a fresh gateway (new objects, same store file) on the same port."""
        self.stop()
        self.start()

    def open_job(
        self, job_id: str, *, uid: int = 1000, qpus: list[str], time_limit: int | None = 3600
    ) -> tuple[str, dict[str, str]]:
        """Start a job without MUNGE; return its token and variables (with the URL)."""
        assert self.service is not None, "start() the gateway first"
        started = self.service.start_job(job_id, uid, qpus, time_limit)
        return started.token, {**started.variables, "QRMI_GATEWAY_URL": self.url}

    def __enter__(self) -> LocalGateway:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class GatewayProcess:
    """``qrmi gateway`` serving ``config`` from ``store`` (a SQLite path or a PostgreSQL URL)
    on a free port of 127.0.0.1, its output in ``log``; ``args`` are more command-line options.
    Only the process this object started is ever signalled (by its PID)."""

    def __init__(
        self,
        config: str | Path,
        *,
        store: str | Path,
        log: str | Path,
        munge_socket: str | None = None,
        args: list[str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log)
        self.start_timeout = start_timeout
        self.command = [
            sys.executable,
            "-m",
            "qrmi.cli",
            "gateway",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{self.port}",
            *(["--munge-socket", munge_socket] if munge_socket else []),
            *(args or []),
        ]
        # The store travels in the environment: a URL may carry a password.
        self._environment = {**os.environ, "QRMI_GATEWAY_STORE": str(store)}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        """Start the process; return once ``/v1/health`` answers.

        Raises:
            RuntimeError: it exited, or did not answer within ``start_timeout`` (its log is
                quoted).
        """
        import httpx

        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self._environment,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"qrmi gateway did not start: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig`` (if it still runs) and wait for the exit; return its status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(30)

    def kill(self) -> None:
        """``kill -9``: no shutdown at all, as when its host dies."""
        self.stop(signal.SIGKILL)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
