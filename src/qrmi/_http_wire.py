"""The sending half of :class:`qrmi.http.HttpClient`: HTTP/1.1 over pooled keep-alive sockets,
answering :class:`httpx.Response` objects.

Why not ``httpx.Client.send``: on loopback, where the benchmarks compare us with the Rust
reference, httpx's per-request machinery (request model, httpcore's pool, the pure-Python h11
parser, the response model) costs about 0.55 ms of client CPU per call, urllib3 0.3 ms and the
standard library's ``http.client`` 0.16 ms, most of it parsing headers with the ``email``
package; this module writes a request in one ``sendall`` and reads the answer with a few
``readline`` calls, for about 0.1 ms (``docs/benchmarks.md`` has the side-by-side
measurement). The policy around it (retries, deadlines, tokens, typed errors, redaction) stays
in :mod:`qrmi.http`, unchanged, and so does httpx for everything this module does not do: form
and multipart bodies, custom transports (TLS settings of the gateway, tests) and proxies from
the environment (``HttpClient`` then sends with httpx).

What it does, as httpx does by default: keep-alive connections pooled per origin and shared by
threads (an idle connection the server closed is noticed before reuse and dropped), TCP_NODELAY,
TLS verified with httpx's own default context (certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``),
``gzip``/``deflate`` bodies decoded, one timeout per try for connect, send and read. Failures are
raised as the httpx exceptions (``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError``, ...)
that the retry policy already knows.
"""

from __future__ import annotations

import datetime
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Mapping
from typing import BinaryIO
from urllib.parse import urlsplit

import httpx

__all__ = ["MAX_IDLE_PER_ORIGIN", "Wire", "WireResponse", "wire_target"]

#: Idle keep-alive connections kept per origin (httpx keeps 20 in all by default).
MAX_IDLE_PER_ORIGIN = 32
#: Longest status or header line accepted, and most header lines (as ``http.client``).
MAX_LINE = 65536
MAX_HEADERS = 100

Origin = tuple[str, str, int]


def wire_target(url: str) -> tuple[Origin, str, str] | None:
    """``((scheme, host, port), host header, request target)`` of ``url``, or ``None`` when this
    module should not send it (not plain ASCII, user info, another scheme): httpx does then."""
    if not url.isascii() or not url.isprintable() or " " in url:
        return None
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in ("http", "https") or parts.username is not None or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return (scheme, parts.hostname, port), parts.netloc, target


class WireResponse(httpx.Response):
    """A complete, already read and decoded response, as an :class:`httpx.Response`.

    Built without httpx's response pipeline (the body is in hand); ``headers`` and ``request``
    (and so ``url``) are made on first access only.
    """

    def __init__(
        self,
        status_code: int,
        headers: list[tuple[str, str]],
        content: bytes,
        *,
        reason: str,
        method: str,
        url: str,
        elapsed: float,
    ) -> None:
        self.status_code = status_code
        self._raw_headers = headers
        self._headers: httpx.Headers | None = None
        self._request: httpx.Request | None = None
        self._method = method
        self._url = url
        self.next_request = None
        self.extensions = {"http_version": b"HTTP/1.1", "reason_phrase": reason.encode("latin-1")}
        self.history = []
        self.is_closed = True
        self.is_stream_consumed = True
        self.default_encoding = "utf-8"
        self.stream = httpx.ByteStream(content)
        self._content = content
        self._num_bytes_downloaded = len(content)
        self._elapsed = datetime.timedelta(seconds=elapsed)

    @property
    def headers(self) -> httpx.Headers:
        """The response headers (built on first access)."""
        if self._headers is None:
            self._headers = httpx.Headers(self._raw_headers)
        return self._headers

    @headers.setter
    def headers(self, value: httpx.Headers) -> None:
        self._headers = value

    @property
    def request(self) -> httpx.Request:
        """The request this answers (method and URL; built on first access)."""
        if self._request is None:
            self._request = httpx.Request(self._method, self._url)
        return self._request

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request = value


