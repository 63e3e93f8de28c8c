"""A real HTTP server on 127.0.0.1 for tests, demos and benchmarks, with fault injection.

:class:`FakeServer` runs any ASGI application (FastAPI, Starlette, a bare ASGI callable) under
uvicorn in a background thread. In front of the application it

* records every HTTP request (:class:`RecordedRequest`) in a thread-safe list, and
* applies the faults armed on :attr:`FakeServer.faults` (:class:`FaultInjector`): error statuses,
  throttling with ``Retry-After``, latency, and connections closed without any response.

Vendor fakes build their application and hand it to :class:`FakeServer` (or subclass it)::

    with FakeServer(app, name="ibm-qs") as server:
        server.faults.fail(503, times=2, path="/v1/jobs*")
        client = HttpClient(server.url, service="IBM Quantum System")
        ...
        assert len(server.requests("/v1/jobs*", method="POST")) == 3

Sockets get ``TCP_NODELAY`` (asyncio sets it; we set it again explicitly) so small responses are
not held back by Nagle's algorithm. uvicorn is imported only when a server starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from qrmi.errors import ConfigError, InvalidInputError

__all__ = [
    "HTTP_IMPLEMENTATIONS",
    "SENSITIVE_HEADERS",
    "ASGIApp",
    "FakeServer",
    "FaultInjector",
    "RecordedRequest",
    "RequestLog",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Header names (lower case) that carry credentials. They are kept in the record (tests check
#: them) but masked in ``repr`` and :meth:`RecordedRequest.safe_headers`.
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "q-api-token",
        "x-amz-security-token",
        "x-munge-cred",
    }
)


@dataclass
class RecordedRequest:
    """One request as the server received it.

    ``headers`` has lower-case names and keeps credential headers verbatim so that tests can
    check them; :attr:`sensitive` lists which ones are credentials. ``status`` is the response
    status (``None`` while unanswered or when the connection was dropped); ``fault`` describes
    the injected fault that answered it, if any.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    received_at: float
    status: int | None = None
    fault: str | None = None

    @property
    def params(self) -> dict[str, str]:
        """The query string as a dict (the last value wins for repeated keys)."""
        return dict(parse_qsl(self.query, keep_blank_values=True))

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def sensitive(self) -> frozenset[str]:
        """Names of the credential-carrying headers present on this request."""
        return frozenset(name for name in self.headers if name in SENSITIVE_HEADERS)

    def safe_headers(self) -> dict[str, str]:
        """The headers with credential values replaced by ``***``."""
        return {
            name: "***" if name in SENSITIVE_HEADERS else value
            for name, value in self.headers.items()
        }

    def __repr__(self) -> str:
        target = f"{self.path}?{self.query}" if self.query else self.path
        return (
            f"RecordedRequest({self.method} {target} status={self.status} fault={self.fault} "
            f"headers={self.safe_headers()} body={len(self.body)} bytes)"
        )


