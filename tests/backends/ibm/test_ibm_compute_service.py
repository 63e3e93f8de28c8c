"""The ibm-quantum-compute-service backend (and its legacy alias) against the QCS fake."""

from __future__ import annotations

import logging

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

from qrmi.errors import ConfigError, QrmiError, TaskNotReadyError
from qrmi.models import Payload, ResourceStatusCode, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.ibm_compute_service import ComputeServiceFake

NAME = "ibm_perth"
TYPE = "ibm-quantum-compute-service"


def resource(fake: ComputeServiceFake, **overrides: str) -> QuantumResource:
    settings = {**fake.settings, **overrides}
    return QuantumResource.from_config(NAME, TYPE, {k: v for k, v in settings.items() if v})


def test_sampler_and_estimator_in_a_session(qcs: ComputeServiceFake) -> None:
    qpu = resource(qcs)
    session = qpu.acquire()
    try:
        sampled = run_to_completion(qpu, sampler(shots=50))
        counts = decode(qpu.task_result(sampled).value)[0].data.meas
        estimated = run_to_completion(qpu, estimator())
        evs = decode(qpu.task_result(estimated).value)[0].data.evs
    finally:
        qpu.release(session)

    assert counts.num_shots == 50
    assert list(evs) == pytest.approx([1.0, 1.0], abs=0.1)
    jobs = qcs.requests("/api/v1/jobs", "POST")[-2:]
    assert [r.json()["session_id"] for r in jobs] == [session, session]
    assert qpu.metadata() == {"backend_name": NAME}


def test_release_closes_every_session_acquire_opened(qcs: ComputeServiceFake) -> None:
    before = qcs.open_session_count
    first, second = resource(qcs), resource(qcs, QRMI_IBM_QCS_SESSION_MODE="batch")
    tokens = [first.acquire(), second.acquire(), first.acquire()]

    assert len(set(tokens)) == 3
    assert qcs.open_session_count == before + 3
    assert qcs.session(tokens[1]).mode == "batch"  # type: ignore[union-attr]
    for token in tokens:
        first.release(token)
    first.release(tokens[0])

    assert qcs.open_session_count == before


def test_release_with_pending_jobs_cancels_them(qcs: ComputeServiceFake) -> None:
    qpu = resource(qcs)
    session = qpu.acquire()
    qcs.queue.hold()
    task = qpu.task_start(sampler())

    qpu.release(session)

    assert qcs.requests(f"/api/v1/sessions/{session}/close", "DELETE")
    assert qpu.task_status(task) == TaskStatus.Cancelled
    assert qcs.session(session).state == "closed"  # type: ignore[union-attr]


def test_a_healthy_configured_session_is_reused(qcs: ComputeServiceFake) -> None:
    opened = resource(qcs).acquire()
    qpu = resource(qcs, QRMI_JOB_ACQUISITION_TOKEN=opened)

    assert qpu.acquire() == opened
    task = run_to_completion(qpu, sampler())
    assert qcs.requests("/api/v1/jobs", "POST")[-1].json()["session_id"] == opened
    qpu.release(opened)
    closed = resource(qcs, QRMI_IBM_QCS_SESSION_ID=opened)
    assert closed.acquire() != opened
    assert qpu.task_status(task) == TaskStatus.Completed


def test_invalid_session_mode_names_the_valid_ones(qcs: ComputeServiceFake) -> None:
    with pytest.raises(ConfigError, match="dedicated and batch"):
        resource(qcs, QRMI_IBM_QCS_SESSION_MODE="exclusive")


def test_input_is_passed_through_untouched(qcs: ComputeServiceFake) -> None:
    payload = sampler(supports_qiskit=True, options={"experimental": {"x": 1.50}})
    qpu = resource(qcs, QRMI_JOB_TIMEOUT_SECONDS="300")
    task = run_to_completion(qpu, payload)

    assert isinstance(payload, Payload.QiskitPrimitive)
    post = qcs.requests("/api/v1/jobs", "POST")[-1]
    assert payload.input in post.text
    assert post.json()["cost"] == 300
    assert qcs.submitted_params(task)["supports_qiskit"] is True


def test_every_request_carries_the_api_version(qcs: ComputeServiceFake) -> None:
    qpu = resource(qcs)
    qpu.status()
    qpu.target()

    requests = qcs.requests("/api/v1/*")
    assert requests and all(r.headers.get("ibm-api-version") for r in requests)


def test_status_reports_the_queue(qcs: ComputeServiceFake) -> None:
    qpu = resource(qcs)
    qcs.queue.hold()
    tasks = [qpu.task_start(sampler()) for _ in range(2)]
    try:
        status = qpu.status()
    finally:
        for task in tasks:
            qpu.task_stop(task)

    assert status.status == ResourceStatusCode.Online
    assert status.pending_job_count == 2
    assert all(qpu.task_status(t) == TaskStatus.Cancelled for t in tasks)


