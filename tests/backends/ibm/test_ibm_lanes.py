"""IBM Quantum System execution lanes: finished jobs never keep them blocked.

The fake runs in the mode of IBM's own Quantum System API simulator, where every job the service
stores (finished or not) holds one of the backend's lanes until a client deletes it. Before
pyqrmi deleted finished jobs, the third job on a two-lane backend got 429 (code 1232) until
its deadline while ``status()`` reported every lane free.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from ibm_helpers import decode, foreign_job, run_to_completion, sampler, service_request

from qrmi.errors import ServiceUnavailableError
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.ibm_quantum_system import QuantumSystemFake

NAME = "ibm_perth"
LANES = 2


@pytest.fixture(scope="module")
def stack() -> Iterator[QuantumSystemFake]:
    fake = QuantumSystemFake(devices={NAME: "fake_perth"}, lanes=LANES, stored_jobs_hold_lanes=True)
    with fake:
        yield fake


@pytest.fixture
def qs(stack: QuantumSystemFake) -> Iterator[QuantumSystemFake]:
    yield stack
    stack.faults.reset()
    stack.wait_idle()
    for job_id in [job["id"] for job in service_request(stack, "GET", "/v1/jobs").json()["jobs"]]:
        service_request(stack, "DELETE", f"/v1/jobs/{job_id}")


def resource(fake: QuantumSystemFake, **overrides: str) -> QuantumResource:
    return QuantumResource.from_config(NAME, "ibm-quantum-system", {**fake.settings, **overrides})


def test_twenty_jobs_in_a_row_on_one_backend(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    for _ in range(20):
        task = run_to_completion(qpu, sampler(shots=16))
        assert decode(qpu.task_result(task).value)[0].data.meas.num_shots == 16

    assert qs.requests("/v1/jobs", "POST") and all(
        r.status == 204 for r in qs.requests("/v1/jobs", "POST")
    )
    status = qpu.status()
    assert status.capacity is not None and status.capacity.available_slots == LANES


def test_unobserved_finished_jobs_are_deleted_before_the_next_submission(
    qs: QuantumSystemFake,
) -> None:
    qpu = resource(qs)
    abandoned = [qpu.task_start(sampler()) for _ in range(LANES)]  # their program died
    qs.wait_idle()
    held = qpu.status()
    assert held.capacity is not None and held.capacity.available_slots == 0 and held.busy

    task = run_to_completion(qpu, sampler())

    assert set(abandoned) <= qs.deleted_jobs
    assert [r.status for r in qs.requests("/v1/jobs", "POST")][-1] == 204
    for old in abandoned:
        assert resource(qs).task_status(old) == TaskStatus.Completed
        assert resource(qs).task_result(old).value
    assert resource(qs).task_result(task).value


def test_lanes_held_by_another_client_fail_with_lanes_full(qs: QuantumSystemFake) -> None:
    foreign = [foreign_job(qs, NAME) for _ in range(LANES)]
    qpu = resource(qs, QRMI_JOB_TIMEOUT_SECONDS="2")

    status = qpu.status()
    assert status.capacity is not None and status.capacity.available_slots == 0
    with pytest.raises(ServiceUnavailableError, match="execution lanes of ibm_perth") as caught:
        qpu.task_start(sampler())

    assert "1232" in str(caught.value) and "rate" not in str(caught.value)
    assert len(qs.requests("/v1/jobs", "POST")) >= LANES + 2
    assert not set(foreign) & qs.deleted_jobs  # never someone else's job


def test_the_fake_answers_lanes_full_with_the_service_code(qs: QuantumSystemFake) -> None:
    for _ in range(LANES):
        foreign_job(qs, NAME)

    answer = service_request(qs, "POST", "/v1/jobs", json=json.loads(_job_body()))

    assert answer.status_code == 429
    assert answer.json()["errors"][0]["code"] == "1232"
    assert "execution lanes" in answer.json()["errors"][0]["message"]


def _job_body() -> str:
    url = "http://127.0.0.1:9/unused"
    storage = {
        p: {"type": "s3_compatible", "presigned_url": url} for p in ("input", "results", "logs")
    }
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "backend": NAME,
            "program_id": "sampler",
            "timeout_secs": 60,
            "storage": storage,
        }
    )
