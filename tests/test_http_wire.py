"""qrmi._http_wire, through HttpClient: what httpx did by default, the wire does too."""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from qrmi._http_wire import WireResponse, wire_target
from qrmi.errors import ServiceUnavailableError
from qrmi.http import HttpClient, RetryPolicy
from qrmi.testing import FakeServer

FAST = RetryPolicy(backoff_initial=0.001, backoff_max=0.01, deadline=5.0)
BIG = {"gates": [{"name": f"g{i}", "qubits": [i, i + 1]} for i in range(400)]}


async def big(request: Request) -> Response:
    return JSONResponse(BIG)


async def echo(request: Request) -> Response:
    return JSONResponse(
        {
            "body": (await request.body()).decode("utf-8"),
            "query": request.url.query,
            "content_type": request.headers.get("content-type"),
            "accept_encoding": request.headers.get("accept-encoding"),
            "user_agent": request.headers.get("user-agent"),
            "custom": request.headers.get("x-custom"),
        }
    )


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    app = Starlette(
        routes=[Route("/big", big), Route("/echo", echo, methods=["GET", "POST"])],
        middleware=[Middleware(GZipMiddleware, minimum_size=100)],
    )
    with FakeServer(app, name="wire-test") as running:
        yield running


def test_gzip_bodies_are_decoded(server: FakeServer) -> None:
    client = HttpClient(server.url, service="Wire test", retry=FAST)
    response = client.get("big")
    assert response.headers["content-encoding"] == "gzip"
    assert response.json() == BIG


def test_response_is_a_full_httpx_response(server: FakeServer) -> None:
    client = HttpClient(server.url, service="Wire test", retry=FAST)
    response = client.get("big")
    assert isinstance(response, httpx.Response)
    assert response.status_code == 200 and response.is_success
    assert response.reason_phrase == "OK" and response.http_version == "HTTP/1.1"
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.text) == BIG and json.loads(response.content) == BIG
    assert response.url == httpx.URL(server.url + "/big")
    assert response.request.method == "GET"
    assert response.elapsed.total_seconds() > 0
    response.raise_for_status()


def test_json_body_headers_and_params_are_sent_as_httpx_sends_them(server: FakeServer) -> None:
    client = HttpClient(server.url, service="Wire test", headers={"X-Custom": "1"}, retry=FAST)
    payload = {"name": "é", "values": [1, 2.5, None]}
    answer = client.post("echo?keep=1", json=payload, params={"a": "b c"}).json()
    with httpx.Client() as plain:
        expected = plain.build_request("POST", server.url, json=payload)
    assert answer["body"].encode("utf-8") == expected.read()
    assert answer["content_type"] == "application/json"
    assert answer["query"] == "keep=1&a=b+c"
    assert answer["custom"] == "1"
    assert answer["user_agent"] == f"python-httpx/{httpx.__version__}"
    assert answer["accept_encoding"] == "gzip, deflate"


def test_per_request_headers_override_defaults_whatever_their_case(server: FakeServer) -> None:
    client = HttpClient(server.url, service="Wire test", headers={"X-Custom": "1"}, retry=FAST)
    answer = client.get("echo", headers={"x-custom": "2", "user-agent": "me"}).json()
    assert (answer["custom"], answer["user_agent"]) == ("2", "me")


def test_urls_the_wire_does_not_send_are_recognised() -> None:
    assert wire_target("http://127.0.0.1:8080/v1/jobs?x=1") == (
        ("http", "127.0.0.1", 8080),
        "127.0.0.1:8080",
        "/v1/jobs?x=1",
    )
    assert wire_target("https://example.com") == (("https", "example.com", 443), "example.com", "/")
    assert wire_target("http://user:pw@example.com/") is None
    assert wire_target("http://example.com/a b") is None
    assert wire_target("http://example.com/é") is None