def test_a_job_that_ran_too_long_is_cancelled(qcs: ComputeServiceFake) -> None:
    qpu = resource(qcs, QRMI_IBM_QCS_TIMEOUT_SECONDS="1")
    task = qpu.task_start(sampler(seconds=1.5))

    assert qpu.task_wait(task, 60) == TaskStatus.Cancelled
    assert qcs.requests(f"/api/v1/jobs/{task}", "GET")[-1].status == 200
    with pytest.raises(TaskNotReadyError, match="Ran too long"):
        qpu.task_result(task)


def test_failed_job_reports_the_reason(qcs: ComputeServiceFake) -> None:
    qpu = resource(qcs)
    task = qpu.task_start(broken_sampler())

    assert qpu.task_wait(task, 60) == TaskStatus.Failed
    with pytest.raises(TaskNotReadyError, match="code: 1517"):
        qpu.task_result(task)


def test_stop_never_deletes_a_completed_job(qcs: ComputeServiceFake) -> None:
    qpu = resource(qcs)
    task = run_to_completion(qpu, sampler())
    before = qpu.task_result(task).value

    qpu.task_stop(task)

    assert qcs.requests(f"/api/v1/jobs/{task}*", "DELETE") == []
    assert resource(qcs).task_result(task).value == before


def test_token_refresh_503_429_and_drops_are_survived(qcs: ComputeServiceFake) -> None:
    qpu = resource(qcs)
    task = qpu.task_start(sampler(seconds=0.3))
    qcs.expire_tokens()
    qcs.faults.fail(503, times=2, path=f"/api/v1/jobs/{task}")
    qcs.faults.throttle(429, times=1, path=f"/api/v1/jobs/{task}", retry_after=0)
    qcs.faults.drop_connections(times=1, path=f"/api/v1/jobs/{task}")

    assert qpu.task_wait(task, 60) == TaskStatus.Completed
    statuses = [r.status for r in qcs.requests(f"/api/v1/jobs/{task}", "GET")]
    assert {401, 503, 429} <= set(statuses)


def test_legacy_type_reads_the_old_prefix_and_warns(
    qcs: ComputeServiceFake, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.warns(DeprecationWarning, match="ibm-quantum-compute-service"):
        qpu = QuantumResource.from_config(
            NAME, "qiskit-runtime-service", qcs.settings_for("QRMI_IBM_QRS_")
        )
    assert "QRMI_IBM_QCS_" in caplog.text
    assert qpu.is_accessible() is True
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError, match="QRMI_IBM_QRS_"):
        QuantumResource.from_config(NAME, "qiskit-runtime-service", qcs.settings)


def test_no_credential_in_messages_or_logs(
    qcs: ComputeServiceFake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    qpu = resource(qcs)
    session = qpu.acquire()
    run_to_completion(qpu, sampler())
    qcs.expire_tokens()
    qpu.release(session)
    errors = []
    for bad in (
        lambda: resource(qcs, QRMI_IBM_QCS_IAM_APIKEY="wrong-key-123456").status(),
        lambda: qpu.task_logs("no-such-job"),
    ):
        with pytest.raises(QrmiError) as caught:
            bad()
        errors.append(str(caught.value))

    tokens = {r.headers.get("authorization", "").removeprefix("Bearer ") for r in qcs.requests()}
    assert len(tokens) >= 2
    assert_no_secret({qcs.apikey, "wrong-key-123456", *tokens}, errors + log_texts(caplog.records))


def test_task_usage_reads_the_jobs_metrics(qcs: ComputeServiceFake) -> None:
    qpu = resource(qcs)
    task = run_to_completion(qpu, sampler(seconds=0.3))

    usage = qpu.task_usage(task)

    job = qcs.queue.get(task)
    assert job is not None and job.started_at is not None and job.finished_at is not None
    assert usage is not None and usage.quantum_seconds is not None
    assert usage.quantum_seconds == round(job.finished_at - job.started_at, 3)
    assert usage.quantum_seconds >= 0.3
    assert usage.running_seconds == pytest.approx(job.finished_at - job.started_at, abs=1e-5)
    (metrics,) = qcs.requests(f"/api/v1/jobs/{task}/metrics", "GET")
    assert metrics.headers["service-crn"]


def test_task_usage_of_a_job_still_queued_is_pending(qcs: ComputeServiceFake) -> None:
    qcs.queue.hold()
    qpu = resource(qcs)
    task = qpu.task_start(sampler())

    usage = qpu.task_usage(task)

    assert usage is None
