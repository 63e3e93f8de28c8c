"""RuntimeJobV2 on the local emulator: timeouts, failures with logs, jobs going out of scope."""

from __future__ import annotations

import gc

import pytest
from qiskit.circuit import QuantumCircuit
from qiskit.providers import JobStatus

from qrmi import QuantumResource, TaskStatus, TaskTimeoutError
from qrmi.primitives import RuntimeJobV2, TaskFailedError
from qrmi.primitives.ibm import SamplerV2

from .conftest import MakeEmulator

TIMEOUT = 120


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


def slow_sampler(resource: QuantumResource, seconds: float) -> SamplerV2:
    """A sampler whose tasks take at least ``seconds`` of emulated QPU time."""
    run_options = {"emulator": {"min_duration_seconds": seconds}}
    return SamplerV2(resource, options={"run_options": run_options})


def test_timeout_raises_and_leaves_the_task_running(emulator: QuantumResource) -> None:
    job = slow_sampler(emulator, 30).run([bell()])
    with pytest.raises(TaskTimeoutError, match="after 0.3 s"):
        job.result(timeout=0.3)
    assert emulator.task_status(job.job_id()) in (TaskStatus.Queued, TaskStatus.Running)
    job.cancel()
    assert job.status() == JobStatus.CANCELLED
    with pytest.raises(TaskFailedError, match="was cancelled"):
        job.result(timeout=TIMEOUT)


def test_failed_task_raises_with_the_emulator_logs(make_emulator: MakeEmulator) -> None:
    starved = make_emulator("starved", QRMI_LOCAL_TASK_MEMORY_MB="1")  # fails while running
    job = SamplerV2(starved).run([bell()])
    with pytest.raises(TaskFailedError, match="memory budget of 1 MiB") as info:
        job.result(timeout=TIMEOUT)
    assert info.value.status == TaskStatus.Failed
    assert "QRMI_LOCAL_TASK_MEMORY_MB" in info.value.logs
    assert job.errored() and job.status() == JobStatus.ERROR


def test_a_job_going_out_of_scope_leaves_task_and_result_intact(
    emulator: QuantumResource,
) -> None:
    def submit() -> str:
        job = slow_sampler(emulator, 0.3).run([bell()], shots=123)
        return job.job_id()  # the job object is dropped here, while the task runs

    task_id = submit()
    gc.collect()
    again = RuntimeJobV2(emulator, task_id)
    counts = again.result(timeout=TIMEOUT)[0].data.meas.get_counts()
    assert sum(counts.values()) == 123
    del again
    gc.collect()
    assert emulator.task_status(task_id) == TaskStatus.Completed
    assert emulator.task_result(task_id).value  # still readable


def test_cancel_after_completion_keeps_the_result(emulator: QuantumResource) -> None:
    job = SamplerV2(emulator).run([bell()], shots=50)
    result = job.result(timeout=TIMEOUT)
    job.cancel()
    assert job.done()
    assert RuntimeJobV2(emulator, job.job_id()).result(TIMEOUT)[0].data.meas.num_shots == 50
    assert result[0].data.meas.num_shots == 50
