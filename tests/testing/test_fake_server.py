"""qrmi.testing.server: FakeServer, request recording and fault injection, over real sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from example_fake import EXAMPLE_API_KEY, ExampleFake
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qrmi.errors import ConfigError, InvalidInputError
from qrmi.testing import FakeServer, FaultInjector, RecordedRequest


async def echo(request: Request) -> Response:
    return Response(await request.body(), status_code=200)


ECHO_APP = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST", "PUT"])])


@pytest.fixture(scope="module")
def module_server() -> Iterator[FakeServer]:
    with FakeServer(ECHO_APP, name="echo") as running:
        yield running


@pytest.fixture
def server(module_server: FakeServer) -> FakeServer:
    module_server.faults.reset()
    module_server.clear()
    return module_server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as http:
        yield http


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- lifecycle -------------------------------------------------------------------------------


def test_serves_on_loopback_with_an_ephemeral_port(
    server: FakeServer, client: httpx.Client
) -> None:
    assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith("/")
    assert server.port > 0 and server.running
    assert client.post(f"{server.url}/hello", content=b"hi").content == b"hi"


def test_port_is_unknown_before_start() -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = FakeServer(ECHO_APP).url


def test_stop_closes_the_port_and_start_reopens_it(client: httpx.Client) -> None:
    fake = FakeServer(ECHO_APP, port=free_port(), name="restartable")
    fake.start()
    url = fake.url
    client.get(f"{url}/one")
    fake.stop()
    assert not fake.running
    with pytest.raises(httpx.ConnectError):
        client.get(f"{url}/down")
    fake.start()
    try:
        assert fake.url == url
        assert client.get(f"{url}/two").status_code == 200
        assert [r.path for r in fake.requests()] == ["/one", "/two"]
    finally:
        fake.stop()
    fake.stop()  # idempotent


def test_a_port_in_use_is_a_config_error() -> None:
    with FakeServer(ECHO_APP) as first, pytest.raises(ConfigError, match="cannot listen"):
        FakeServer(ECHO_APP, port=first.port).start()


def test_failing_app_startup_is_reported() -> None:
    async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(RuntimeError, match="failed to start"):
        FakeServer(app, name="broken").start()


def test_stop_is_prompt_while_a_delayed_request_is_pending(client: httpx.Client) -> None:
    fake = FakeServer(ECHO_APP).start()
    fake.faults.latency(60.0)
    errors: list[BaseException] = []

    def slow_call() -> None:
        try:
            client.get(f"{fake.url}/slow")
        except httpx.HTTPError as exc:
            errors.append(exc)

    caller = threading.Thread(target=slow_call)
    caller.start()
    while not fake.requests("/slow"):
        threading.Event().wait(0.01)
    fake.stop()
    caller.join(10)
    assert not fake.running and not caller.is_alive()


def test_a_fastapi_vendor_fake_works_end_to_end(client: httpx.Client) -> None:
    with ExampleFake() as fake:
        token = client.post(f"{fake.url}/auth/token", json={"api_key": EXAMPLE_API_KEY}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        put = client.put(f"{fake.url}/api/items/a", json={"x": 1}, headers=headers)
        assert put.status_code == 201
        assert client.get(f"{fake.url}/api/items/a", headers=headers).json()["value"] == {"x": 1}
        fake.issuer.expire_all()
        assert client.get(f"{fake.url}/api/items/a", headers=headers).status_code == 401
        assert fake.issuer.issued_count == 1


def test_connections_have_tcp_nodelay(server: FakeServer, client: httpx.Client) -> None:
    client.get(f"{server.url}/x")
    transports = list(server._connections._by_peer.values())
    assert transports
    for transport in transports:
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


# -- recording -------------------------------------------------------------------------------


def test_requests_are_recorded_with_query_headers_and_body(
    server: FakeServer, client: httpx.Client
) -> None:
    client.post(
        f"{server.url}/v1/jobs?limit=5&pending=true",
        json={"a": 1},
        headers={"Authorization": "Bearer tok-secret", "Service-CRN": "crn:x"},
    )
    (recorded,) = server.requests()
    assert (recorded.method, recorded.path, recorded.query) == (
        "POST",
        "/v1/jobs",
        "limit=5&pending=true",
    )
    assert recorded.params == {"limit": "5", "pending": "true"}
    assert recorded.json() == {"a": 1}
    assert recorded.headers["authorization"] == "Bearer tok-secret"
    assert recorded.sensitive == {"authorization"}
    assert recorded.safe_headers()["authorization"] == "***"
    assert recorded.safe_headers()["service-crn"] == "crn:x"
    assert "tok-secret" not in repr(recorded)
    assert recorded.status == 200 and recorded.fault is None


def test_requests_filter_by_glob_and_method_and_clear(
    server: FakeServer, client: httpx.Client
) -> None:
    client.get(f"{server.url}/v1/jobs/1")
    client.post(f"{server.url}/v1/jobs")
    client.get(f"{server.url}/v1/backends")
    assert [r.path for r in server.requests("/v1/jobs*")] == ["/v1/jobs/1", "/v1/jobs"]
    assert [r.path for r in server.requests(method="post")] == ["/v1/jobs"]
    assert [r.path for r in server.requests("/v1/jobs/*", method="GET")] == ["/v1/jobs/1"]
    server.clear()
    assert server.requests() == [] and len(server.log) == 0


def test_binary_bodies_are_kept_as_bytes(server: FakeServer, client: httpx.Client) -> None:
    client.put(f"{server.url}/blob", content=b"\xff\x00\xfe")
    (recorded,) = server.requests()
    assert recorded.body == b"\xff\x00\xfe"
    assert recorded.text == "\ufffd\x00\ufffd"


def test_concurrent_requests_are_all_recorded(server: FakeServer) -> None:
    def worker(n: int) -> None:
        with httpx.Client(timeout=5.0) as own:
            for i in range(5):
                own.get(f"{server.url}/w{n}/{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(server.requests("/w*")) == 40


# -- faults ----------------------------------------------------------------------------------


def test_fail_answers_n_matching_requests_then_passes_through(
    server: FakeServer, client: httpx.Client
) -> None:
    server.faults.fail(503, times=2, path="/v1/jobs*", method="POST")
    assert client.get(f"{server.url}/v1/jobs").status_code == 200
    assert client.post(f"{server.url}/v1/other").status_code == 200
    first = client.post(f"{server.url}/v1/jobs")
    assert first.status_code == 503
    assert first.json() == {"message": "injected fault: HTTP 503"}
    assert client.post(f"{server.url}/v1/jobs").status_code == 503
    assert client.post(f"{server.url}/v1/jobs").status_code == 200
    assert [r.fault for r in server.requests("/v1/jobs", method="POST")] == [
        "fail 503",
        "fail 503",
        None,
    ]
    assert server.faults.armed == 0


@pytest.mark.parametrize(
    ("body", "content_type", "raw"),
    [
        ({"errors": [{"message": "m"}]}, "application/json", b'{"errors": [{"message": "m"}]}'),
        ("plain words", "text/plain; charset=utf-8", b"plain words"),
        (b"\x01\x02", "application/octet-stream", b"\x01\x02"),
    ],
)
def test_fail_sends_the_given_body(
    server: FakeServer, client: httpx.Client, body: object, content_type: str, raw: bytes
) -> None:
    server.faults.fail(500, body=body, headers={"X-Trace": "t1"})  # type: ignore[arg-type]
    response = client.get(f"{server.url}/x")
    assert (response.status_code, response.content) == (500, raw)
    assert response.headers["content-type"] == content_type
    assert response.headers["x-trace"] == "t1"


def test_throttle_sends_retry_after_until_reset(server: FakeServer, client: httpx.Client) -> None:
    server.faults.throttle(423, retry_after=2)
    for _ in range(3):
        response = client.get(f"{server.url}/lanes")
        assert (response.status_code, response.headers["retry-after"]) == (423, "2")
    server.faults.reset()
    assert client.get(f"{server.url}/lanes").status_code == 200


def test_throttle_for_a_number_of_requests(server: FakeServer, client: httpx.Client) -> None:
    server.faults.throttle(429, times=1, retry_after=0.5)
    response = client.get(f"{server.url}/x")
    assert (response.status_code, response.headers["retry-after"]) == (429, "0.5")
    assert client.get(f"{server.url}/x").status_code == 200


def test_throttle_for_a_number_of_seconds_uses_the_injector_clock() -> None:
    now = [0.0]
    faults = FaultInjector(clock=lambda: now[0])
    faults.throttle(429, seconds=10)
    assert faults.decide("GET", "/x").fault is not None
    now[0] = 9.9
    assert faults.decide("GET", "/x").fault is not None
    now[0] = 10.0
    assert faults.decide("GET", "/x").fault is None
    assert faults.armed == 0


def test_latency_delays_the_answer(server: FakeServer) -> None:
    server.faults.latency(2.0, path="/slow")
    with httpx.Client(timeout=0.1) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.get(f"{server.url}/slow")
    with httpx.Client(timeout=5.0) as patient:
        assert patient.get(f"{server.url}/fast").status_code == 200
    assert [r.fault for r in server.requests()] == ["latency 2s", None]


def test_latency_then_fault_both_apply() -> None:
    faults = FaultInjector()
    faults.latency(0.5, times=1)
    faults.fail(502, times=1)
    decision = faults.decide("GET", "/a")
    assert decision.latency == 0.5 and decision.fault is not None
    second = faults.decide("GET", "/a")
    assert second.latency == 0 and second.fault is None


def test_dropped_connection_gets_no_response(server: FakeServer, client: httpx.Client) -> None:
    server.faults.drop_connections(times=1, path="/v1/jobs")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(f"{server.url}/v1/jobs", json={})
    assert client.post(f"{server.url}/v1/jobs", json={}).status_code == 200
    dropped, answered = server.requests("/v1/jobs")
    assert (dropped.fault, dropped.status) == ("drop", None)
    assert (answered.fault, answered.status) == (None, 200)


def test_dropped_connection_is_closed_at_the_tcp_level(server: FakeServer) -> None:
    server.faults.drop_connections(times=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        raw.sendall(b"GET /raw HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            received = raw.recv(1024)
        except ConnectionResetError:
            received = b""
    assert received == b""


def test_fault_arguments_are_checked() -> None:
    faults = FaultInjector()
    with pytest.raises(InvalidInputError, match="HTTP status"):
        faults.fail(99)
    with pytest.raises(InvalidInputError, match="times"):
        faults.fail(503, times=0)
    with pytest.raises(InvalidInputError, match="seconds"):
        faults.throttle(seconds=-1)
    with pytest.raises(InvalidInputError, match="latency"):
        faults.latency(-1)


def test_recorded_request_repr_masks_every_credential_header() -> None:
    record = RecordedRequest(
        "GET", "/x", "", {"x-api-key": "k", "cookie": "c", "accept": "a"}, b"", 0.0
    )
    assert record.safe_headers() == {"x-api-key": "***", "cookie": "***", "accept": "a"}
    assert "'k'" not in repr(record)
