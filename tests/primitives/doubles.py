"""A scripted QRMI resource for the primitives' tests.

It is not a ``qrmi.QuantumResource``: it only offers the calls of ``QuantumResourceProtocol``, so
tests through it exercise the primitives' path for arbitrary protocol objects (their own polling
loop). It records every payload, runs circuits on Qiskit's reference ``StatevectorSampler`` /
``StatevectorEstimator`` after an OpenQASM 3 round trip, and encodes results with
qiskit-ibm-runtime's ``RuntimeEncoder``, as IBM services do. Each task's statuses can be
scripted to exercise waiting, failure and cancellation.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from qrmi.errors import TaskNotReadyError
from qrmi.models import (
    Payload,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    Target,
    TaskResult,
    TaskStatus,
)


@dataclass
class ScriptedTask:
    payload: Any
    statuses: Iterator[TaskStatus]
    current: TaskStatus = TaskStatus.Queued
    stopped: bool = False
    logs: str = ""


@dataclass(eq=False)
class ScriptedResource:
    """A protocol-only resource. ``script`` is the status sequence of the next tasks (the last
    one repeats); by default a task is Queued, Running, then Completed."""

    name: str = "scripted"
    script: list[TaskStatus] = field(
        default_factory=lambda: [TaskStatus.Queued, TaskStatus.Running, TaskStatus.Completed]
    )
    logs: str = "step 1 ok\nstep 2: boom (simulated failure)"
    target_json: str = '{"configuration": null, "properties": null}'
    tasks: dict[str, ScriptedTask] = field(default_factory=dict)
    status_calls: int = 0
    _ids: Iterator[int] = field(default_factory=itertools.count)

    # ----- description ------------------------------------------------------------------
    def resource_id(self) -> str:
        return self.name

    def resource_type(self) -> ResourceType | str:
        return "scripted"

    def is_accessible(self) -> bool:
        return True

    def status(self) -> ResourceStatus:
        return ResourceStatus(ResourceStatusCode.Online)

    def acquire(self) -> str:
        return "token"

    def release(self, acquisition_token: str) -> None:
        return None

    def target(self) -> Target:
        return Target(self.target_json)

    def metadata(self) -> dict[str, str]:
        return {"backend_name": self.name}

    # ----- tasks ------------------------------------------------------------------------
    def task_start(self, payload: Payload) -> str:
        assert isinstance(payload, Payload.QiskitPrimitive)
        task_id = f"task-{next(self._ids)}"
        self.tasks[task_id] = ScriptedTask(payload, _repeat_last(self.script), logs=self.logs)
        return task_id

    def task_status(self, task_id: str) -> TaskStatus:
        self.status_calls += 1
        task = self.tasks[task_id]
        if not task.current.is_final:
            task.current = next(task.statuses)
        return task.current

    def task_stop(self, task_id: str) -> None:
        task = self.tasks[task_id]
        task.stopped = True
        if not task.current.is_final:
            task.current = TaskStatus.Cancelled

    def task_logs(self, task_id: str) -> str:
        return self.tasks[task_id].logs

    def task_result(self, task_id: str) -> TaskResult:
        task = self.tasks[task_id]
        if task.current != TaskStatus.Completed:
            raise TaskNotReadyError(f"task {task_id} is {task.current.name}")
        return TaskResult(_run(task.payload))

    # ----- for assertions ---------------------------------------------------------------
    def last_input(self) -> dict[str, Any]:
        payload = list(self.tasks.values())[-1].payload
        data: dict[str, Any] = json.loads(payload.input)
        data["__program_id__"] = payload.program_id
        return data


def _repeat_last(script: list[TaskStatus]) -> Iterator[TaskStatus]:
    yield from script
    while True:
        yield script[-1]


def _run(payload: Any) -> str:
    """Execute the primitive input on Qiskit's reference primitives; RuntimeEncoder JSON."""
    from qiskit import qasm3
    from qiskit.primitives import StatevectorEstimator, StatevectorSampler
    from qiskit_ibm_runtime import RuntimeEncoder

    params = json.loads(payload.input)
    if payload.program_id == "sampler":
        pubs = [(qasm3.loads(q), v, s) for q, v, s in params["pubs"]]
        result = StatevectorSampler(seed=1234).run(pubs).result()
    else:
        pubs = [(qasm3.loads(q), obs, v or None, p) for q, obs, v, p in params["pubs"]]
        result = StatevectorEstimator(seed=1234).run(pubs).result()
    return json.dumps(result, cls=RuntimeEncoder)
