"""qrmi.http against a real local server (qrmi.testing.FakeServer) with injected faults."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from qrmi.errors import (
    AuthenticationFailedError,
    ConfigError,
    InvalidInputError,
    ResourceNotFoundError,
    ServiceError,
    ServiceUnavailableError,
    TaskNotFoundError,
)
from qrmi.http import (
    CachedToken,
    HttpClient,
    RetryPolicy,
    StaticToken,
    TokenProvider,
    default_error_message,
)
from qrmi.testing import FakeServer, TokenIssuer

API_KEY = "good-api-key-123"
FAST = RetryPolicy(backoff_initial=0.001, backoff_max=0.01, deadline=10.0)


class FakeTime:
    """An injected clock whose sleeps advance it instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def build_app(issuer: TokenIssuer) -> Starlette:
    """A tiny vendor API: an IAM-like token endpoint, public items and a protected resource."""

    async def token(request: Request) -> Response:
        form = parse_qs((await request.body()).decode())
        if form.get("apikey") != [API_KEY]:
            return JSONResponse(
                {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found"},
                status_code=400,
            )
        issued = issuer.issue("user")
        return JSONResponse({"access_token": issued.token, "expires_in": issued.expires_in})

    async def item(request: Request) -> Response:
        item_id = request.path_params["item_id"]
        if item_id == "missing":
            return JSONResponse(
                {"errors": [{"code": "1216", "message": f"Item {item_id} not found."}]},
                status_code=404,
            )
        return JSONResponse({"id": item_id})

    async def secure(request: Request) -> Response:
        if issuer.validate_header(request.headers.get("authorization")) is None:
            return JSONResponse({"errors": [{"message": "Unauthorized"}]}, status_code=401)
        return JSONResponse({"secret": "data"})

    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    return Starlette(
        routes=[
            Route("/identity/token", token, methods=["POST"]),
            Route("/api/v1/items/{item_id}", item),
            Route("/api/v1/secure", secure),
            Route("/api/v1/echo", echo, methods=["POST", "PUT", "PATCH"]),
            Route("/api/v1/empty", lambda r: Response(status_code=204), methods=["POST"]),
        ]
    )


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(lifetime=3600)


@pytest.fixture(scope="module")
def module_server(issuer: TokenIssuer) -> Iterator[FakeServer]:
    with FakeServer(build_app(issuer), name="http-test") as running:
        yield running


@pytest.fixture
def server(module_server: FakeServer, issuer: TokenIssuer) -> FakeServer:
    module_server.faults.reset()
    module_server.clear()
    issuer.expire_all()
    return module_server


def iam_fetch(server: FakeServer, api_key: str = API_KEY) -> CachedToken:
    iam = HttpClient(server.url, service="Test IAM", retry=FAST)

    def fetch() -> tuple[str, float]:
        body = iam.post(
            "/identity/token", data={"grant_type": "apikey", "apikey": api_key}, authenticated=False
        ).json()
        return body["access_token"], float(body["expires_in"])

    return CachedToken(fetch, name="Test IAM")


def api(server: FakeServer, **kwargs: object) -> HttpClient:
    options: dict[str, object] = {"service": "Test API", "retry": FAST}
    options.update(kwargs)
    return HttpClient(server.url + "/api/v1", **options)  # type: ignore[arg-type]


# -- happy path and URL handling -------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/"])
@pytest.mark.parametrize("path", ["items/a1", "/items/a1"])
def test_paths_join_under_the_base_url_prefix(server: FakeServer, suffix: str, path: str) -> None:
    with HttpClient(server.url + "/api/v1" + suffix, service="Test API") as client:
        assert client.get(path).json() == {"id": "a1"}
    assert [r.path for r in server.requests()] == ["/api/v1/items/a1"]


def test_absolute_url_is_used_as_is_without_credentials(server: FakeServer) -> None:
    client = api(server, auth=StaticToken("static-token-xyz"))
    response = client.put(
        f"{server.url}/api/v1/echo?X-Amz-Signature=abc", content=b"payload", authenticated=False
    )
    assert response.content == b"payload"
    (recorded,) = server.requests("/api/v1/echo")
    assert "authorization" not in recorded.headers
    assert recorded.params == {"X-Amz-Signature": "abc"}


def test_default_and_per_request_headers_are_sent(server: FakeServer) -> None:
    client = api(server, headers={"Service-CRN": "crn:1"}, auth=StaticToken("tok-1"))
    client.get("items/a", headers={"X-Extra": "yes"})
    (recorded,) = server.requests()
    assert recorded.headers["service-crn"] == "crn:1"
    assert recorded.headers["x-extra"] == "yes"
    assert recorded.headers["authorization"] == "Bearer tok-1"


def test_expected_status_is_returned_and_others_are_errors(server: FakeServer) -> None:
    client = api(server)
    assert client.post("empty", expected=(204,)).status_code == 204
    with pytest.raises(ServiceError, match="HTTP 200") as caught:
        client.get("items/a", expected=(204,))
    assert caught.value.status_code == 200


def test_one_client_is_shared_by_many_threads(server: FakeServer) -> None:
    client = api(server)
    results: list[str] = []

    def worker(n: int) -> None:
        results.append(client.get(f"items/t{n}").json()["id"])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == sorted(f"t{n}" for n in range(16))


# -- transient failures ----------------------------------------------------------------------


def test_burst_of_503_is_survived_and_the_body_is_resent(server: FakeServer) -> None:
    server.faults.fail(503, times=3, path="/api/v1/echo")
    response = api(server).post("echo", json={"job": 1})
    assert response.json() == {"job": 1}
    attempts = server.requests("/api/v1/echo")
    assert [r.status for r in attempts] == [503, 503, 503, 200]
    assert {r.body for r in attempts} == {b'{"job":1}'}


def test_multipart_upload_is_resent_intact_after_a_failure(server: FakeServer) -> None:
    server.faults.fail(502, times=1)
    api(server).post("echo", files={"file": ("a.txt", b"hello-bytes")})
    first, second = server.requests("/api/v1/echo")
    assert first.body == second.body and b"hello-bytes" in second.body


def test_persistent_503_gives_up_after_max_attempts(server: FakeServer) -> None:
    server.faults.fail(503, times=None, body={"errors": [{"message": "maintenance", "code": "9"}]})
    policy = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.01)
    with pytest.raises(ServiceUnavailableError) as caught:
        api(server, retry=policy).get("items/a")
    message = str(caught.value)
    assert "Test API GET" in message and "/api/v1/items/a" in message
    assert "HTTP 503" in message and "maintenance (code 9)" in message
    assert "3 tries" in message
    assert caught.value.status_code == 503
    assert len(server.requests()) == 3


