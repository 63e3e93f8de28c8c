"""Bad requests get typed JSON errors: never a 500 with a traceback, never a secret in a log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from gateway.conftest import SECRET, MakeGateway
from qrmi.backends.base import Backend
from qrmi.config import Config, ResourceDef
from qrmi.errors import InvalidInputError, UnsupportedPayloadError
from qrmi.gateway.testing import LocalGateway
from qrmi.models import Payload, ResourceStatus, ResourceStatusCode
from qrmi.registry import register
from qrmi.resource import QuantumResource


@pytest.fixture
def job(gateway: LocalGateway) -> tuple[str, dict[str, str]]:
    return gateway.open_job("401", qpus=["emu"])


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["type"], body["message"]


def test_malformed_json_is_400(gateway: LocalGateway, job: tuple[str, dict[str, str]]) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/qpus/emu/tasks",
        content=b'{"payload": {"variant": ',
        headers={**_auth(job[0]), "Content-Type": "application/json"},
    )

    status, kind, message = _error(response)
    assert (status, kind) == (400, "InvalidInputError")
    assert "not valid JSON" in message


def test_a_missing_field_is_named(gateway: LocalGateway, job: tuple[str, dict[str, str]]) -> None:
    response = httpx.post(f"{gateway.url}/v1/qpus/emu/tasks", json={}, headers=_auth(job[0]))

    assert _error(response)[:2] == (400, "InvalidInputError")
    assert "payload" in _error(response)[2]


def test_an_unknown_payload_variant_is_400(
    gateway: LocalGateway, job: tuple[str, dict[str, str]]
) -> None:
    body = {"payload": {"variant": "Quantum", "input": "{}"}}

    response = httpx.post(f"{gateway.url}/v1/qpus/emu/tasks", json=body, headers=_auth(job[0]))

    status, kind, message = _error(response)
    assert (status, kind) == (400, "InvalidInputError")
    assert "'Quantum' is unknown; valid variants are QiskitPrimitive" in message


def test_a_payload_the_backend_does_not_take_is_refused(
    job: tuple[str, dict[str, str]],
) -> None:
    qpu = QuantumResource("emu", "local-emulator", environ=job[1])

    with pytest.raises(UnsupportedPayloadError, match="not supported"):
        qpu.task_start(Payload.PasqalCloud(sequence="{}", job_runs=1))
    with pytest.raises(InvalidInputError, match="field 'job_runs' must be int"):
        qpu.task_start(Payload.PasqalCloud(sequence="{}", job_runs="ten"))  # type: ignore[arg-type]


def test_an_unknown_resource_is_404(gateway: LocalGateway, job: tuple[str, dict[str, str]]) -> None:
    response = httpx.get(f"{gateway.url}/v1/qpus/ibm_nowhere/status", headers=_auth(job[0]))

    status, kind, message = _error(response)
    assert (status, kind) == (404, "ResourceNotFoundError")
    assert "'ibm_nowhere' is not served by this gateway" in message


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [("PUT", "/v1/health", 405), ("DELETE", "/v1/qpus/emu/status", 405), ("GET", "/v2/x", 404)],
)
def test_wrong_methods_and_paths_are_typed(
    gateway: LocalGateway, method: str, path: str, expected: int
) -> None:
    response = httpx.request(method, gateway.url + path)

    assert response.status_code == expected
    assert response.json()["error"]["type"] in ("MethodNotAllowed", "NotFound")


def test_an_oversize_body_is_413_without_reading_it(make_gateway: MakeGateway) -> None:
    gateway = make_gateway(max_body_bytes=4096)
    token, _ = gateway.open_job("402", qpus=["emu"])
    body = {"payload": {"variant": "QiskitPrimitive", "input": "x" * 10_000, "program_id": "s"}}

    declared = httpx.post(f"{gateway.url}/v1/qpus/emu/tasks", json=body, headers=_auth(token))
    streamed = httpx.post(
        f"{gateway.url}/v1/qpus/emu/tasks",
        content=iter([json.dumps(body).encode()]),  # chunked: no Content-Length
        headers={**_auth(token), "Content-Type": "application/json"},
    )

    for response in (declared, streamed):
        status, kind, message = _error(response)
        assert (status, kind) == (413, "PayloadTooLarge")
        assert "limit of 4096 bytes" in message


class _BrokenBackend(Backend):
    """A backend that fails with an unexpected exception carrying a secret-looking text."""

    RESOURCE_TYPE = "gateway-test-broken"

    def fetch_status(self) -> ResourceStatus:
        return ResourceStatus(ResourceStatusCode.Online)

    def submit(self, payload: Payload) -> str:
        raise NotImplementedError

    def cancel(self, task_id: str) -> None:
        raise NotImplementedError

    def fetch_state(self, task_id: str) -> str:
        raise NotImplementedError

    def fetch_result(self, task_id: str) -> str:
        raise NotImplementedError

    def fetch_target(self) -> str:
        raise KeyError(f"apikey={SECRET}")


@pytest.fixture
def broken_gateway(tmp_path: object) -> Iterator[LocalGateway]:
    register("gateway-test-broken", _BrokenBackend, replace=True)
    rdef = ResourceDef("broken", "gateway-test-broken", False, {"API_KEY": SECRET})
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    with LocalGateway(Config(resource_map={"broken": rdef}), tmp_path / "gw") as gateway:
        yield gateway


def test_an_unexpected_failure_is_a_typed_500_and_its_secret_is_not_logged(
    broken_gateway: LocalGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token, _ = broken_gateway.open_job("403", qpus=["broken"])

    response = httpx.get(f"{broken_gateway.url}/v1/qpus/broken/target", headers=_auth(token))

    assert _error(response) == (
        500,
        "InternalError",
        "the gateway failed unexpectedly; see its log",
    )
    assert "Traceback" not in response.text
    assert "unexpected KeyError on GET /v1/qpus/broken/target" in caplog.text
    assert SECRET not in caplog.text and token not in caplog.text