class RequestLog:
    """A thread-safe, append-only list of :class:`RecordedRequest`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[RecordedRequest] = []

    def append(self, request: RecordedRequest) -> None:
        """Record ``request``."""
        with self._lock:
            self._items.append(request)

    def requests(
        self, path_glob: str | None = None, method: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests, oldest first, whose path matches ``path_glob`` (fnmatch, ``*``
        also matches ``/``) and whose method is ``method`` (any case), when given."""
        with self._lock:
            items = list(self._items)
        return [item for item in items if _matches(item.method, item.path, path_glob, method)]

    def clear(self) -> None:
        """Forget every recorded request."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def _matches(method: str, path: str, path_glob: str | None, wanted_method: str | None) -> bool:
    if wanted_method is not None and method.upper() != wanted_method.upper():
        return False
    return path_glob is None or fnmatch.fnmatchcase(path, path_glob)


@dataclass
class _Rule:
    """One armed fault. ``remaining`` None = no count limit; ``until`` None = no time limit."""

    kind: str  # "respond", "latency" or "drop"
    path: str
    method: str | None
    remaining: int | None
    until: float | None
    label: str
    status: int = 0
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    seconds: float = 0.0

    def expired(self, now: float) -> bool:
        return self.remaining == 0 or (self.until is not None and now >= self.until)

    def consume(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1


@dataclass
class _Decision:
    """What the injector does to one request: wait ``latency`` seconds, then maybe a fault."""

    latency: float = 0.0
    latency_label: str | None = None
    fault: _Rule | None = None


class FaultInjector:
    """Faults armed on a :class:`FakeServer`; thread-safe, applied in the order armed.

    Every method takes ``path`` (an fnmatch glob on the URL path, default every path) and
    ``method`` (default every method). Latency rules add up and delay the request; then the
    first matching ``fail``/``throttle``/``drop_connections`` rule answers it. A rule armed with
    ``times=N`` answers N requests; ``times=None`` answers until :meth:`reset`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._clock = clock

    def fail(
        self,
        status: int = 503,
        *,
        times: int | None = 1,
        path: str = "*",
        method: str | None = None,
        body: str | bytes | Mapping[str, Any] | list[Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer matching requests with ``status`` and ``body`` (a dict/list is sent as JSON;
        the default is ``{"message": "injected fault: HTTP <status>"}``)."""
        _check_status(status)
        _check_times(times)
        self._arm(
            _response_rule(status, body, headers, path, method, times, None, label=f"fail {status}")
        )

    def throttle(
        self,
        status: int = 429,
        *,
        times: int | None = None,
        seconds: float | None = None,
        retry_after: float | None = None,
        path: str = "*",
        method: str | None = None,
        body: str | bytes | Mapping[str, Any] | list[Any] | None = None,
    ) -> None:
        """Answer matching requests with ``status`` (429 "too many requests" or 423 "locked")
        for ``times`` requests or for ``seconds`` seconds (neither: until :meth:`reset`),
        with a ``Retry-After`` header when ``retry_after`` is given."""
        _check_status(status)
        _check_times(times)
        if seconds is not None and seconds <= 0:
            raise InvalidInputError(f"throttle seconds must be positive; got {seconds}.")
        headers = {} if retry_after is None else {"Retry-After": _format_seconds(retry_after)}
        until = None if seconds is None else self._clock() + seconds
        self._arm(
            _response_rule(
                status, body, headers, path, method, times, until, label=f"throttle {status}"
            )
        )

    def latency(
        self,
        seconds: float,
        *,
        path: str = "*",
        method: str | None = None,
        times: int | None = None,
    ) -> None:
        """Delay matching requests by ``seconds`` before they are answered."""
        if seconds < 0:
            raise InvalidInputError(f"latency seconds must be >= 0; got {seconds}.")
        _check_times(times)
        rule = _Rule("latency", path, method, times, None, label=f"latency {seconds:g}s")
        rule.seconds = seconds
        self._arm(rule)

    def drop_connections(
        self, *, times: int | None = 1, path: str = "*", method: str | None = None
    ) -> None:
        """Close the TCP connection of matching requests without sending any response."""
        _check_times(times)
        self._arm(_Rule("drop", path, method, times, None, label="drop"))

    def reset(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._rules.clear()

    @property
    def armed(self) -> int:
        """How many rules are still armed."""
        with self._lock:
            self._prune(self._clock())
            return len(self._rules)

    def decide(self, method: str, path: str) -> _Decision:
        """Consume the rules matching one request and say what to do with it."""
        decision = _Decision()
        with self._lock:
            now = self._clock()
            self._prune(now)
            for rule in self._rules:
                if not _matches(method, path, rule.path, rule.method):
                    continue
                if rule.kind == "latency":
                    rule.consume()
                    decision.latency += rule.seconds
                    decision.latency_label = rule.label
                elif decision.fault is None:
                    rule.consume()
                    decision.fault = rule
            self._prune(now)
        return decision

    def _arm(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def _prune(self, now: float) -> None:
        self._rules = [rule for rule in self._rules if not rule.expired(now)]


def _check_status(status: int) -> None:
    if not 100 <= status <= 599:
        raise InvalidInputError(f"fault status must be an HTTP status (100-599); got {status}.")


def _check_times(times: int | None) -> None:
    if times is not None and times < 1:
        raise InvalidInputError(f"times must be >= 1 or None (until reset); got {times}.")


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _response_rule(
    status: int,
    body: str | bytes | Mapping[str, Any] | list[Any] | None,
    headers: Mapping[str, str] | None,
    path: str,
    method: str | None,
    times: int | None,
    until: float | None,
    *,
    label: str,
) -> _Rule:
    if body is None:
        body = {"message": f"injected fault: HTTP {status}"}
    if isinstance(body, Mapping | list):
        encoded, content_type = json.dumps(body).encode(), "application/json"
    elif isinstance(body, str):
        encoded, content_type = body.encode(), "text/plain; charset=utf-8"
    else:
        encoded, content_type = body, "application/octet-stream"
    raw_headers = [(b"content-type", content_type.encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return _Rule(
        "respond",
        path,
        method,
        times,
        until,
        label,
        status=status,
        body=encoded,
        headers=raw_headers,
    )


class _Connections:
    """Open transports by client address, so that a request's connection can be dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_peer: dict[tuple[str, int], asyncio.Transport] = {}

    def add(self, peer: tuple[str, int] | None, transport: asyncio.Transport) -> None:
        if peer is not None:
            with self._lock:
                self._by_peer[peer] = transport

    def remove(self, peer: tuple[str, int] | None) -> None:
        if peer is not None:
            with self._lock:
                self._by_peer.pop(peer, None)

    def abort(self, peer: Iterable[Any] | None) -> bool:
        if peer is None:
            return False
        host, port = tuple(peer)
        with self._lock:
            transport = self._by_peer.get((str(host), int(port)))
        if transport is None:
            return False
        transport.abort()  # no FIN-then-response: the client sees the connection vanish
        return True


#: HTTP/1.1 implementations a :class:`FakeServer` can use (uvicorn's protocol modules).
HTTP_IMPLEMENTATIONS = ("h11", "httptools")


def _protocol_class(connections: _Connections, http: str = "h11") -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (``h11``, pure Python, the default; or ``httptools``, the C
    parser, about 100 µs less CPU per request), extended to set TCP_NODELAY and register its
    transport."""
    base: type[Any]
    if http == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class RecordingProtocol(base):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)
            connections.add(self.client, transport)

        def connection_lost(self, exc: Exception | None) -> None:
            connections.remove(self.client)
            super().connection_lost(exc)

    return RecordingProtocol


class _Front:
    """The ASGI layer in front of the application: record, then inject faults."""

    def __init__(
        self, app: ASGIApp, log: RequestLog, faults: FaultInjector, connections: _Connections
    ) -> None:
        self.app = app
        self.log = log
        self.faults = faults
        self.connections = connections
        self.stopping = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body, replay = await _read_body(receive)
        record = _record(scope, body)
        self.log.append(record)
        decision = self.faults.decide(record.method, record.path)
        if decision.latency:
            record.fault = decision.latency_label
            await self._sleep_unless_stopping(decision.latency)
        if decision.fault is not None:
            record.fault = decision.fault.label
            await self._inject(decision.fault, scope, receive, send, record)
            return
        await self.app(scope, replay, _status_recorder(send, record))

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        """Injected latency that ends early when the server stops, so stop() stays prompt."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.05))

    async def _inject(
        self, rule: _Rule, scope: Scope, receive: Receive, send: Send, record: RecordedRequest
    ) -> None:
        if rule.kind == "drop" and self.connections.abort(scope.get("client")):
            await _await_disconnect(receive)
            return
        status = rule.status or 500
        headers = [*rule.headers, (b"content-length", str(len(rule.body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": rule.body, "more_body": False})
        record.status = status


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body; return it and a ``receive`` that replays it once."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return body, replay


async def _await_disconnect(receive: Receive) -> None:
    try:
        async with asyncio.timeout(2.0):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        pass


def _record(scope: Scope, body: bytes) -> RecordedRequest:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return RecordedRequest(
        method=scope["method"],
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=body,
        received_at=time.time(),
    )


def _status_recorder(send: Send, record: RecordedRequest) -> Send:
    async def recording_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            record.status = int(message["status"])
        await send(message)

    return recording_send


class FakeServer:
    """Serve ``app`` on ``host:port`` (port 0: a free one) from a background thread.

    :meth:`start` returns once the server accepts connections (or raises within
    ``start_timeout``); :meth:`stop` closes it within ``stop_timeout``. A stopped server can be
    started again on the same port, which simulates a service restart. Usable as a context
    manager. Every request is recorded (:meth:`requests`) and passes :attr:`faults` first.
    ``http`` picks uvicorn's HTTP/1.1 implementation (:data:`HTTP_IMPLEMENTATIONS`): ``h11`` (the
    default) or ``httptools`` (lighter, for benchmarks).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "fake",
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        http: str = "h11",
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"FakeServer port must be 0..65535; got {port}.")
        if http not in HTTP_IMPLEMENTATIONS:
            raise ConfigError(
                f"FakeServer http must be one of {', '.join(HTTP_IMPLEMENTATIONS)}; got {http!r}."
            )
        self.http = http
        self.app = app
        self.host = host
        self.name = name
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.log = RequestLog()
        self.faults = FaultInjector()
        self._port = port
        self._connections = _Connections()
        self._server: Any = None
        self._front: _Front | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The TCP port; known once the server has started."""
        if self._port == 0:
            raise RuntimeError(f"fake server {self.name!r} has no port yet: call start() first.")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def requests(
        self, path_glob: str | None = None, method: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests matching ``path_glob`` and ``method`` (:meth:`RequestLog.requests`)."""
        return self.log.requests(path_glob, method)

    def clear(self) -> None:
        """Forget every recorded request."""
        self.log.clear()

    def start(self) -> FakeServer:
        """Start serving (no-op if already running); return ``self``."""
        if self.running:
            return self
        import uvicorn

        sock = self._bind()
        self._front = _Front(self.app, self.log, self.faults, self._connections)
        config = uvicorn.Config(
            self._front,
            http=_protocol_class(self._connections, self.http),
            ws="none",
            loop="asyncio",
            lifespan="auto",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
            # Longer than uvicorn's 5 s so pooled client connections rarely race an idle close.
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._serve,
            args=(self._server, sock),
            name=f"fake-{self.name}",
            daemon=True,
        )
        self._thread.start()
        self._wait_started(sock)
        return self

    def stop(self) -> None:
        """Stop serving and close every connection; no-op if not running."""
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        if self._front is not None:
            self._front.stopping.set()
        server.should_exit = True
        thread.join(self.stop_timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(self.stop_timeout)
        self._thread = self._server = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port else self.host
        state = "running" if self.running else "stopped"
        return f"FakeServer({self.name!r}, {where}, {state})"

    def _serve(self, server: Any, sock: socket.socket) -> None:
        # uvicorn calls sys.exit() when the app's startup fails; start() reports it instead.
        with contextlib.suppress(SystemExit):
            server.run(sockets=[sock])

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"fake server {self.name!r} cannot listen on {self.host}:{self._port}: {exc}. "
                "Choose another port, or 0 for a free one."
            ) from exc
        self._port = sock.getsockname()[1]
        return sock

    def _wait_started(self, sock: socket.socket) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if self._thread is None or not self._thread.is_alive():
                sock.close()
                self._thread = self._server = None
                raise RuntimeError(
                    f"fake server {self.name!r} failed to start (see the log of the app's "
                    "startup handlers)."
                )
            if time.monotonic() >= deadline:
                self.stop()
                raise TimeoutError(
                    f"fake server {self.name!r} did not start within {self.start_timeout} s."
                )
            time.sleep(0.005)
