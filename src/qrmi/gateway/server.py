"""Running the gateway: JSON logs, the store, the application and uvicorn (``qrmi gateway``)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qrmi.config import Config
from qrmi.errors import ConfigError
from qrmi.gateway.app import DEFAULT_MAX_BODY_BYTES, ASGIApp, create_app
from qrmi.gateway.auth import load_admin_hashes
from qrmi.gateway.service import GatewayService
from qrmi.gateway.store import Store, StoreUnavailableError, describe_location
from qrmi.log import redact

__all__ = [
    "DEFAULT_STORE",
    "GatewayOptions",
    "JsonFormatter",
    "build_app",
    "header_deadline_protocol",
    "parse_listen",
    "serve",
]

#: Where the store lives unless ``--store`` says otherwise: a SQLite file, or a
#: ``postgresql://user@host:port/dbname`` URL for replicas sharing one database.
DEFAULT_STORE = Path("/var/lib/qrmi-gateway/gateway.db")

_RECORD_FIELDS = ("method", "path", "status", "ms", "job_id")

logger = logging.getLogger("qrmi.gateway")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the access-log fields.

    Messages are redacted again here, for records of loggers outside ``qrmi`` (uvicorn).
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in _RECORD_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        return json.dumps(entry)


def configure_logging(level: str = "INFO") -> None:
    """Send ``qrmi`` and ``uvicorn`` records to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("qrmi", "uvicorn", "uvicorn.error"):
        target = logging.getLogger(name)
        target.handlers = [handler]
        target.setLevel(level.upper())
        target.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # our access log has the job id


@dataclass(frozen=True)
class GatewayOptions:
    """Everything ``qrmi gateway`` is started with."""

    config: Path
    store: str | Path = DEFAULT_STORE
    host: str = "127.0.0.1"
    port: int = 8765
    tls_cert: Path | None = None
    tls_key: Path | None = None
    munge_socket: str | None = None
    admin_token_file: Path | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout: float = 30.0
    header_timeout: float = 10.0
    limit_concurrency: int = 1024
    token_grace_seconds: float = 300.0
    log_level: str = "INFO"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a pair.

    Raises:
        ConfigError: not ``HOST:PORT`` with a port in 1..65535.
    """
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--listen {text!r} must be HOST:PORT, e.g. 127.0.0.1:8765 or 0.0.0.0:8443"
        )
    return host, int(port)


def build_app(options: GatewayOptions) -> tuple[ASGIApp, GatewayService]:
    """Load the config, open the store and build the application (nothing listens yet).

    Raises:
        ConfigError: the config, the admin token file or the TLS options are unusable.
    """
    config = Config.load(options.config)
    if (options.tls_cert is None) != (options.tls_key is None):
        raise ConfigError("give both --tls-cert and --tls-key, or neither")
    try:
        admin_hashes = load_admin_hashes(options.admin_token_file)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the admin token file {options.admin_token_file}: {exc.strerror}"
        ) from None
    try:
        store = Store(options.store)
    except StoreUnavailableError as exc:  # the message names the store, never its password
        raise ConfigError(str(exc)) from None
    service = GatewayService(config, store, token_grace_seconds=options.token_grace_seconds)
    app = create_app(
        service,
        munge_socket=options.munge_socket,
        admin_hashes=admin_hashes,
        max_body_bytes=options.max_body_bytes,
        body_timeout=options.body_timeout,
    )
    return app, service


def header_deadline_protocol(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, closing a connection that does not deliver a request's line and
    headers within ``seconds``: counted from the connection's opening, and for a later request
    on a kept-alive connection from that request's first byte.

    uvicorn itself waits for headers forever (its keep-alive timer stops at the first byte), so
    a client sending them a byte at a time (slow-loris) would hold a connection slot, counted
    by ``--limit-concurrency``, as long as it likes. A request whose headers arrived is never
    cut: the body has ``--body-timeout``, and a handler (a long-poll wait) runs to its end.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: Any = AutoHTTPProtocol

    class HeaderDeadlineProtocol(base):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None
        _timed_cycle: object = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm_header_deadline()

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and self._between_requests():
                self._arm_header_deadline()
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm_header_deadline()  # idle now: uvicorn's keep-alive timer applies

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            return self.cycle is None or bool(self.cycle.response_complete)

        def _arm_header_deadline(self) -> None:
            self._disarm_header_deadline()
            self._timed_cycle = self.cycle  # a new cycle means the headers arrived
            self._header_timer = self.loop.call_later(seconds, self._header_deadline_passed)

        def _disarm_header_deadline(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_deadline_passed(self) -> None:
            self._header_timer = None
            stalled = self.cycle is self._timed_cycle and self._between_requests()
            if stalled and not self.transport.is_closing():
                logger.info("closed a connection whose request headers took over %g s", seconds)
                self.transport.close()

    return HeaderDeadlineProtocol


def serve(options: GatewayOptions) -> None:
    """Serve the gateway with uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    configure_logging(options.log_level)
    app, service = build_app(options)
    logging.getLogger("qrmi.gateway").info(
        "gateway on %s://%s:%d, store %s",
        "https" if options.tls_cert else "http",
        options.host,
        options.port,
        describe_location(options.store),
    )
    try:
        uvicorn.run(
            app,
            host=options.host,
            port=options.port,
            ssl_certfile=str(options.tls_cert) if options.tls_cert else None,
            ssl_keyfile=str(options.tls_key) if options.tls_key else None,
            log_config=None,
            access_log=False,
            timeout_keep_alive=30,
            http=header_deadline_protocol(options.header_timeout),
            # Above this many connections and requests at once, answer 503 (clients retry):
            # bounds what slow or stalled clients can hold.
            limit_concurrency=options.limit_concurrency,
            timeout_graceful_shutdown=5,
            lifespan="on",
        )
    finally:
        service.store.close()
