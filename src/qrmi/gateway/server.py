"""Running the gateway: JSON logs, the store, the application and uvicorn (``qrmi gateway``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
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
    "Workers",
    "build_app",
    "header_deadline_protocol",
    "parse_listen",
    "serve",
]

#: Where the store lives unless ``--store`` says otherwise: a SQLite file, or a
#: ``postgresql://user@host:port/dbname`` URL for replicas sharing one database.
DEFAULT_STORE = Path("/var/lib/qrmi-gateway/gateway.db")

_RECORD_FIELDS = ("method", "path", "status", "ms", "job_id", "worker")

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
    workers: int = 1


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
        store = Store(options.store, processes=options.workers)
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
    """Serve the gateway with uvicorn until SIGINT/SIGTERM (``options.workers`` processes)."""
    configure_logging(options.log_level)
    if options.workers > 1:
        Workers(options).run()
        return
    app, service = build_app(options)
    _log_start(options)
    try:
        _uvicorn_server(app, options).run()
    finally:
        service.store.close()


def _log_start(options: GatewayOptions) -> None:
    logger.info(
        "gateway on %s://%s:%d, store %s%s",
        "https" if options.tls_cert else "http",
        options.host,
        options.port,
        describe_location(options.store),
        f", {options.workers} workers" if options.workers > 1 else "",
    )


def _uvicorn_server(app: ASGIApp, options: GatewayOptions) -> Any:
    import uvicorn

    config = uvicorn.Config(
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
    return uvicorn.Server(config)


class Workers:
    """``qrmi gateway --workers N``: N gateway processes answering on one listening socket.

    One Python process answers with one CPU at most; the workers use the host's cores. Each has
    its own backends (so its own vendor connections and tokens) and shares the store: a SQLite
    store through file locks (:class:`~qrmi.gateway.store.Store` with ``processes``), a
    PostgreSQL store as replicas do. Their Prometheus counters are summed at every scrape
    (``PROMETHEUS_MULTIPROC_DIR``, a private directory removed at exit). A worker that dies is
    replaced; workers that keep dying at start stop the gateway with exit status 1.
    """

    #: A worker that dies sooner than this after its start counts as failing at start.
    QUICK_DEATH_SECONDS = 10.0
    #: Failures at start in a row after which the gateway gives up.
    MAX_QUICK_DEATHS = 5
    #: How long workers get to finish their requests at SIGTERM before SIGKILL (below the
    #: example unit's TimeoutStopSec).
    STOP_SECONDS = 10.0

    def __init__(self, options: GatewayOptions) -> None:
        self.options = options
        self._children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, start)
        self._stopping = False
        self._stop_deadline = 0.0
        self._exit_status = 0

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM.

        Raises:
            ConfigError: the config, the store or the address is unusable.
            SystemExit: workers kept failing at start (status 1).
        """
        metrics = tempfile.mkdtemp(prefix="qrmi-gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics  # before prometheus_client loads
        try:
            _, service = build_app(self.options)  # fails early on a bad config or store
            service.store.close()
            listener = _listen(self.options.host, self.options.port)
            _log_start(self.options)
            try:
                self._supervise(listener)
            finally:
                listener.close()
        finally:
            shutil.rmtree(metrics, ignore_errors=True)

    def _supervise(self, listener: socket.socket) -> None:
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        quick_deaths = 0
        try:
            for index in range(self.options.workers):
                self._spawn(index, listener)
            while self._children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    time.sleep(0.1)
                    self._kill_stragglers()
                    continue
                index, started = self._children.pop(pid)
                if self._stopping:
                    continue
                quick = time.monotonic() - started < self.QUICK_DEATH_SECONDS
                quick_deaths = quick_deaths + 1 if quick else 0
                logger.warning(
                    "worker %d (pid %d) exited with status %d; starting another",
                    index, pid, os.waitstatus_to_exitcode(status),
                )  # fmt: skip
                if quick_deaths >= self.MAX_QUICK_DEATHS:
                    logger.error("workers keep failing at start (see above); stopping the gateway")
                    self._stop(signal.SIGTERM, None)
                    self._exit_status = 1
                    continue
                time.sleep(min(quick_deaths, 5))
                if not self._stopping:
                    self._spawn(index, listener)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._exit_status:
            raise SystemExit(self._exit_status)

    def _stop(self, signum: int, frame: object) -> None:
        if not self._stopping:
            self._stopping = True
            self._stop_deadline = time.monotonic() + self.STOP_SECONDS
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _kill_stragglers(self) -> None:
        if self._stopping and time.monotonic() > self._stop_deadline:
            for pid in self._children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _spawn(self, index: int, listener: socket.socket) -> None:
        pid = os.fork()
        if pid:
            self._children[pid] = (index, time.monotonic())
            return
        status = 1
        try:
            _die_with_parent()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)  # uvicorn installs its own
            _tag_log_records(index)
            app, service = build_app(self.options)
            try:
                _uvicorn_server(app, self.options).run(sockets=[listener])
                status = 0
            finally:
                service.store.close()
        except BaseException as exc:  # a worker reports and exits; the supervisor decides
            logger.error("worker %d failed: %s", index, redact(f"{type(exc).__name__}: {exc}"))
        finally:
            logging.shutdown()
            os._exit(status)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    listener.listen(2048)
    return listener


def _die_with_parent() -> None:
    """Have the kernel send this worker SIGTERM if the supervisor dies (even by SIGKILL), so
    that no orphan keeps the port."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the supervisor died before prctl took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _tag_log_records(index: int) -> None:
    def tag(record: logging.LogRecord) -> bool:
        record.worker = index
        return True

    for handler in logging.getLogger("qrmi").handlers + logging.getLogger("uvicorn").handlers:
        handler.addFilter(tag)
