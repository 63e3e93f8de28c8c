"""Running the gateway: JSON logs, the store, the application and uvicorn (``qrmi gateway``)."""

from __future__ import annotations

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

__all__ = ["DEFAULT_STORE", "GatewayOptions", "JsonFormatter", "build_app", "parse_listen", "serve"]

#: Where the store lives unless ``--store`` says otherwise: a SQLite file, or a
#: ``postgresql://user@host:port/dbname`` URL for replicas sharing one database.
DEFAULT_STORE = Path("/var/lib/qrmi-gateway/gateway.db")

_RECORD_FIELDS = ("method", "path", "status", "ms", "job_id")


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
            # Above this many connections and requests at once, answer 503 (clients retry):
            # bounds what slow or stalled clients can hold.
            limit_concurrency=options.limit_concurrency,
            timeout_graceful_shutdown=5,
            lifespan="on",
        )
    finally:
        service.store.close()
