"""RuntimeJobV2 over a protocol-only resource: status, waiting, failures, no destruction on GC."""

from __future__ import annotations

import gc
import warnings

import pytest
from qiskit.circuit import QuantumCircuit
from qiskit.primitives import PrimitiveResult
from qiskit.providers import JobStatus

import qrmi.primitives.runtime_job_v2 as runtime_job_v2
from qrmi.errors import ServiceError, TaskNotReadyError, TaskTimeoutError
from qrmi.models import TaskResult, TaskStatus
from qrmi.primitives import RuntimeJobV2, TaskFailedError
from qrmi.primitives.ibm import SamplerV2

from .doubles import ScriptedResource


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


def test_result_waits_then_decodes_the_primitive_result() -> None:
    resource = ScriptedResource(script=[TaskStatus.Queued] * 3 + [TaskStatus.Completed])
    job = SamplerV2(resource).run([bell()], shots=200)
    result = job.result(timeout=30)
    assert isinstance(result, PrimitiveResult)
    counts = result[0].data.meas.get_counts()
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 200
    assert job.status() == JobStatus.DONE and job.done() and job.in_final_state()
    assert job.result() is result  # decoded once


def test_status_maps_and_is_cached_once_final() -> None:
    resource = ScriptedResource(script=[TaskStatus.Queued, TaskStatus.Running, TaskStatus.Failed])
    job = SamplerV2(resource).run([bell()])
    assert job.status() == JobStatus.QUEUED
    assert job.running()  # each call asks again while the task is not final
    assert job.status() == JobStatus.ERROR and job.errored() and job.in_final_state()
    calls = resource.status_calls
    assert job.status() == JobStatus.ERROR and not job.done() and not job.cancelled()
    assert resource.status_calls == calls


def test_failed_task_raises_with_its_logs() -> None:
    resource = ScriptedResource(script=[TaskStatus.Running, TaskStatus.Failed])
    job = SamplerV2(resource).run([bell()])
    with pytest.raises(TaskFailedError, match="failed") as info:
        job.result(timeout=30)
    assert "step 2: boom (simulated failure)" in str(info.value)
    assert info.value.status == TaskStatus.Failed
    assert info.value.logs == resource.logs
    assert isinstance(info.value, TaskNotReadyError)  # what the reference's callers catch


def test_cancelled_task_raises() -> None:
    resource = ScriptedResource(script=[TaskStatus.Running])
    job = SamplerV2(resource).run([bell()])
    job.cancel()
    assert resource.tasks[job.job_id()].stopped
    assert job.status() == JobStatus.CANCELLED and job.cancelled()
    with pytest.raises(TaskFailedError, match="was cancelled"):
        job.result(timeout=30)


def test_timeout_raises_and_the_task_keeps_running() -> None:
    resource = ScriptedResource(script=[TaskStatus.Running])
    job = SamplerV2(resource).run([bell()])
    with pytest.raises(TaskTimeoutError, match="still Running after 0.2 s") as info:
        job.result(timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    task = resource.tasks[job.job_id()]
    assert not task.stopped and task.current == TaskStatus.Running
    assert resource.status_calls > 3  # polled several times, not once a second


def test_logs_and_job_id() -> None:
    resource = ScriptedResource()
    job = SamplerV2(resource).run([bell()])
    assert job.job_id() in resource.tasks
    assert job.logs() == resource.logs
    assert job.job_id() in repr(job)


def test_dropping_a_job_leaves_the_task_and_result_intact() -> None:
    resource = ScriptedResource(script=[TaskStatus.Completed])
    job = SamplerV2(resource).run([bell()], shots=64)
    task_id = job.job_id()
    del job
    gc.collect()
    assert not resource.tasks[task_id].stopped
    again = RuntimeJobV2(resource, task_id)
    assert sum(again.result(timeout=30)[0].data.meas.get_counts().values()) == 64


def test_delete_job_is_accepted_ignored_and_warned_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime_job_v2, "_delete_job_warned", False)
    resource = ScriptedResource(script=[TaskStatus.Running])
    task_id = resource.task_start(_payload())
    with pytest.warns(UserWarning, match="delete_job=True. is ignored"):
        job = RuntimeJobV2(resource, task_id, delete_job=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RuntimeJobV2(resource, task_id, delete_job=True)
    del job
    gc.collect()
    assert not resource.tasks[task_id].stopped


def test_a_result_that_is_not_a_primitive_result_is_a_service_error() -> None:
    class Odd(ScriptedResource):
        def task_result(self, task_id: str) -> TaskResult:
            return TaskResult('{"counts": {"00": 1}}')

    resource = Odd(script=[TaskStatus.Completed])
    job = SamplerV2(resource).run([bell()])
    with pytest.raises(ServiceError, match="not an encoded PrimitiveResult"):
        job.result(timeout=30)


def _payload() -> object:
    from qrmi.models import Payload

    return Payload.QiskitPrimitive(input='{"pubs": [], "version": 2}', program_id="sampler")