def test_persistent_503_stops_at_the_deadline_without_sleeping_past_it(
    server: FakeServer,
) -> None:
    server.faults.fail(503, times=None)
    fake = FakeTime()
    policy = RetryPolicy(max_attempts=1000, backoff_initial=0.5, backoff_max=2.0, deadline=5.0)
    client = api(server, retry=policy, clock=fake.clock, sleep=fake.sleep, rng=lambda: 1.0)
    with pytest.raises(ServiceUnavailableError, match="retry later"):
        client.get("items/a")
    assert sum(fake.sleeps) <= 5.0
    assert fake.sleeps[:3] == [0.5, 1.0, 2.0]
    assert len(server.requests()) == len(fake.sleeps) + 1


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(backoff_initial=0.25, backoff_max=8.0)
    assert [policy.backoff(n, lambda: 1.0) for n in range(1, 8)] == [
        0.25,
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        8.0,
    ]
    assert policy.backoff(3, lambda: 0.5) == 0.5
    assert policy.backoff(3, lambda: 0.0) == 0.0
    assert policy.backoff(100_000, lambda: 1.0) == 8.0


def test_throttle_delay_without_retry_after_keeps_half_the_backoff() -> None:
    policy = RetryPolicy(backoff_initial=1.0, backoff_max=8.0)
    assert policy.throttle_delay(3, None, lambda: 0.0) == 2.0
    assert policy.throttle_delay(3, None, lambda: 1.0) == 4.0
    assert policy.throttle_delay(1, 0.0, lambda: 0.0) == 1.0
    assert policy.throttle_delay(1, 20.0, lambda: 0.0) == 8.0


