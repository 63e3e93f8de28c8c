"""The ibm-quantum-system backend against the Quantum System, IAM and S3 fakes."""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs, urlsplit

import pytest
from ibm_helpers import (
    assert_no_secret,
    broken_sampler,
    decode,
    estimator,
    log_texts,
    run_to_completion,
    sampler,
)

from qrmi.backends.ibm_quantum_system import QuantumSystemBackend
from qrmi.config import Settings
from qrmi.errors import (
    AuthenticationFailedError,
    ConfigError,
    EnvVarNotSetError,
    InvalidInputError,
    QrmiError,
    ServiceUnavailableError,
    TaskNotReadyError,
    UnsupportedPayloadError,
)
from qrmi.models import Payload, ResourceStatusCode, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.ibm_quantum_system import QuantumSystemFake

NAME = "ibm_perth"
TYPE = "ibm-quantum-system"


def resource(fake: QuantumSystemFake, name: str = NAME, **overrides: str) -> QuantumResource:
    settings = {**fake.settings, **overrides}
    return QuantumResource.from_config(name, TYPE, {k: v for k, v in settings.items() if v})


def test_sampler_job_completes_and_decodes(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    task = run_to_completion(qpu, sampler(shots=100))

    counts = decode(qpu.task_result(task).value)[0].data.meas.get_counts()
    assert sum(counts.values()) == 100
    assert set(counts) <= {"00", "11"}
    assert "completed" in qpu.task_logs(task)


def test_estimator_job_completes_and_decodes(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    task = run_to_completion(qpu, estimator())

    evs = decode(qpu.task_result(task).value)[0].data.evs
    assert list(evs) == pytest.approx([1.0, 1.0], abs=0.1)


def test_job_is_created_with_presigned_storage(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    task = run_to_completion(qpu, sampler())

    (post,) = [r for r in qs.requests("/v1/jobs", "POST") if r.json()["id"] == task]
    body = post.json()
    assert body["backend"] == NAME and body["program_id"] == "sampler"
    assert body["timeout_secs"] == 600
    assert post.headers["service-crn"] == qs.crn
    assert post.headers["authorization"].startswith("Bearer ")
    for part, key in (("input", "input"), ("results", "results"), ("logs", "logs")):
        url = urlsplit(body["storage"][part]["presigned_url"])
        assert body["storage"][part]["type"] == "s3_compatible"
        assert url.path == f"/{qs.s3.bucket}/{key}_{task}.json"
        assert parse_qs(url.query)["X-Amz-Expires"] == ["600"]
    assert {f"{k}_{task}.json" for k in ("input", "results", "logs")} <= set(qs.s3.keys())


def test_input_is_stored_unchanged(qs: QuantumSystemFake) -> None:
    payload = sampler(unknown_option={"kept": 1.50})
    qpu = resource(qs)
    task = run_to_completion(qpu, payload)

    assert isinstance(payload, Payload.QiskitPrimitive)
    assert qs.s3.read(f"input_{task}.json").decode() == payload.input


def test_presigned_urls_use_the_qsapi_endpoint(qs: QuantumSystemFake) -> None:
    qsapi = qs.s3.url.replace("127.0.0.1", "localhost")
    qpu = resource(qs, QRMI_IBM_QS_S3_ENDPOINT_FOR_QSAPI=qsapi)
    task = run_to_completion(qpu, sampler())

    (post,) = [r for r in qs.requests("/v1/jobs", "POST") if r.json()["id"] == task]
    for part in ("input", "results", "logs"):
        assert post.json()["storage"][part]["presigned_url"].startswith(qsapi + "/")


def test_status_reports_lanes_and_running_jobs(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    task = qpu.task_start(sampler(seconds=30))
    try:
        status = qpu.status()
    finally:
        qpu.task_stop(task)

    assert status.status == ResourceStatusCode.Online
    assert status.capacity is not None and status.capacity.max_slots == 2
    assert status.pending_job_count == 1
    assert status.capacity.available_slots == 1
    after = qpu.status()
    assert after.capacity is not None and after.capacity.available_slots == 2
    assert after.busy is False


def test_status_asks_for_the_lane_count_at_most_once_a_minute(qs: QuantumSystemFake) -> None:
    now = [1000.0]
    settings = Settings(NAME, {k: v for k, v in qs.settings.items() if v}, {})
    backend = QuantumSystemBackend(NAME, settings, clock=lambda: now[0])
    lanes_path = f"/v1/backends/{NAME}/lanes"

    asked = []
    for seconds in (0.0, 30.0, 59.0, 61.0):
        now[0] = 1000.0 + seconds
        qs.clear()
        status = backend.status()
        assert status.capacity is not None and status.capacity.max_slots == 2
        assert status.capacity.available_slots == 2
        paths = [r.path for r in qs.requests()]
        assert f"/v1/backends/{NAME}" in paths and "/v1/jobs" in paths
        asked.append(lanes_path in paths)

    assert asked == [True, False, False, True]


def test_is_accessible_asks_the_backend_once(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    qpu.is_accessible()
    qs.clear()
    assert qpu.is_accessible() is True
    assert [(r.method, r.path) for r in qs.requests()] == [("GET", f"/v1/backends/{NAME}")]
    qs.set_status(NAME, "paused", "calibrating")
    assert qpu.is_accessible() is False


def test_paused_backend_is_not_accessible(qs: QuantumSystemFake) -> None:
    qs.set_status(NAME, "paused", "calibrating")

    status = resource(qs).status()
    assert status.status == ResourceStatusCode.Paused
    assert status.status_reason == "calibrating"
    assert resource(qs).is_accessible() is False


def test_target_has_configuration_and_properties(qs: QuantumSystemFake) -> None:
    target = json.loads(resource(qs).target().value)

    assert target["configuration"]["backend_name"] == NAME
    assert target["configuration"]["n_qubits"] == 7
    assert target["properties"]["backend_name"] == NAME


def test_stop_cancels_a_running_job_then_deletes_it_keeping_its_status(
    qs: QuantumSystemFake,
) -> None:
    qpu = resource(qs)
    task = qpu.task_start(sampler(seconds=30))

    qpu.task_stop(task)
    qpu.task_stop(task)

    assert len(qs.requests(f"/v1/jobs/{task}/cancel", "POST")) == 1
    assert task in qs.deleted_jobs
    assert qpu.task_status(task) == TaskStatus.Cancelled
    assert resource(qs).task_status(task) == TaskStatus.Cancelled
    with pytest.raises(TaskNotReadyError, match="cancelled"):
        qpu.task_result(task)


def test_a_completed_job_leaves_the_service_once_its_result_is_in_the_bucket(
    qs: QuantumSystemFake,
) -> None:
    qpu = resource(qs)
    task = run_to_completion(qpu, sampler())

    assert task in qs.deleted_jobs and qs.job(task) is None
    assert f"results_{task}.json" in qs.s3.keys()  # noqa: SIM118 - a list of S3 keys
    other_process = resource(qs)
    assert other_process.task_status(task) == TaskStatus.Completed
    before = other_process.task_result(task).value
    assert decode(before)[0].data.meas.num_shots == 64
    qpu.task_stop(task)
    assert qs.requests(f"/v1/jobs/{task}/cancel", "POST") == []
    assert resource(qs).task_result(task).value == before
    assert "completed" in qpu.task_logs(task)


def test_a_failed_job_keeps_its_reason_code_after_deletion(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    task = qpu.task_start(broken_sampler())
    assert qpu.task_wait(task, 60) == TaskStatus.Failed

    assert task in qs.deleted_jobs
    with pytest.raises(TaskNotReadyError, match="task failed. code: 1517"):
        resource(qs).task_result(task)


def test_failed_job_reports_the_reason(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    task = qpu.task_start(broken_sampler())

    assert qpu.task_wait(task, 60) == TaskStatus.Failed
    with pytest.raises(TaskNotReadyError, match="task failed. code: 1517"):
        qpu.task_result(task)
    assert "failed" in qpu.task_logs(task)


def test_unknown_program_and_bad_input_are_refused(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    posts = len(qs.requests("/v1/jobs", "POST"))
    with pytest.raises(UnsupportedPayloadError, match="noiselearner"):
        qpu.task_start(Payload.QiskitPrimitive(input="{}", program_id="noiselearner"))
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        qpu.task_start(Payload.QiskitPrimitive(input="{pubs", program_id="sampler"))
    with pytest.raises(UnsupportedPayloadError, match="not supported"):
        qpu.task_start(Payload.PasqalCloud(sequence="{}", job_runs=1))
    assert len(qs.requests("/v1/jobs", "POST")) == posts


def test_missing_settings_are_named(qs: QuantumSystemFake) -> None:
    with pytest.raises(EnvVarNotSetError, match="ibm_perth_QRMI_IBM_QS_IAM_APIKEY"):
        resource(qs, QRMI_IBM_QS_IAM_APIKEY="")
    no_s3 = resource(qs, QRMI_IBM_QS_S3_BUCKET="")
    with pytest.raises(EnvVarNotSetError, match="ibm_perth_QRMI_IBM_QS_S3_BUCKET"):
        no_s3.task_start(sampler())
    no_timeout = resource(qs, QRMI_JOB_TIMEOUT_SECONDS="")
    with pytest.raises(EnvVarNotSetError, match="ibm_perth_QRMI_JOB_TIMEOUT_SECONDS"):
        no_timeout.task_start(sampler())
    with pytest.raises(ConfigError, match="not an integer"):
        resource(qs, QRMI_JOB_TIMEOUT_SECONDS="soon").task_start(sampler())


def test_settings_come_from_the_environment(
    qs: QuantumSystemFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in qs.settings.items():
        monkeypatch.setenv(f"{NAME}_{key}", value)

    assert QuantumResource(NAME, TYPE).is_accessible() is True


def test_a_burst_of_503_is_survived(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    qs.faults.fail(503, times=3, path="/v1/jobs", method="POST")

    task = run_to_completion(qpu, sampler())

    assert [r.status for r in qs.requests("/v1/jobs", "POST")][-4:] == [503, 503, 503, 204]
    assert qpu.task_result(task).value


def test_dropped_connections_are_survived(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    task = run_to_completion(qpu, sampler())
    qs.faults.drop_connections(times=2, path=f"/v1/jobs/{task}")

    assert qpu.task_status(task) == TaskStatus.Completed


def test_token_expiring_mid_job_is_refreshed(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    task = qpu.task_start(sampler(seconds=0.3))
    fetched = len(qs.iam.requests("/identity/token"))

    qs.expire_tokens()

    assert qpu.task_wait(task, 60) == TaskStatus.Completed
    assert len(qs.iam.requests("/identity/token")) == fetched + 1
    # The job's polls, or the background sweep's job list: whichever asked first.
    assert 401 in [r.status for r in qs.requests("/v1/jobs*", "GET")]


def test_permanent_423_fails_within_the_job_deadline(qs: QuantumSystemFake) -> None:
    qs.reserve(NAME)
    qpu = resource(qs, QRMI_JOB_TIMEOUT_SECONDS="2")

    with pytest.raises(ServiceUnavailableError, match="reserved") as caught:
        qpu.task_start(sampler())

    assert "HTTP 423" in str(caught.value) and "code 1233" in str(caught.value)
    assert len(qs.requests("/v1/jobs", "POST")) >= 2


def test_rate_limiting_429_is_not_called_lanes_full(qs: QuantumSystemFake) -> None:
    qs.faults.throttle(429, path="/v1/jobs", method="POST", retry_after=0)
    qpu = resource(qs, QRMI_JOB_TIMEOUT_SECONDS="1")

    with pytest.raises(ServiceUnavailableError, match="rate-limiting") as caught:
        qpu.task_start(sampler())
    assert "lanes" not in str(caught.value)


def test_429_then_success_is_retried(qs: QuantumSystemFake) -> None:
    qs.faults.throttle(429, times=2, path="/v1/jobs", method="POST", retry_after=0)

    run_to_completion(resource(qs), sampler())


def test_a_refused_api_key_is_an_authentication_error(qs: QuantumSystemFake) -> None:
    qpu = resource(qs, QRMI_IBM_QS_IAM_APIKEY="wrong-key-123456")

    with pytest.raises(AuthenticationFailedError, match="API key could not be found") as caught:
        qpu.status()
    assert "wrong-key-123456" not in str(caught.value)


def test_no_credential_in_messages_or_logs(
    qs: QuantumSystemFake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    qpu = resource(qs)
    errors: list[str] = []
    qs.faults.fail(503, times=2, path="/v1/jobs*")
    task = run_to_completion(qpu, sampler())
    qs.expire_tokens()
    qpu.task_logs(task)
    qpu.status()
    for bad in (
        lambda: qpu.task_result("00000000-0000-4000-8000-000000000000"),
        lambda: resource(qs, QRMI_IBM_QS_IAM_APIKEY="wrong-key-123456").status(),
        lambda: resource(qs, QRMI_IBM_QS_S3_BUCKET="no-such-bucket").task_start(sampler()),
    ):
        with pytest.raises(QrmiError) as caught:
            bad()
        errors.append(str(caught.value))
    qs.reserve(NAME)
    with pytest.raises(ServiceUnavailableError) as caught:
        resource(qs, QRMI_JOB_TIMEOUT_SECONDS="1").task_start(sampler())
    errors.append(str(caught.value))

    tokens = {r.headers.get("authorization", "").removeprefix("Bearer ") for r in qs.requests()}
    signatures = set()
    for post in qs.requests("/v1/jobs", "POST"):
        for part in post.json()["storage"].values():
            signatures |= set(parse_qs(urlsplit(part["presigned_url"]).query)["X-Amz-Signature"])
    secrets = {qs.apikey, qs.s3.secret_access_key, *tokens, *signatures}
    assert signatures and len(tokens) >= 2
    assert_no_secret(secrets, errors + log_texts(caplog.records))


def test_task_usage_is_the_jobs_quantum_nanoseconds_even_after_it_was_deleted(
    qs: QuantumSystemFake,
) -> None:
    qpu = resource(qs)
    task = run_to_completion(qpu, sampler(seconds=0.3))

    usage = qpu.task_usage(task)
    later = resource(qs).task_usage(task)  # a new object reads the job's record in the bucket

    assert task in qs.deleted_jobs
    assert usage is not None and usage.quantum_seconds is not None
    assert usage.quantum_seconds >= 0.3  # the fake held the job on its QPU that long
    assert later == usage
