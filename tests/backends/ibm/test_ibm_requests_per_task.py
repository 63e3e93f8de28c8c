"""What one IBM Quantum System task costs in requests to the bucket: the results are read once,
and the tags of another client's job are read once however many sweeps see it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from ibm_helpers import decode, sampler

from qrmi.errors import ServiceUnavailableError
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.ibm_quantum_system import QuantumSystemFake

NAME = "ibm_perth"
LANES = 2


@pytest.fixture(scope="module")
def light() -> Iterator[QuantumSystemFake]:
    """A fake whose bucket records its requests (``LightS3``), counting stored jobs as lanes."""
    fake = QuantumSystemFake(
        devices={NAME: "fake_perth"}, lanes=LANES, stored_jobs_hold_lanes=True, light_s3=True
    )
    with fake:
        yield fake


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


def _foreign_job(fake: QuantumSystemFake) -> str:
    """A job of another client (its input is not in our bucket), run to its end."""
    job_id = str(uuid.uuid4())
    url = "http://127.0.0.1:9/unused"
    body = {
        "id": job_id,
        "backend": NAME,
        "program_id": "sampler",
        "timeout_secs": 60,
        "storage": {
            p: {"type": "s3_compatible", "presigned_url": url} for p in ("input", "results", "logs")
        },
    }
    headers = {
        "Authorization": f"Bearer {fake.iam.issuer.issue().token}",
        "Service-CRN": fake.crn,
    }
    answer = httpx.post(f"{fake.url}/v1/jobs", json=body, headers=headers, timeout=30)
    assert answer.status_code == 204
    fake.wait_idle()
    return job_id


def test_every_sweep_skips_the_jobs_of_others_it_has_seen(light: QuantumSystemFake) -> None:
    foreign = [_foreign_job(light) for _ in range(LANES)]
    qpu = resource(light, QRMI_JOB_TIMEOUT_SECONDS="2")
    light.s3.clear()

    with pytest.raises(ServiceUnavailableError, match="execution lanes"):
        qpu.task_start(sampler())

    assert len(light.requests("/v1/jobs", "GET")) >= 2  # swept before and after 429s
    for job_id in foreign:
        assert len(light.s3.requests(f"*/input_{job_id}.json", "GET")) == 1
