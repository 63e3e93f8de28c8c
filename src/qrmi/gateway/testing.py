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
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from qrmi.config import Config
from qrmi.gateway.app import ASGIApp, create_app
from qrmi.gateway.service import GatewayService
from qrmi.gateway.store import Store

__all__ = ["LocalGateway"]


class LocalGateway:
    """A gateway for ``config`` whose store is ``directory/gateway.db``."""

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
    ) -> None:
        self.config = config if isinstance(config, Config) else Config.from_dict(config)
        self.directory = Path(directory)
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
        store = Store(self.directory / "gateway.db")
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
