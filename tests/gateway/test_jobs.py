"""Job start and end through the HTTP API, authenticated by root's MUNGE credential."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from gateway.conftest import SECRET, bell
from qrmi.backends._munge import Munge
from qrmi.errors import AuthenticationFailedError, QrmiError, ResourceNotFoundError
from qrmi.gateway.auth import MUNGE_HEADER, AuthError, MungeVerifier, munge_binding
from qrmi.gateway.client import GatewayUnavailableError, finish_job, start_job
from qrmi.gateway.store import Store
from qrmi.gateway.testing import LocalGateway
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's")


@pytest.fixture(params=["sqlite", "postgresql"])
def gateway_store(request: pytest.FixtureRequest) -> str:
    """Each test here runs on both stores."""
    return str(request.param)


def test_start_job_gives_the_gateway_variables_and_no_secret(
    gateway: LocalGateway, munge: MungeDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    token, variables = start_job(gateway.url, "100", 1000, ["emu"], 3600, munge_socket=munge.socket)

    assert variables["QRMI_GATEWAY_URL"] == gateway.url
    assert variables["emu_QRMI_GATEWAY_TOKEN"] == token
    assert variables["QRMI_JOB_QPU_RESOURCES"] == "emu"
    assert variables["QRMI_JOB_QPU_TYPES"] == "local-emulator"
    assert variables["emu_QRMI_JOB_TIMEOUT_SECONDS"] == "3600"
    assert variables["emu_QRMI_JOB_ACQUISITION_TOKEN"]
    assert not any(SECRET in value for value in variables.values())
    assert not any(key.endswith("APIKEY") for key in variables)
    assert token not in caplog.text and SECRET not in caplog.text


def test_a_job_runs_a_task_with_only_its_variables(
    gateway: LocalGateway, munge: MungeDaemon
) -> None:
    _, variables = start_job(gateway.url, "101", 1000, ["emu"], 3600, munge_socket=munge.socket)
    qpu = QuantumResource("emu", "local-emulator", environ=variables)

    task = qpu.task_start(bell())

    assert qpu.task_wait(task, 60) == TaskStatus.Completed
    assert qpu.task_result(task).json()["__type__"] == "PrimitiveResult"
    # Even a tiny task is simulated on the emulator's lanes, never in the gateway's process.
    assert "started on lane" in qpu.task_logs(task)


def test_finish_job_ends_it_exactly_once(gateway: LocalGateway, munge: MungeDaemon) -> None:
    _, variables = start_job(gateway.url, "102", 1000, ["emu"], 3600, munge_socket=munge.socket)
    qpu = QuantumResource("emu", "local-emulator", environ=variables)
    running = qpu.task_start(bell(seconds=30))

    first = finish_job(gateway.url, "102", munge_socket=munge.socket)
    second = finish_job(gateway.url, "102", munge_socket=munge.socket)

    assert first["cancelled_tasks"] == [running] and first["released"] == ["emu"]
    assert second["already_finished"] is True and second["released"] == []
    assert gateway.service is not None
    held = gateway.service.shared("emu").status()
    assert held.status.name == "Online"


def test_a_token_from_a_finished_job_is_refused(gateway: LocalGateway, munge: MungeDaemon) -> None:
    _, variables = start_job(gateway.url, "103", 1000, ["emu"], 3600, munge_socket=munge.socket)
    finish_job(gateway.url, "103", munge_socket=munge.socket)
    copied = QuantumResource("emu", "local-emulator", environ=variables)

    with pytest.raises(AuthenticationFailedError, match="revoked: job 103 has ended"):
        copied.task_start(bell())


def test_a_job_id_is_started_once(gateway: LocalGateway, munge: MungeDaemon) -> None:
    start_job(gateway.url, "104", 1000, ["emu"], 3600, munge_socket=munge.socket)
    finish_job(gateway.url, "104", munge_socket=munge.socket)

    with pytest.raises(QrmiError, match="job 104 has ended"):
        start_job(gateway.url, "104", 1000, ["emu"], 3600, munge_socket=munge.socket)


def test_starting_a_running_job_again_replaces_its_token(
    gateway: LocalGateway, munge: MungeDaemon
) -> None:
    old, first = start_job(gateway.url, "105", 1000, ["emu"], 3600, munge_socket=munge.socket)
    new, second = start_job(gateway.url, "105", 1000, ["emu"], 3600, munge_socket=munge.socket)

    assert new != old
    assert second["emu_QRMI_JOB_ACQUISITION_TOKEN"] == first["emu_QRMI_JOB_ACQUISITION_TOKEN"]
    assert QuantumResource("emu", "local-emulator", environ=second).is_accessible()
    with pytest.raises(AuthenticationFailedError, match="revoked"):
        QuantumResource("emu", "local-emulator", environ=first).is_accessible()


def test_an_unknown_qpu_is_refused_and_nothing_stays_acquired(
    gateway: LocalGateway, munge: MungeDaemon
) -> None:
    with pytest.raises(ResourceNotFoundError, match="'nope' is not served"):
        start_job(gateway.url, "106", 1000, ["emu", "nope"], 3600, munge_socket=munge.socket)

    assert gateway.service is not None and gateway.service.store.job("106") is None


#: The body :func:`_post_job` sends (a credential is bound to these exact bytes).
JOB_110 = b'{"job_id": "110", "uid": 1000, "qpus": ["emu"], "time_limit": 60}'


def _post_job(gateway: LocalGateway, credential: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if credential is not None:
        headers[MUNGE_HEADER] = credential
    return httpx.post(f"{gateway.url}/v1/jobs", content=JOB_110, headers=headers)


def test_job_start_without_a_credential_is_401(gateway: LocalGateway) -> None:
    response = _post_job(gateway, None)

    assert response.status_code == 401
    assert "needs root's MUNGE credential" in response.json()["error"]["message"]


def test_a_garbage_credential_is_401(gateway: LocalGateway) -> None:
    response = _post_job(gateway, "MUNGE:not-a-credential:")

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "InvalidTokenError"


def test_a_replayed_credential_is_401(gateway: LocalGateway, munge: MungeDaemon) -> None:
    credential = Munge(munge.socket).encode(munge_binding("POST", "/v1/jobs/110", JOB_110))
    assert _post_job(gateway, credential).status_code == 201

    replay = _post_job(gateway, credential)

    assert replay.status_code == 401
    assert "replayed" in replay.json()["error"]["message"].lower()


def test_a_credential_replayed_after_munged_restarted_is_refused(tmp_path: Path) -> None:
    """munged forgets the credentials it decoded when it restarts; the gateway's store does not."""
    key = os.urandom(128)
    with MungeDaemon(key=key) as first:
        credential = Munge(first.socket).encode(munge_binding("DELETE", "/v1/jobs/7"))
        store = Store(tmp_path / "gateway.db")
        MungeVerifier(first.socket, store.use_credential, time.time).verify_root(
            credential, "DELETE", "/v1/jobs/7"
        )
    with MungeDaemon(key=key) as restarted:
        verifier = MungeVerifier(restarted.socket, store.use_credential, time.time)

        with pytest.raises(AuthError, match="already used"):
            verifier.verify_root(credential, "DELETE", "/v1/jobs/7")