class OneAnswerPerConnection:
    """A raw HTTP server that answers each connection once, says keep-alive, then closes it:
    a server that closes idle connections."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                body = b'{"ok": true}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Connection: keep-alive\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )

    def close(self) -> None:
        self.listener.close()


def test_idle_connections_closed_by_the_server_are_not_reused() -> None:
    server = OneAnswerPerConnection()
    try:
        client = HttpClient(
            f"http://127.0.0.1:{server.port}",
            service="Wire test",
            retry=RetryPolicy(max_attempts=1, deadline=5.0),
        )
        for _ in range(3):
            assert client.get("x").json() == {"ok": True}
            time.sleep(0.05)  # let the server's close reach us: a stale idle connection
        assert server.connections == 3
    finally:
        server.close()


def test_proxy_from_the_environment_is_honoured(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: a proxy that is down
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = HttpClient(
        server.url, service="Wire test", retry=RetryPolicy(max_attempts=1, deadline=5.0)
    )
    with pytest.raises(ServiceUnavailableError, match="network error"):
        client.get("big")


def test_wire_response_decoding_matches_httpx() -> None:
    body = gzip.compress(b'{"a": 1}')
    response = WireResponse(
        200,
        [("Content-Type", "application/json")],
        b'{"a": 1}',
        reason="OK",
        method="GET",
        url="http://x/",
        elapsed=0.001,
    )
    assert (
        response.json()
        == httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=body).json()
    )


class CannedServer:
    """A raw HTTP server that answers every request with the same bytes, then closes."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(self.answer)

    def __enter__(self) -> CannedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'4\r\n{"a"\r\n5;x=y\r\n: 12}\r\n0\r\nTrailer: t\r\n\r\n',
            {"a": 12},
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[1, 2]", [1, 2]),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
            b"X-Folded: a\r\n  b\r\n\r\n{}",
            {},
        ),
    ],
    ids=["chunked", "until-close", "1xx-and-folding"],
)
def test_bodies_framed_every_way_http_allows(answer: bytes, expected: object) -> None:
    with CannedServer(answer) as server:
        client = HttpClient(server.url, service="Wire test", retry=FAST)
        assert client.get("x").json() == expected


@pytest.mark.parametrize(
    "answer",
    [b"", b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"],
    ids=["nothing", "no-status-line", "truncated-body"],
)
def test_broken_answers_are_transport_failures_retried_then_reported(answer: bytes) -> None:
    with CannedServer(answer) as server:
        client = HttpClient(
            server.url, service="Wire test", retry=RetryPolicy(max_attempts=2, deadline=5.0)
        )
        with pytest.raises(ServiceUnavailableError, match="after 2 tries.*RemoteProtocolError"):
            client.get("x")


def test_header_values_cannot_inject_lines(server: FakeServer) -> None:
    client = HttpClient(server.url, service="Wire test", retry=RetryPolicy(max_attempts=1))
    server.clear()
    with pytest.raises(ServiceUnavailableError, match="LocalProtocolError"):
        client.get("echo", headers={"X-Custom": "a\r\nX-Evil: 1"})
    assert server.requests("/echo") == []
    assert wire_target("http://example.com/a\r\nX-Evil: 1") is None


class TlsKeepAliveServer:
    """A raw HTTPS server answering every request on a connection with the same JSON, kept
    alive; counts connections."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(cert), str(key))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(raw,), daemon=True).start()

    def _answer(self, raw: socket.socket) -> None:
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except OSError:  # a client that refused our certificate
            raw.close()
            return
        self.connections += 1
        reader = conn.makefile("rb")
        with conn:
            while True:
                lines = []
                while (line := reader.readline()) not in (b"\r\n", b""):
                    lines.append(line)
                if not lines:
                    return
                body = b'{"tls": true}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_https_is_verified_with_the_trust_httpx_uses_and_kept_alive(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    server = TlsKeepAliveServer(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # httpx's default trust honours it
    try:
        client = HttpClient(server.url, service="Wire test", retry=FAST)
        assert client.get("a").json() == {"tls": True}
        assert client.get("b").json() == {"tls": True}
        assert server.connections == 1
    finally:
        server.close()


def test_https_with_an_untrusted_certificate_is_refused(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    server = TlsKeepAliveServer(cert, key)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    try:
        client = HttpClient(server.url, service="Wire test", retry=RetryPolicy(max_attempts=1))
        with pytest.raises(ServiceUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
            client.get("a")
    finally:
        server.close()