def test_dropped_connections_are_retried(server: FakeServer) -> None:
    server.faults.drop_connections(times=2, path="/api/v1/items/*")
    assert api(server).get("items/d").json() == {"id": "d"}
    assert [r.fault for r in server.requests()] == ["drop", "drop", None]


def test_unreachable_service_names_the_network_problem() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = RetryPolicy(max_attempts=2, backoff_initial=0.001, backoff_max=0.001)
    client = HttpClient(f"http://127.0.0.1:{port}", service="Nowhere", retry=policy)
    with pytest.raises(ServiceUnavailableError, match="network error ConnectError") as caught:
        client.get("/x")
    assert "check the endpoint URL" in str(caught.value)
    assert caught.value.status_code is None


def test_slow_answers_time_out_per_try(server: FakeServer) -> None:
    server.faults.latency(2.0, path="/api/v1/items/*", times=2)
    policy = RetryPolicy(max_attempts=1, backoff_initial=0.001, backoff_max=0.001)
    with pytest.raises(ServiceUnavailableError, match="no answer within 0.2 s"):
        api(server, retry=policy, timeout=0.2).get("items/slow")


# -- throttling ------------------------------------------------------------------------------


def test_429_honours_retry_after(server: FakeServer) -> None:
    server.faults.throttle(429, times=2, retry_after=3)
    fake = FakeTime()
    client = api(server, retry=RetryPolicy(), clock=fake.clock, sleep=fake.sleep)
    assert client.get("items/a").status_code == 200
    assert fake.sleeps == [3.0, 3.0]


def test_retry_after_is_capped_by_backoff_max(server: FakeServer) -> None:
    server.faults.throttle(429, times=1, retry_after=600)
    fake = FakeTime()
    client = api(server, retry=RetryPolicy(backoff_max=8.0), clock=fake.clock, sleep=fake.sleep)
    client.get("items/a")
    assert fake.sleeps == [8.0]


def test_retry_after_as_http_date_is_understood(server: FakeServer) -> None:
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3600))
    server.faults.fail(429, times=1, headers={"Retry-After": when})
    fake = FakeTime()
    client = api(server, retry=RetryPolicy(backoff_max=5.0), clock=fake.clock, sleep=fake.sleep)
    client.get("items/a")
    assert fake.sleeps == [5.0]


def test_throttling_outlasts_max_attempts_until_the_deadline(server: FakeServer) -> None:
    server.faults.throttle(429, times=10, retry_after=1)
    fake = FakeTime()
    policy = RetryPolicy(max_attempts=2, deadline=60.0)
    client = api(server, retry=policy, clock=fake.clock, sleep=fake.sleep)
    assert client.get("items/a").status_code == 200
    assert len(fake.sleeps) == 10


def test_permanent_423_fails_clearly_within_a_short_deadline(server: FakeServer) -> None:
    server.faults.throttle(423, retry_after=1, body={"message": "backend is reserved"})
    fake = FakeTime()
    client = api(server, clock=fake.clock, sleep=fake.sleep)
    with pytest.raises(ServiceUnavailableError) as caught:
        client.get("items/a", deadline=4.0)
    message = str(caught.value)
    assert "HTTP 423" in message and "backend is reserved" in message
    assert "wait for the reservation to end or raise the job time limit" in message
    assert caught.value.status_code == 423
    assert sum(fake.sleeps) <= 4.0


def test_throttling_without_deadline_is_still_bounded(server: FakeServer) -> None:
    server.faults.throttle(429, retry_after=0)
    fake = FakeTime()
    policy = RetryPolicy(max_attempts=3, deadline=None)
    with pytest.raises(ServiceUnavailableError, match="rate-limiting"):
        api(server, retry=policy, clock=fake.clock, sleep=fake.sleep).get("items/a")
    assert len(server.requests()) == 3


# -- authentication --------------------------------------------------------------------------


def test_expired_token_is_refreshed_once_and_the_call_succeeds(
    server: FakeServer, issuer: TokenIssuer
) -> None:
    client = api(server, auth=iam_fetch(server))
    assert client.get("secure").json() == {"secret": "data"}
    issued_before = issuer.issued_count
    issuer.expire_all()
    assert client.get("secure").json() == {"secret": "data"}
    assert issuer.issued_count == issued_before + 1
    assert [r.status for r in server.requests("/api/v1/secure")] == [200, 401, 200]