def test_a_credential_made_for_another_request_is_401(
    gateway: LocalGateway, munge: MungeDaemon
) -> None:
    credential = Munge(munge.socket).encode(munge_binding("DELETE", "/v1/jobs/110"))

    response = _post_job(gateway, credential)

    assert response.status_code == 401
    assert "made for another request" in response.json()["error"]["message"]


def test_a_non_root_credential_is_403(gateway: LocalGateway, munge: MungeDaemon) -> None:
    os.chmod(os.path.dirname(munge.socket), 0o755)  # let uid 65534 reach the socket
    binding = munge_binding("POST", "/v1/jobs/110", JOB_110).decode()
    made = subprocess.run(  # MUNGE's own client: uid 65534 may not reach this checkout's venv
        ["munge", "--socket", munge.socket, "--string", binding],
        user=65534,
        group=65534,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    response = _post_job(gateway, made.stdout.strip())

    assert response.status_code == 403
    assert "uid 65534" in response.json()["error"]["message"]


def test_a_gateway_that_is_down_fails_the_job_start_clearly(munge: MungeDaemon) -> None:
    with pytest.raises(GatewayUnavailableError, match="did not answer POST /v1/jobs within"):
        start_job(
            "http://127.0.0.1:9", "120", 1000, ["emu"], 60, munge_socket=munge.socket, deadline=0.5
        )
