"""What one IBM Quantum System task costs in requests to the bucket: the results are read once,
a completed job is recorded in its input's tags only, and the tags of another client's job are
read once however many sweeps see it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from ibm_helpers import decode, foreign_job, sampler, service_request

from qrmi.config import Settings
from qrmi.errors import ServiceUnavailableError
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.ibm_quantum_system import QuantumSystemFake

NAME = "ibm_perth"
LANES = 2


@pytest.fixture(scope="module")
def light_stack() -> Iterator[QuantumSystemFake]:
    """A fake whose bucket records its requests (``LightS3``), counting stored jobs as lanes."""
    fake = QuantumSystemFake(
        devices={NAME: "fake_perth"}, lanes=LANES, stored_jobs_hold_lanes=True, light_s3=True
    )
    with fake:
        yield fake


@pytest.fixture
def light(light_stack: QuantumSystemFake) -> Iterator[QuantumSystemFake]:
    """The module's fake; every job still stored is deleted after the test (lanes free)."""
    yield light_stack
    light_stack.s3.faults.reset()
    light_stack.wait_idle()
    for job in service_request(light_stack, "GET", "/v1/jobs").json()["jobs"]:
        service_request(light_stack, "DELETE", f"/v1/jobs/{job['id']}")


def resource(fake: QuantumSystemFake, **overrides: str) -> QuantumResource:
    return QuantumResource.from_config(NAME, "ibm-quantum-system", {**fake.settings, **overrides})


def _poll_until_final(qpu: QuantumResource, task: str) -> TaskStatus:
    deadline = time.monotonic() + 60
    while not (status := qpu.task_status(task)).is_final:
        assert time.monotonic() < deadline, f"task {task} still {status.name}"
        time.sleep(0.01)
    return status


def _wait_until_deleted(fake: QuantumSystemFake, task: str) -> None:
    deadline = time.monotonic() + 30  # the job leaves the service in the background
    while task not in fake.deleted_jobs:
        assert time.monotonic() < deadline, f"job {task} still on the service"
        time.sleep(0.01)


def test_polled_to_completion_then_read_the_results_are_read_from_the_bucket_once(
    light: QuantumSystemFake,
) -> None:
    qpu = resource(light)
    task = qpu.task_start(sampler(shots=16))
    light.s3.clear()

    assert _poll_until_final(qpu, task) == TaskStatus.Completed
    assert decode(qpu.task_result(task).value)[0].data.meas.num_shots == 16
    _wait_until_deleted(light, task)

    reads = [r.method for r in light.s3.requests(f"*/results_{task}.json") if r.method != "PUT"]
    assert reads == ["GET"]  # no HEAD first: the service's PUT is the only other request
    assert resource(light).task_status(task) == TaskStatus.Completed  # the record is there


def test_a_second_read_of_the_results_asks_the_bucket_again(light: QuantumSystemFake) -> None:
    qpu = resource(light)
    task = qpu.task_start(sampler(shots=16))
    assert qpu.task_wait(task, 60) == TaskStatus.Completed
    first = qpu.task_result(task).value
    light.s3.clear()

    assert qpu.task_result(task).value == first
    assert [r.method for r in light.s3.requests(f"*/results_{task}.json")] == ["GET"]


def test_every_sweep_skips_the_jobs_of_others_it_has_seen(light: QuantumSystemFake) -> None:
    foreign = [foreign_job(light, NAME, in_our_bucket=True) for _ in range(LANES)]
    qpu = resource(light, QRMI_JOB_TIMEOUT_SECONDS="2")
    light.s3.clear()

    with pytest.raises(ServiceUnavailableError, match="execution lanes"):
        qpu.task_start(sampler())

    assert len(light.requests("/v1/jobs", "GET")) >= 2  # swept before and after 429s
    for job_id in foreign:
        assert len(light.s3.requests(f"*/input_{job_id}.json", "GET")) == 1


def test_jobs_whose_input_is_not_in_our_bucket_are_never_asked_about(
    light: QuantumSystemFake,
) -> None:
    foreign = [foreign_job(light, NAME) for _ in range(LANES)]  # their inputs: elsewhere
    qpu = resource(light, QRMI_JOB_TIMEOUT_SECONDS="2")
    light.s3.clear()

    with pytest.raises(ServiceUnavailableError, match="execution lanes"):
        qpu.task_start(sampler())

    assert len(light.requests("/v1/jobs", "GET")) >= 2
    for job_id in foreign:
        assert light.s3.requests(f"*/input_{job_id}.json") == []
    assert not set(foreign) & light.deleted_jobs


def test_a_completed_job_is_recorded_by_its_input_tags_alone(light: QuantumSystemFake) -> None:
    qpu = resource(light)
    task = qpu.task_start(sampler(seconds=0.05))
    assert qpu.task_wait(task, 60) == TaskStatus.Completed
    usage = qpu.task_usage(task)

    assert task in light.deleted_jobs
    assert light.s3.requests(f"*/job_{task}.json", "PUT") == []
    other = resource(light)  # another process: reads the tags
    assert other.task_status(task) == TaskStatus.Completed
    assert usage is not None and other.task_usage(task) == usage
    assert other.task_result(task).value == qpu.task_result(task).value


