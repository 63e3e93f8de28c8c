"""The oqtopus backend against the fake OQTOPUS Cloud User API (OpenQASM 3 on the emulator)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from qrmi.errors import (
    AuthenticationFailedError,
    ConfigError,
    EnvVarNotSetError,
    InvalidInputError,
    ResourceNotFoundError,
    ServiceError,
    ServiceUnavailableError,
    TaskNotFoundError,
)
from qrmi.models import Payload, ResourceStatusCode, ResourceType, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.oqtopus import OqtopusFake

BELL = """OPENQASM 3;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
cx q[0], q[1];
c = measure q;
"""
ONE = (
    'OPENQASM 3;\ninclude "stdgates.inc";\nqubit[1] q;\nbit[1] c;\nx q[0];\nc[0] = measure q[0];\n'
)


@pytest.fixture(scope="module")
def fake() -> Iterator[OqtopusFake]:
    with OqtopusFake(seed=5) as server:
        yield server


@pytest.fixture(autouse=True)
def clean(fake: OqtopusFake) -> Iterator[None]:
    yield
    fake.faults.reset()
    fake.clear()
    fake.set_available("anemone", True)
    fake.inline_device_info = False


def qpu(fake: OqtopusFake, name: str = "anemone", **overrides: str) -> QuantumResource:
    settings = {**fake.settings(), **overrides}
    config = {key: value for key, value in settings.items() if value}
    return QuantumResource(name, ResourceType.OQTOPUS, config=config, environ={})


def job(**spec: object) -> Payload:
    return Payload.Oqtopus(job_spec=json.dumps(spec))


def run(resource: QuantumResource, payload: Payload) -> tuple[TaskStatus, str]:
    task_id = resource.task_start(payload)
    return resource.task_wait(task_id, 60), task_id


# -- tasks --------------------------------------------------------------------------------------


def test_a_sampling_job_completes_with_counts(fake: OqtopusFake) -> None:
    resource = qpu(fake)
    status, task_id = run(resource, job(program=BELL, shots=200, name="bell"))

    assert status == TaskStatus.Completed
    result = resource.task_result(task_id).json()
    assert set(result["sampling"]["counts"]) == {"00", "11"}
    assert sum(result["sampling"]["counts"].values()) == 200


def test_the_submission_is_register_upload_submit_with_the_token_header(
    fake: OqtopusFake,
) -> None:
    run(qpu(fake), job(program=[BELL]))

    steps = [(r.method, r.path) for r in fake.requests() if r.method == "POST"]
    assert steps[0] == ("POST", "/jobs")
    assert steps[1] == ("POST", "/storage/oqtopus-jobs")
    assert steps[2][1].endswith("/submit")
    api = [r for r in fake.requests() if not r.path.startswith("/storage")]
    assert all(r.headers.get("q-api-token") == fake.token for r in api)
    assert all("authorization" not in r.headers for r in fake.requests())
    storage = fake.requests("/storage/*")
    assert storage and all("q-api-token" not in r.headers for r in storage)


def test_the_submit_request_defaults_to_1000_shots_on_the_resource_device(
    fake: OqtopusFake,
) -> None:
    run(qpu(fake), job(program=BELL))

    body = fake.requests("/jobs/*/submit")[-1].json()
    assert body["device_id"] == "anemone"
    assert body["job_type"] == "sampling"
    assert body["shots"] == 1000
    assert "program" not in body  # the program travels through storage


def test_estimation_returns_the_expectation_value(fake: OqtopusFake) -> None:
    resource = qpu(fake)
    operator = [{"pauli": "Z 0 Z 1", "coeff": 1.5}]
    status, task_id = run(resource, job(program=BELL, job_type="estimation", operator=operator))

    assert status == TaskStatus.Completed
    assert resource.task_result(task_id).json()["estimation"]["exp_value"] == pytest.approx(1.5)


def test_multi_manual_returns_joint_and_divided_counts(fake: OqtopusFake) -> None:
    resource = qpu(fake)
    status, task_id = run(resource, job(program=[BELL, ONE], job_type="multi_manual", shots=50))

    assert status == TaskStatus.Completed
    sampling = resource.task_result(task_id).json()["sampling"]
    assert set(sampling["counts"]) <= {"100", "111"}
    assert sampling["divided_counts"]["1"] == {"1": 50}


def test_a_program_that_does_not_parse_fails_with_the_reason_in_the_logs(
    fake: OqtopusFake,
) -> None:
    resource = qpu(fake)
    status, task_id = run(resource, job(program="OPENQASM 3; qubit[2] q; frobnicate q;"))

    assert status == TaskStatus.Failed
    logs = resource.task_logs(task_id)
    assert "status failed" in logs
    assert "not valid OpenQASM 3" in logs


def test_a_program_wider_than_the_device_fails(fake: OqtopusFake) -> None:
    wide = 'OPENQASM 3;\ninclude "stdgates.inc";\nqubit[40] q;\nbit[1] c;\nc[0] = measure q[39];\n'
    resource = qpu(fake, "qulacs")
    status, task_id = run(resource, job(program=wide))

    assert status == TaskStatus.Failed
    assert "has 39" in resource.task_logs(task_id)


def test_a_queued_job_is_cancelled_and_a_final_one_keeps_its_result(fake: OqtopusFake) -> None:
    resource = qpu(fake)
    done, finished = run(resource, job(program=BELL, shots=10))
    fake.jobs.hold()
    try:
        queued = resource.task_start(job(program=BELL))
        assert resource.task_status(queued) == TaskStatus.Queued
        resource.task_stop(queued)
        assert resource.task_status(queued) == TaskStatus.Cancelled
    finally:
        fake.jobs.resume()
    resource.task_stop(finished)

    assert done == TaskStatus.Completed
    assert resource.task_result(finished).json()["sampling"]["counts"]
    assert not fake.requests(f"/jobs/{finished}/cancel")


def test_an_unknown_job_is_task_not_found(fake: OqtopusFake) -> None:
    resource = qpu(fake)
    for call in (resource.task_status, resource.task_logs, resource.task_stop):
        with pytest.raises(TaskNotFoundError):
            call("no-such-job")


# -- job_spec checks (before any request) -------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        (json.dumps({"program": BELL, "qubits": 2}), "unknown fields \\['qubits'\\]"),
        (json.dumps({"program": BELL, "device_id": "kawasaki"}), "not this resource's device"),
        (json.dumps({"program": BELL, "job_type": "annealing"}), "job_type 'annealing'"),
        (json.dumps({"program": BELL, "shots": 0}), "shots must be an integer"),
        (json.dumps({"program": [BELL, BELL]}), "takes exactly one program"),
        (json.dumps({"program": BELL, "job_type": "estimation"}), "needs job_spec operator"),
        (json.dumps({"program": ""}), "program must be a non-empty"),
        (json.dumps({"program": BELL, "simulator_info": 3}), "simulator_info must be"),
    ],
)
def test_a_bad_job_spec_is_refused_before_any_request(
    fake: OqtopusFake, spec: str, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        qpu(fake).task_start(Payload.Oqtopus(job_spec=spec))
    assert not fake.requests("/jobs*")


def test_the_legacy_job_info_shape_is_accepted(fake: OqtopusFake) -> None:
    status, _ = run(qpu(fake), job(job_info={"program": [BELL]}, shots=20))
    assert status == TaskStatus.Completed


# -- resource -----------------------------------------------------------------------------------


def test_status_follows_the_device_availability(fake: OqtopusFake) -> None:
    resource = qpu(fake)
    assert resource.is_accessible()
    assert resource.status().pending_job_count == 0

    fake.set_available("anemone", False, until="2026-12-24T09:00:00+00:00")
    status = resource.status()

    assert status.status == ResourceStatusCode.Offline
    assert status.status_reason is not None and "2026-12-24T09:00:00" in status.status_reason
    assert not resource.is_accessible()


def test_queued_jobs_wait_while_the_device_is_unavailable_and_new_ones_are_refused(
    fake: OqtopusFake,
) -> None:
    resource = qpu(fake)
    fake.jobs.hold()
    task_id = resource.task_start(job(program=BELL, shots=10))
    fake.set_available("anemone", False)

    with pytest.raises(InvalidInputError, match="device anemone is not available"):
        resource.task_start(job(program=BELL, shots=10))
    assert resource.task_status(task_id) == TaskStatus.Queued
    assert resource.status().pending_job_count == 1
    fake.set_available("anemone", True)
    assert resource.task_wait(task_id, 60) == TaskStatus.Completed


@pytest.mark.parametrize("inline", [False, True])
def test_target_is_the_device_description_with_its_device_info(
    fake: OqtopusFake, inline: bool
) -> None:
    fake.inline_device_info = inline
    target = json.loads(qpu(fake).target().value)

    expected = {
        "device_id",
        "device_type",
        "status",
        "available_at",
        "n_pending_jobs",
        "basis_gates",
        "supported_instructions",
        "device_info",
        "calibrated_at",
        "description",
    }
    assert expected <= set(target)
    assert target["device_id"] == "anemone" and target["device_type"] == "QPU"
    assert json.loads(target["device_info"])["n_qubits"] == 64


def test_an_unknown_device_lists_the_known_ones(fake: OqtopusFake) -> None:
    with pytest.raises(ResourceNotFoundError, match="known devices: anemone, qulacs"):
        qpu(fake, "kawasaki").status()


def test_acquire_gives_distinct_local_tokens_and_release_does_nothing(
    fake: OqtopusFake, caplog: pytest.LogCaptureFixture
) -> None:
    resource = qpu(fake)
    first, second = resource.acquire(), resource.acquire()
    resource.release(first)
    resource.release(first)

    assert first != second
    assert "no reservation" in caplog.text
    assert not fake.requests()
    assert resource.metadata()["backend_name"] == "anemone"


# -- settings and HTTP behaviour ----------------------------------------------------------------


def test_missing_settings_name_the_variable(fake: OqtopusFake) -> None:
    with pytest.raises(EnvVarNotSetError, match="anemone_QRMI_OQTOPUS_URL"):
        qpu(fake, QRMI_OQTOPUS_URL="")
    with pytest.raises(EnvVarNotSetError, match="anemone_QRMI_OQTOPUS_API_TOKEN"):
        qpu(fake, QRMI_OQTOPUS_API_TOKEN="")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("QRMI_OQTOPUS_RETRY_MAX_ATTEMPTS", "0", "RETRY_MAX_ATTEMPTS=0 must be at least 1"),
        ("QRMI_OQTOPUS_RETRY_BACKOFF_SECONDS", "-1", "RETRY_BACKOFF_SECONDS=-1.0 must be"),
        ("QRMI_OQTOPUS_RETRY_STATUS_CODES", "429,teapot", "'teapot' is not one"),
        ("QRMI_OQTOPUS_RETRY_METHODS", "GET,FETCH", "unknown HTTP methods \\['FETCH'\\]"),
        ("QRMI_OQTOPUS_TIMEOUT", "soon", "TIMEOUT='soon' is not a number"),
    ],
)
def test_malformed_settings_are_config_errors(
    fake: OqtopusFake, key: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        qpu(fake, **{key: value})


def test_a_proxy_setting_is_never_echoed(fake: OqtopusFake) -> None:
    with pytest.raises(ConfigError) as caught:
        qpu(fake, QRMI_OQTOPUS_PROXY="ftp://user:hunter2@proxy")
    assert "hunter2" not in str(caught.value)
    assert "anemone_QRMI_OQTOPUS_PROXY" in str(caught.value)


def test_requests_go_through_the_proxy(fake: OqtopusFake) -> None:
    with socket.socket() as closed:  # a port nothing listens on: the proxy is down
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    resource = qpu(fake, QRMI_OQTOPUS_PROXY=f"http://127.0.0.1:{port}")

    with pytest.raises(ServiceUnavailableError, match="network"):
        resource.status()
    assert not fake.requests()


def test_a_wrong_token_is_an_authentication_error_without_the_token(fake: OqtopusFake) -> None:
    with pytest.raises(AuthenticationFailedError) as caught:
        qpu(fake, QRMI_OQTOPUS_API_TOKEN="wrong-secret-token").status()
    assert "wrong-secret-token" not in str(caught.value)


def test_get_is_retried_on_a_listed_status(fake: OqtopusFake) -> None:
    fake.faults.fail(503, times=2, path="/devices/anemone")
    assert qpu(fake, QRMI_OQTOPUS_RETRY_BACKOFF_SECONDS="0").is_accessible()
    assert len(fake.requests("/devices/anemone")) == 3


def test_retries_stop_after_the_configured_attempts(fake: OqtopusFake) -> None:
    fake.faults.fail(503, times=None, path="/devices/anemone")
    resource = qpu(
        fake, QRMI_OQTOPUS_RETRY_MAX_ATTEMPTS="2", QRMI_OQTOPUS_RETRY_BACKOFF_SECONDS="0"
    )
    with pytest.raises(ServiceUnavailableError, match="after 2 tries"):
        resource.status()


def test_a_status_not_listed_is_not_retried(fake: OqtopusFake) -> None:
    fake.faults.fail(503, times=1, path="/devices/anemone")
    with pytest.raises(ServiceError) as caught:
        qpu(fake, QRMI_OQTOPUS_RETRY_STATUS_CODES="429").status()
    assert caught.value.status_code == 503
    assert len(fake.requests("/devices/anemone")) == 1


def test_job_registration_is_not_repeated_unless_post_is_listed(fake: OqtopusFake) -> None:
    fake.faults.fail(503, times=1, path="/jobs", method="POST")
    with pytest.raises(ServiceError):
        qpu(fake).task_start(job(program=BELL))
    assert len(fake.requests("/jobs", method="POST")) == 1

    fake.faults.fail(503, times=1, path="/jobs", method="POST")
    resource = qpu(fake, QRMI_OQTOPUS_RETRY_METHODS="get, post, delete")
    task_id = resource.task_start(job(program=BELL, shots=10))
    assert resource.task_wait(task_id, 60) == TaskStatus.Completed


def test_a_rejected_submission_carries_the_service_message(fake: OqtopusFake) -> None:
    fake.faults.fail(
        400, path="/jobs/*/submit", body={"message": "Bad request malformed input data"}
    )
    with pytest.raises(InvalidInputError, match="Bad request malformed input data"):
        qpu(fake).task_start(job(program=BELL))


def test_recorded_requests_mask_the_api_token(fake: OqtopusFake) -> None:
    qpu(fake).status()
    request = fake.requests("/devices/anemone")[-1]
    assert "q-api-token" in request.sensitive
    assert fake.token not in repr(request)


def test_a_registered_job_never_submitted_is_queued(fake: OqtopusFake) -> None:
    import httpx

    answer = httpx.post(fake.url + "/jobs", headers={"q-api-token": fake.token})
    job_id = answer.json()["job_id"]
    resource = qpu(fake)

    assert resource.task_status(job_id) == TaskStatus.Queued
    assert resource.task_logs(job_id) == f"job {job_id}: status registered"
    resource.task_stop(job_id)  # the service cancels registered jobs too
    assert resource.task_status(job_id) == TaskStatus.Cancelled


def test_a_device_the_user_may_not_use_is_a_service_error_with_403() -> None:
    with OqtopusFake(allowed_devices=["qulacs"]) as limited:
        with pytest.raises(ServiceError, match="Cannot access device_id=anemone") as caught:
            qpu(limited).status()
        assert caught.value.status_code == 403
        assert qpu(limited, "qulacs").is_accessible()


def test_task_usage_is_the_jobs_execution_time(fake: OqtopusFake) -> None:
    resource = qpu(fake)
    status, task_id = run(resource, job(program=BELL, shots=100))
    assert status == TaskStatus.Completed

    usage = resource.task_usage(task_id)

    fake_job = fake.jobs.get(task_id)
    assert fake_job is not None and fake_job.started_at and fake_job.finished_at
    ran = fake_job.finished_at - fake_job.started_at
    assert usage is not None
    assert usage.quantum_seconds == round(ran, 3)
    assert usage.running_seconds == pytest.approx(ran, abs=1.0)  # whole-second timestamps
