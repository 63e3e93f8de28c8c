"""A final IBM Quantum System job is answered from memory: its state never changes again."""

from __future__ import annotations

import os

from ibm_helpers import decode, run_to_completion, sampler

from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.ibm_quantum_system import QuantumSystemFake


def resource(fake: QuantumSystemFake) -> QuantumResource:
    return QuantumResource.from_config("ibm_perth", "ibm-quantum-system", fake.settings)


def test_status_and_result_of_a_retired_job_ask_the_service_nothing(
    qs: QuantumSystemFake,
) -> None:
    qpu = resource(qs)
    task = run_to_completion(qpu, sampler(shots=32))
    assert task in qs.deleted_jobs
    qs.clear()

    assert qpu.task_status(task) == TaskStatus.Completed
    assert decode(qpu.task_result(task).value)[0].data.meas.num_shots == 32

    assert qs.requests(f"/v1/jobs/{task}") == []


def test_another_object_still_reads_the_recorded_state_then_remembers_it(
    qs: QuantumSystemFake,
) -> None:
    task = run_to_completion(resource(qs), sampler())
    other = resource(qs)
    qs.clear()

    assert other.task_status(task) == TaskStatus.Completed
    assert other.task_status(task) == TaskStatus.Completed

    assert len(qs.requests(f"/v1/jobs/{task}", "GET")) == 1  # 404, then the bucket's record


def test_a_running_job_is_asked_every_time(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    task = qpu.task_start(sampler(seconds=30))
    qpu.task_status(task)  # just after the start: answered without a request
    qs.clear()
    try:
        assert qpu.task_status(task) in (TaskStatus.Queued, TaskStatus.Running)
        assert qpu.task_status(task) in (TaskStatus.Queued, TaskStatus.Running)
        assert len(qs.requests(f"/v1/jobs/{task}", "GET")) == 2
    finally:
        qpu.task_stop(task)
    assert qpu.task_status(task) == TaskStatus.Cancelled


def test_the_job_list_is_swept_before_the_first_submission_not_before_every_one(
    qs: QuantumSystemFake,
) -> None:
    qpu = resource(qs)
    qs.clear()

    for _ in range(3):
        run_to_completion(qpu, sampler(shots=8))

    assert len(qs.requests("/v1/jobs", "GET")) == 1
    assert len(qs.requests("/v1/jobs", "POST")) == 3


def test_inputs_go_up_tagged_with_their_owner_and_results_come_back(
    qs: QuantumSystemFake,
) -> None:
    qpu = resource(qs)
    task = run_to_completion(qpu, sampler(shots=8))

    tagging = qs.s3.client().get_object_tagging(Bucket=qs.s3.bucket, Key=f"input_{task}.json")
    tags = {tag["Key"]: tag["Value"] for tag in tagging["TagSet"]}
    assert tags["qrmi:uid"] == str(os.getuid())
    assert tags["qrmi:program_type"] == "sampler"
    assert decode(qpu.task_result(task).value)[0].data.meas.num_shots == 8


def test_a_retired_job_gets_its_final_status_as_input_tags(qs: QuantumSystemFake) -> None:
    import time

    task = run_to_completion(resource(qs), sampler(shots=8))
    client = qs.s3.client()
    deadline = time.monotonic() + 30  # the tags are written in the background
    while True:
        tagging = client.get_object_tagging(Bucket=qs.s3.bucket, Key=f"input_{task}.json")
        tags = {tag["Key"]: tag["Value"] for tag in tagging["TagSet"]}
        if "qrmi:status" in tags or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert tags["qrmi:status"] == "Completed"
    assert tags["qrmi:uid"] == str(os.getuid())