def test_a_store_that_refuses_the_status_tags_gets_the_record_instead(
    light: QuantumSystemFake,
) -> None:
    qpu = resource(light)
    task = qpu.task_start(sampler(seconds=0.05))
    light.wait_idle()  # final on the service; nobody has asked yet
    refusal = b"<Error><Code>NotImplemented</Code><Message>no tagging</Message></Error>"
    light.s3.faults.fail(501, body=refusal, path=f"*/input_{task}.json", method="PUT")

    assert qpu.task_wait(task, 60) == TaskStatus.Completed

    assert task in light.deleted_jobs
    assert len(light.s3.requests(f"*/job_{task}.json", "PUT")) == 1
    assert resource(light).task_status(task) == TaskStatus.Completed


def test_the_status_asked_right_after_the_start_costs_no_request(
    light: QuantumSystemFake,
) -> None:
    qpu = resource(light)
    task = qpu.task_start(sampler(seconds=0.2))
    light.clear()

    assert qpu.task_status(task) == TaskStatus.Queued  # the service accepted it just now
    assert light.requests(f"/v1/jobs/{task}", "GET") == []
    assert qpu.task_status(task) == TaskStatus.Running  # the next call asks
    assert len(light.requests(f"/v1/jobs/{task}", "GET")) == 1


def test_a_status_asked_later_than_just_after_the_start_asks_the_service(
    light: QuantumSystemFake,
) -> None:
    qpu = resource(light)
    task = qpu.task_start(sampler(seconds=0.2))
    time.sleep(0.05)
    light.clear()

    assert qpu.task_status(task) == TaskStatus.Running
    assert len(light.requests(f"/v1/jobs/{task}", "GET")) == 1


@pytest.fixture(scope="module")
def roomy() -> Iterator[QuantumSystemFake]:
    """A fake whose finished jobs free their lanes: other clients' jobs may stay stored."""
    fake = QuantumSystemFake(devices={NAME: "fake_perth"}, lanes=LANES, light_s3=True)
    with fake:
        yield fake


def test_a_submission_does_not_wait_for_the_sweep_of_other_clients_jobs(
    roomy: QuantumSystemFake,
) -> None:
    foreign = [foreign_job(roomy, NAME, in_our_bucket=True) for _ in range(3)]
    roomy.s3.clear()  # the service's own reads of their (missing) inputs
    for job_id in foreign:  # answering each one's tags takes a second
        roomy.s3.faults.latency(1.0, path=f"*/input_{job_id}.json", method="GET")
    qpu = resource(roomy)

    task = qpu.task_start(sampler(shots=8))
    answered_by_then = [
        r.status
        for job_id in foreign
        for r in roomy.s3.requests(f"*/input_{job_id}.json", "GET")
        if r.status is not None
    ]

    assert answered_by_then == []  # the sweep goes on while the task runs
    assert qpu.task_wait(task, 60) == TaskStatus.Completed
    deadline = time.monotonic() + 30
    while len([r for r in roomy.s3.requests("*/input_*.json", "GET") if r.status]) < 3:
        assert time.monotonic() < deadline, "the sweep never read the other jobs' tags"
        time.sleep(0.05)
    assert not set(foreign) & roomy.deleted_jobs  # never someone else's job


def test_one_sweep_reads_the_owners_of_the_newest_jobs_only(
    roomy: QuantumSystemFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qrmi.backends.ibm_quantum_system as ibm

    monkeypatch.setattr(ibm, "MAX_OWNER_READS_PER_SWEEP", 2)
    oldest, *newest = [foreign_job(roomy, NAME, in_our_bucket=True) for _ in range(3)]
    backend = ibm.QuantumSystemBackend(NAME, Settings(NAME, roomy.settings, {}))
    roomy.s3.clear()

    backend._retire_finished_jobs()
    first = {job_id for job_id in (oldest, *newest) if _tags_read(roomy, job_id)}
    backend._retire_finished_jobs()  # the next sweep reads the one left

    assert first == set(newest)
    assert _tags_read(roomy, oldest) == 1 and all(_tags_read(roomy, j) == 1 for j in newest)


def _tags_read(fake: QuantumSystemFake, job_id: str) -> int:
    return len(fake.s3.requests(f"*/input_{job_id}.json", "GET"))


def test_a_sweep_gives_up_on_a_silent_bucket_within_its_deadline(
    roomy: QuantumSystemFake, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    import qrmi.backends.ibm_quantum_system as ibm

    monkeypatch.setattr(ibm, "SWEEP_DEADLINE_SECONDS", 1.0)
    job_id = foreign_job(roomy, NAME, in_our_bucket=True)
    backend = ibm.QuantumSystemBackend(NAME, Settings(NAME, roomy.settings, {}))
    # The bucket takes 30 s to answer; its own per-try timeout is 60 s.
    roomy.s3.faults.latency(30.0, path=f"*/input_{job_id}.json", method="GET")
    try:
        sweep = threading.Thread(target=backend._retire_finished_jobs, daemon=True)
        sweep.start()
        sweep.join(15)
        assert not sweep.is_alive()  # a program's exit would wait for it
    finally:
        roomy.s3.faults.reset()
    assert "could not delete the finished jobs of ibm_perth" in caplog.text
