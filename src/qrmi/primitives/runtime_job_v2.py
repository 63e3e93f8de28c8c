"""``RuntimeJobV2``: the handle ``SamplerV2.run`` and ``EstimatorV2.run`` return.

Differences from the reference, on purpose:

* ``result()`` polls adaptively (first after a few milliseconds, backing off to about once a
  second) instead of every second, so a short task is returned as soon as it ends; it takes a
  ``timeout``.
* A failed or cancelled task raises :class:`TaskFailedError` with the task's logs, instead of a
  bare "not ready" error.
* Nothing happens when the object is garbage collected. The reference stopped (on IBM Direct
  Access: deleted) the task in ``__del__``, so results vanished when a job object went out of
  scope. ``delete_job`` is still accepted and ignored with a warning; call :meth:`cancel` to stop
  a task.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

from qiskit.primitives import BasePrimitiveJob
from qiskit.providers import JobStatus

from qrmi.backends.base import poll_intervals
from qrmi.errors import QrmiError, ServiceError, TaskNotReadyError, TaskTimeoutError
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource

if TYPE_CHECKING:
    from qiskit.primitives import PrimitiveResult

    from qrmi.protocol import QuantumResourceProtocol

__all__ = ["STATUS_MAP", "QRMITaskJob", "RuntimeJobV2", "TaskFailedError"]

#: QRMI task status to Qiskit job status (the reference's table).
STATUS_MAP: dict[TaskStatus, JobStatus] = {
    TaskStatus.Queued: JobStatus.QUEUED,
    TaskStatus.Running: JobStatus.RUNNING,
    TaskStatus.Completed: JobStatus.DONE,
    TaskStatus.Failed: JobStatus.ERROR,
    TaskStatus.Cancelled: JobStatus.CANCELLED,
}

_delete_job_warned = False
_warn_lock = threading.Lock()


class TaskFailedError(TaskNotReadyError):
    """The task ended ``Failed`` or ``Cancelled``, so it has no result.

    ``status`` is the final :class:`TaskStatus`; ``logs`` the task's logs (empty if unavailable).
    """

    def __init__(self, message: str, *, status: TaskStatus, logs: str) -> None:
        super().__init__(message)
        self.status = status
        self.logs = logs


class QRMITaskJob(BasePrimitiveJob):  # type: ignore[misc]
    """A Qiskit job answered from one QRMI task (``self._qrmi``, ``self._job_id``): its status
    calls and ``cancel()``, the task's status being asked again only while it is not final."""

    _qrmi: QuantumResourceProtocol
    _last_status: TaskStatus | None = None

    # ----- status -------------------------------------------------------------------------

    def task_status(self) -> TaskStatus:
        """The QRMI status of the task; asked once more only while it is not final."""
        if self._last_status is None or not self._last_status.is_final:
            self._last_status = self._qrmi.task_status(self._job_id)
        return self._last_status

    def status(self) -> JobStatus:
        """The Qiskit ``JobStatus`` of the task (cached once final)."""
        return STATUS_MAP[self.task_status()]

    def done(self) -> bool:
        """True when the task completed successfully."""
        return self.task_status() == TaskStatus.Completed

    def running(self) -> bool:
        """True while the task runs."""
        return self.task_status() == TaskStatus.Running

    def cancelled(self) -> bool:
        """True when the task was cancelled."""
        return self.task_status() == TaskStatus.Cancelled

    def errored(self) -> bool:
        """True when the task failed."""
        return self.task_status() == TaskStatus.Failed

    def in_final_state(self) -> bool:
        """True once the task is done, failed or cancelled."""
        return self.task_status().is_final

    # ----- actions ------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the task if it has not finished; a finished task's result is kept."""
        self._qrmi.task_stop(self._job_id)
        self._last_status = None