class _Connection:
    """One keep-alive connection: its socket and a buffered reader on it."""

    __slots__ = ("reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader: BinaryIO = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def still_open(self) -> bool:
        """Whether an idle connection can be reused: nothing to read on it (a server that
        closed it made it readable, at end of file)."""
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False


class Wire:
    """Pooled HTTP/1.1 connections; thread-safe. :meth:`send` sends one request."""

    def __init__(self) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._lock = threading.Lock()
        self._ssl_context: ssl.SSLContext | None = None

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
        target: tuple[Origin, str, str] | None = None,
    ) -> WireResponse:
        """Send one request to ``url`` and read the answer. ``target`` is
        :func:`wire_target` of ``url`` when the caller has it already.

        Raises:
            httpx.TransportError: the subclass httpx would raise for the same failure.
        """
        found = target or wire_target(url)
        if found is None:
            raise httpx.UnsupportedProtocol(f"the wire cannot send to this URL ({method})")
        origin, host_header, path = found
        started = time.perf_counter()
        head = _request_head(method, path, host_header, headers, body)
        connection = self._connection(origin, timeout)
        try:
            _write(connection, head + body if body else head)
            status, reason, response_headers, keep_alive = _read_head(connection.reader)
            content, keep_alive = _read_body(
                connection.reader, method, status, response_headers, keep_alive
            )
        except BaseException:
            connection.close()
            raise
        if keep_alive:
            self._release(origin, connection)
        else:
            connection.close()
        return WireResponse(
            status,
            response_headers,
            _decoded(content, _header(response_headers, "content-encoding")),
            reason=reason,
            method=method,
            url=url,
            elapsed=time.perf_counter() - started,
        )

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    # -- connections -------------------------------------------------------------------------

    def _connection(self, origin: Origin, timeout: float) -> _Connection:
        while True:
            with self._lock:
                pool = self._idle.get(origin)
                connection = pool.pop() if pool else None
            if connection is None:
                return self._connect(origin, timeout)
            if connection.still_open():
                connection.sock.settimeout(timeout)
                return connection
            connection.close()  # the server closed it while idle: take another

    def _connect(self, origin: Origin, timeout: float) -> _Connection:
        scheme, host, port = origin
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from exc
        except OSError as exc:  # refused, unreachable, DNS
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._tls().wrap_socket(sock, server_hostname=host)
        except TimeoutError as exc:
            sock.close()
            raise httpx.ConnectTimeout(f"timed out in the TLS handshake with {host}") from exc
        except OSError as exc:  # TLS handshake or certificate
            sock.close()
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return _Connection(sock)

    def _tls(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl_context is None:
                # httpx's default: certifi, or SSL_CERT_FILE / SSL_CERT_DIR from the environment.
                self._ssl_context = httpx.create_ssl_context(trust_env=True)
            return self._ssl_context

    def _release(self, origin: Origin, connection: _Connection) -> None:
        with self._lock:
            pool = self._idle.setdefault(origin, [])
            if len(pool) < MAX_IDLE_PER_ORIGIN:
                pool.append(connection)
                return
        connection.close()


# -- the protocol ----------------------------------------------------------------------------


def _request_head(
    method: str, path: str, host: str, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if not name.isprintable() or ":" in name or not value.isprintable():
            raise httpx.LocalProtocolError(
                f"header {name!r}: names and values may not hold line breaks or other control "
                "characters"
            )
        lines.append(f"{name}: {value}")
    if body is not None and not any(name.lower() == "content-length" for name in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _write(connection: _Connection, data: bytes) -> None:
    try:
        connection.sock.sendall(data)
    except TimeoutError as exc:
        raise httpx.WriteTimeout("timed out sending the request") from exc
    except OSError as exc:
        raise httpx.WriteError(f"{type(exc).__name__}: {exc}") from exc


def _readline(reader: BinaryIO) -> bytes:
    try:
        line = reader.readline(MAX_LINE + 1)
    except TimeoutError as exc:
        raise httpx.ReadTimeout("timed out waiting for the response") from exc
    except OSError as exc:
        raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc
    if len(line) > MAX_LINE:
        raise httpx.RemoteProtocolError("the server sent a line longer than 64 KiB")
    return line


def _read_exactly(reader: BinaryIO, size: int) -> bytes:
    try:
        data = reader.read(size)
    except TimeoutError as exc:
        raise httpx.ReadTimeout("timed out reading the response body") from exc
    except OSError as exc:
        raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc
    if len(data) != size:
        raise httpx.RemoteProtocolError(
            f"the server closed the connection after {len(data)} of {size} body bytes"
        )
    return data


def _read_head(reader: BinaryIO) -> tuple[int, str, list[tuple[str, str]], bool]:
    """Status, reason, headers and whether the connection stays open (1xx answers skipped)."""
    while True:
        line = _readline(reader)
        if not line:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise httpx.RemoteProtocolError(f"malformed status line {line[:80]!r}")
        headers = _read_headers(reader)
        status = int(code)
        if status >= 200 or status == 101:
            break
    connection = (_header(headers, "connection") or "").lower()
    # HTTP/1.0 closes unless asked to keep alive; HTTP/1.1 keeps alive unless asked to close.
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    return status, reason, headers, keep_alive


def _read_headers(reader: BinaryIO) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    while True:
        line = _readline(reader)
        if line in (b"\r\n", b"\n", b""):
            return headers
        if len(headers) >= MAX_HEADERS:
            raise httpx.RemoteProtocolError(f"the server sent more than {MAX_HEADERS} headers")
        text = line.decode("latin-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and headers:  # obsolete line folding
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {text.strip()}")
            continue
        name, colon, value = text.partition(":")
        if not colon or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip()))


def _read_body(
    reader: BinaryIO,
    method: str,
    status: int,
    headers: list[tuple[str, str]],
    keep_alive: bool,
) -> tuple[bytes, bool]:
    """The body and whether the connection can be reused after it."""
    if method == "HEAD" or status in (204, 304) or status < 200:
        return b"", keep_alive
    encoding = (_header(headers, "transfer-encoding") or "").lower()
    if "chunked" in encoding:
        return _read_chunked(reader), keep_alive
    length = _header(headers, "content-length")
    if length is not None:
        try:
            size = int(length.split(",")[0])
        except ValueError:
            raise httpx.RemoteProtocolError(f"bad Content-Length {length!r}") from None
        if size < 0:
            raise httpx.RemoteProtocolError(f"bad Content-Length {length!r}")
        return _read_exactly(reader, size), keep_alive
    try:  # no length: the body ends when the server closes the connection
        return reader.read(), False
    except TimeoutError as exc:
        raise httpx.ReadTimeout("timed out reading the response body") from exc
    except OSError as exc:
        raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc


def _read_chunked(reader: BinaryIO) -> bytes:
    parts: list[bytes] = []
    while True:
        line = _readline(reader)
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise httpx.RemoteProtocolError(f"bad chunk size line {line[:40]!r}") from None
        if size == 0:
            _read_headers(reader)  # trailers, ignored
            return b"".join(parts)
        parts.append(_read_exactly(reader, size))
        if _readline(reader) not in (b"\r\n", b"\n"):
            raise httpx.RemoteProtocolError("a chunk is not followed by a line break")


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first value of header ``name`` (lower case)."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _decoded(body: bytes, encoding: str | None) -> bytes:
    """The body without its ``Content-Encoding`` (we ask only for gzip and deflate)."""
    if not encoding or not body:
        return body
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    try:
        for coding in reversed(codings):
            if coding in ("gzip", "x-gzip"):
                body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
            elif coding == "deflate":
                try:
                    body = zlib.decompress(body)
                except zlib.error:
                    body = zlib.decompress(body, -zlib.MAX_WBITS)
            elif coding != "identity":
                raise httpx.DecodingError(f"unsupported Content-Encoding {coding!r}")
    except zlib.error as exc:
        raise httpx.DecodingError(f"cannot decode the {encoding} body: {exc}") from exc
    return body