def test_token_refused_twice_is_an_authentication_failure(server: FakeServer) -> None:
    client = api(server, auth=CachedToken(lambda: ("never-valid-token", 3600.0)))
    with pytest.raises(AuthenticationFailedError) as caught:
        client.get("secure")
    assert "Check the API key / credentials for Test API" in str(caught.value)
    assert len(server.requests("/api/v1/secure")) == 2


def test_static_token_refused_is_an_authentication_failure(server: FakeServer) -> None:
    with pytest.raises(AuthenticationFailedError, match="Unauthorized"):
        api(server, auth=StaticToken("wrong")).get("secure")


def test_401_without_credentials_says_none_are_configured(server: FakeServer) -> None:
    with pytest.raises(AuthenticationFailedError, match="none are configured"):
        api(server).get("secure")
    assert len(server.requests()) == 1


def test_token_fetch_failure_is_an_authentication_failure(server: FakeServer) -> None:
    client = api(server, auth=iam_fetch(server, api_key="bad-key"))
    with pytest.raises(AuthenticationFailedError) as caught:
        client.get("secure")
    assert "Provided API key could not be found (code BXNIM0415E)" in str(caught.value)
    assert "bad-key" not in str(caught.value)
    assert not server.requests("/api/v1/secure")


def test_any_provider_failure_is_an_authentication_failure(server: FakeServer) -> None:
    class Broken:
        def token(self) -> str:
            raise OSError("keyring locked")

        def invalidate(self) -> None:
            pass

    assert isinstance(Broken(), TokenProvider)
    with pytest.raises(AuthenticationFailedError, match="keyring locked"):
        api(server, auth=Broken()).get("secure")


def test_custom_auth_header_and_scheme(server: FakeServer) -> None:
    api(server, auth=StaticToken("k1"), auth_header="X-Api-Key", auth_scheme="").get("items/a")
    (recorded,) = server.requests()
    assert recorded.headers["x-api-key"] == "k1"


# -- error mapping ---------------------------------------------------------------------------


def test_404_maps_to_resource_not_found_with_the_vendor_text(server: FakeServer) -> None:
    with pytest.raises(ResourceNotFoundError, match=r"Item missing not found\. \(code 1216\)"):
        api(server).get("items/missing")


def test_404_maps_to_the_class_the_caller_names(server: FakeServer) -> None:
    with pytest.raises(TaskNotFoundError, match="/api/v1/items/missing"):
        api(server).get("items/missing", not_found=TaskNotFoundError)


@pytest.mark.parametrize(
    ("body", "expected_text"),
    [
        ({"errors": [{"message": "Bad pubs", "code": "1234"}]}, "Bad pubs (code 1234)"),
        ({"errorCode": "BXN1", "errorMessage": "Key expired"}, "Key expired (code BXN1)"),
        ({"detail": "Device FOO unknown"}, "Device FOO unknown"),
        (
            {"detail": [{"loc": ["body", "runs"], "msg": "field required", "type": "missing"}]},
            "body.runs: field required",
        ),
        ({"message": "sequence is invalid", "code": 400}, "sequence is invalid (code 400)"),
        ({"error": "bad_target"}, "bad_target"),
        ({"error": {"message": "nested message"}}, "nested message"),
        ("plain text failure", "plain text failure"),
    ],
)
@pytest.mark.parametrize("status", [400, 409, 422])
def test_vendor_error_bodies_appear_in_invalid_input_messages(
    server: FakeServer, body: object, expected_text: str, status: int
) -> None:
    server.faults.fail(status, body=body)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError) as caught:
        api(server).post("echo", json={})
    assert expected_text in str(caught.value)
    assert f"HTTP {status}" in str(caught.value)


def test_long_plain_text_bodies_are_truncated(server: FakeServer) -> None:
    server.faults.fail(400, body="x" * 5000)
    with pytest.raises(InvalidInputError) as caught:
        api(server).get("items/a")
    assert "x" * 300 + "..." in str(caught.value)
    assert "x" * 301 not in str(caught.value)