class RuntimeJobV2(QRMITaskJob):
    """A primitive task running on a QRMI resource.

    Args:
        qrmi: the resource the task runs on.
        job_id: the QRMI task id.
        delete_job: accepted for compatibility with the reference and ignored (with a warning
            once per process): a job object never stops or deletes its task when collected.
    """

    def __init__(
        self, qrmi: QuantumResourceProtocol, job_id: str, *, delete_job: bool = False
    ) -> None:
        super().__init__(job_id)
        self._qrmi = qrmi
        self._last_status: TaskStatus | None = None
        self._result: PrimitiveResult | None = None
        if delete_job:
            _warn_delete_job_ignored()

    def __repr__(self) -> str:
        return f"<RuntimeJobV2 {self._job_id!r} on {_resource_name(self._qrmi)!r}>"

    def logs(self) -> str:
        """The task's logs."""
        return self._qrmi.task_logs(self._job_id)

    def result(self, timeout: float | None = None) -> PrimitiveResult:
        """Wait for the task and return its decoded ``PrimitiveResult``.

        Args:
            timeout: seconds to wait at most; ``None`` waits until the task ends (the
                workload manager's time limit still applies).

        Raises:
            TaskTimeoutError: the task did not end within ``timeout`` (it keeps running).
            TaskFailedError: the task failed or was cancelled; the message carries its logs.
            ServiceError: the result is not an encoded ``PrimitiveResult``.
        """
        if self._result is None:
            status = self._wait(timeout)
            if status != TaskStatus.Completed:
                raise self._failure(status)
            raw = self._qrmi.task_result(self._job_id).value
            self._result = self._decode(raw)
        return self._result

    # ----- internals ----------------------------------------------------------------------

    def _wait(self, timeout: float | None) -> TaskStatus:
        if self._last_status is not None and self._last_status.is_final:
            return self._last_status
        if isinstance(self._qrmi, QuantumResource):
            status = self._qrmi.task_wait(self._job_id, timeout)
        else:
            status = self._poll(timeout)
        self._last_status = status
        return status

    def _poll(self, timeout: float | None) -> TaskStatus:
        """Adaptive polling for resources other than :class:`qrmi.QuantumResource`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for delay in poll_intervals():
            status = self._qrmi.task_status(self._job_id)
            if status.is_final:
                return status
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TaskTimeoutError(
                        f"task {self._job_id} on {_resource_name(self._qrmi)} is still "
                        f"{status.name} after {timeout:g} s; it keeps running: call result() "
                        "again with a longer timeout, or cancel() it"
                    )
                delay = min(delay, remaining)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _failure(self, status: TaskStatus) -> TaskFailedError:
        logs = self._logs_or_empty()
        what = "failed" if status == TaskStatus.Failed else "was cancelled"
        message = f"task {self._job_id} on {_resource_name(self._qrmi)} {what}; it has no result"
        if logs.strip():
            message += f". Task logs:\n{logs.rstrip()}"
        return TaskFailedError(message, status=status, logs=logs)

    def _logs_or_empty(self) -> str:
        try:
            return self._qrmi.task_logs(self._job_id)
        except QrmiError:
            return ""

    def _decode(self, raw: str) -> PrimitiveResult:
        from qiskit.primitives import PrimitiveResult
        from qiskit_ibm_runtime.decoders.result_decoder import ResultDecoder

        decoded = ResultDecoder.decode(raw)
        if not isinstance(decoded, PrimitiveResult):
            raise ServiceError(
                f"the result of task {self._job_id} on {_resource_name(self._qrmi)} is not an "
                f"encoded PrimitiveResult (got {type(decoded).__name__}); the resource must "
                "return qiskit-ibm-runtime RuntimeEncoder JSON for primitive tasks"
            )
        return decoded


def _resource_name(qrmi: Any) -> str:
    try:
        return str(qrmi.resource_id())
    except Exception:  # a name is only for messages; never fail because of it
        return type(qrmi).__name__


def _warn_delete_job_ignored() -> None:
    global _delete_job_warned
    with _warn_lock:
        if _delete_job_warned:
            return
        _delete_job_warned = True
    warnings.warn(
        "RuntimeJobV2(delete_job=True) is ignored: pyqrmi never stops or deletes a task when its "
        "job object is garbage collected (results would be lost); call job.cancel() to stop one",
        UserWarning,
        stacklevel=3,
    )