def test_other_4xx_is_a_service_error_with_its_status(server: FakeServer) -> None:
    server.faults.fail(403, body={"errors": [{"message": "no access to instance"}]})
    with pytest.raises(ServiceError, match="no access to instance") as caught:
        api(server).get("items/a")
    assert caught.value.status_code == 403
    assert not isinstance(caught.value, ServiceUnavailableError)
    assert len(server.requests()) == 1


def test_custom_error_extractor_is_used(server: FakeServer) -> None:
    server.faults.fail(400, body={"weird": {"why": "custom reason"}})
    client = api(server, error_message=lambda r: r.json()["weird"]["why"])
    with pytest.raises(InvalidInputError, match="custom reason"):
        client.get("items/a")


def test_empty_error_body_still_names_the_status() -> None:
    response = httpx.Response(400, content=b"")
    assert default_error_message(response) is None


# -- secrets stay out of messages and logs ---------------------------------------------------


def test_no_token_or_signature_in_messages_or_logs(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="qrmi.http")
    presigned = f"{server.url}/api/v1/echo?X-Amz-Signature=SIGSECRET99&X-Amz-Credential=AKIA77"
    server.faults.fail(503, times=None, path="/api/v1/echo")
    policy = RetryPolicy(max_attempts=2, backoff_initial=0.001, backoff_max=0.001)
    client = api(server, retry=policy, auth=StaticToken("TOKENSECRET42"))
    messages = []
    with pytest.raises(ServiceUnavailableError) as unavailable:
        client.put(presigned, content=b"x", authenticated=False)
    messages.append(str(unavailable.value))
    with pytest.raises(AuthenticationFailedError) as refused:
        client.get("secure")
    messages.append(str(refused.value))
    client.get("items/a?apikey=QUERYSECRET")
    messages += [record.getMessage() for record in caplog.records]
    assert any("retrying" in m for m in messages) and any("-> 200" in m for m in messages)
    for secret in ("SIGSECRET99", "AKIA77", "TOKENSECRET42", "QUERYSECRET"):
        assert not [m for m in messages if secret in m], secret


# -- CachedToken -----------------------------------------------------------------------------


def test_cached_token_is_reused_then_refreshed_at_ninety_percent_of_its_life() -> None:
    fake = FakeTime()
    fetched: list[str] = []

    def fetch() -> tuple[str, float]:
        fetched.append(f"t{len(fetched)}")
        return fetched[-1], 100.0

    provider = CachedToken(fetch, clock=fake.clock)
    assert provider.token() == "t0"
    fake.now += 89.9
    assert provider.token() == "t0"
    fake.now += 0.2
    assert provider.token() == "t1"
    provider.invalidate()
    assert provider.token() == "t2"


def test_cached_token_margin_refreshes_earlier() -> None:
    fake = FakeTime()
    provider = CachedToken(lambda: ("t", 3600.0), margin=600.0, clock=fake.clock)
    provider.token()
    fake.now += 3000.0
    provider.token()
    assert provider.fetch_count == 2


def test_cached_token_fetches_once_under_concurrency() -> None:
    gate = threading.Event()

    def slow_fetch() -> tuple[str, float]:
        gate.wait(5)
        return "shared", 3600.0

    provider = CachedToken(slow_fetch)
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(provider.token())) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)  # let every thread reach token() while the first fetch is blocked
    gate.set()
    for thread in threads:
        thread.join(5)
    assert tokens == ["shared"] * 8
    assert provider.fetch_count == 1


def test_cached_token_rejects_an_empty_token() -> None:
    with pytest.raises(AuthenticationFailedError, match="no access token"):
        CachedToken(lambda: ("", 10.0), name="IAM").token()


# -- configuration errors --------------------------------------------------------------------


def test_bad_configuration_is_reported() -> None:
    with pytest.raises(ConfigError, match="must be an http"):
        HttpClient("ftp://x", service="S")
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError, match="deadline"):
        RetryPolicy(deadline=0)
    with pytest.raises(ConfigError, match="empty"):
        StaticToken("")


def test_importing_qrmi_does_not_import_httpx() -> None:
    code = "import sys, qrmi; print('httpx' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert output.stdout.strip() == "False"
