"""A Pulser ``RemoteConnection`` that runs sequences on a QRMI Pasqal resource.

``QPUBackend(sequence, connection=PulserQRMIConnection(resource))`` then runs on a
``pasqal-cloud`` or ``pasqal-local`` resource. Each entry of ``job_params`` becomes one QRMI
task (parametrized sequences are built with the entry's ``variables`` first); the Pulser batch
id is the task ids joined with ``|``, so any process can query a batch from its id alone.
``get_batch_logs`` and ``cancel_batch_jobs`` default to the last batch this connection
submitted, as in the reference.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from collections.abc import Sequence as SequenceOf
from typing import Any

from pulser.backend.remote import (
    BatchStatus,
    JobStatus,
    RemoteConnection,
    RemoteResults,
    RemoteResultsError,
)
from pulser.backend.results import Results
from pulser.json.abstract_repr.deserializer import deserialize_device
from pulser.sequence import Sequence

from qrmi.errors import InvalidInputError, TaskTimeoutError, UnsupportedResourceTypeError
from qrmi.job import QRMIService
from qrmi.models import Payload, ResourceType, TaskStatus
from qrmi.protocol import QuantumResourceProtocol

__all__ = ["PulserQRMIConnection", "batch_status"]

logger = logging.getLogger(__name__)

SEPARATOR = "|"
PASQAL_TYPES = (ResourceType.PasqalCloud, ResourceType.PasqalLocal)

_JOB_STATUS = {
    TaskStatus.Queued: JobStatus.PENDING,
    TaskStatus.Running: JobStatus.RUNNING,
    TaskStatus.Completed: JobStatus.DONE,
    TaskStatus.Failed: JobStatus.ERROR,
    TaskStatus.Cancelled: JobStatus.CANCELED,
}


def batch_status(statuses: SequenceOf[JobStatus]) -> BatchStatus:
    """Aggregate job statuses (the reference's rules): all pending -> PENDING, all cancelled ->
    CANCELED, all failed -> ERROR, none pending or running -> DONE, otherwise RUNNING."""
    if all(s == JobStatus.PENDING for s in statuses):
        return BatchStatus.PENDING
    if all(s == JobStatus.CANCELED for s in statuses):
        return BatchStatus.CANCELED
    if all(s == JobStatus.ERROR for s in statuses):
        return BatchStatus.ERROR
    if not any(s in (JobStatus.PENDING, JobStatus.RUNNING) for s in statuses):
        return BatchStatus.DONE
    return BatchStatus.RUNNING


class PulserQRMIConnection(RemoteConnection):
    """Pulser's remote connection over a QRMI ``pasqal-cloud`` / ``pasqal-local`` resource.

    Without ``qrmi``, the job's only Pasqal resource (``QRMI_JOB_QPU_RESOURCES``) is used.
    ``timeout`` bounds ``submit(..., wait=True)``.

    Raises:
        UnsupportedResourceTypeError: the resource is not a Pasqal one, or the job has zero or
            several Pasqal resources and none was given.
    """

    def __init__(
        self, qrmi: QuantumResourceProtocol | None = None, *, timeout: float | None = None
    ) -> None:
        self._qrmi = qrmi if qrmi is not None else _job_pasqal_resource()
        kind = self._qrmi.resource_type()
        if kind not in PASQAL_TYPES:
            raise UnsupportedResourceTypeError(
                f"PulserQRMIConnection needs a pasqal-cloud or pasqal-local resource; "
                f"{self._qrmi.resource_id()!r} is {kind}"
            )
        self.timeout = timeout
        self._lock = threading.Lock()
        self._layouts: dict[str, tuple[tuple[str, ...], int]] = {}
        self._last_batch_id: str | None = None

    # -- RemoteConnection --------------------------------------------------------------------

    def supports_open_batch(self) -> bool:
        """Open batches are not supported (one QRMI task per job)."""
        return False

    def fetch_available_devices(self) -> dict[str, Any]:
        """The devices of the resource's ``target()``, by device type.

        A device whose specs Pulser cannot read is left out, with a warning (as in the
        reference), so one odd entry does not hide the others.
        """
        devices = {}
        for entry in json.loads(self._qrmi.target().value):
            try:
                devices[entry["device_type"]] = deserialize_device(entry["specs"])
            except Exception as exc:  # Pulser raises several types for unreadable specs
                logger.warning("device %s is left out: %s", entry.get("device_type"), exc)
        return devices

    def submit(
        self,
        sequence: Sequence[Any],
        wait: bool = True,
        open: bool = False,
        batch_id: str | None = None,
        **kwargs: Any,
    ) -> RemoteResults:
        """Start one task per ``job_params`` entry; return their results handle.

        ``wait`` (default true, as in the reference) waits until every task is final.
        """
        if open or batch_id:
            raise NotImplementedError("PulserQRMIConnection does not support open batches")
        sequence = self._add_measurement_to_sequence(sequence)
        sequence = self.update_sequence_device(sequence)
        job_params = kwargs.get("job_params") or []
        if not job_params:
            raise InvalidInputError("job_params must list at least one job: [{'runs': N}]")
        task_ids = [self._start(sequence, params) for params in job_params]
        batch = SEPARATOR.join(task_ids)
        self._last_batch_id = batch
        if wait:
            self._wait(batch)
        return RemoteResults(batch, self)

    def _get_job_ids(self, batch_id: str) -> list[str]:
        return batch_id.split(SEPARATOR)

    def _get_batch_status(self, batch_id: str) -> BatchStatus:
        return batch_status([self._job_status(job) for job in self._get_job_ids(batch_id)])

    def _query_job_progress(self, batch_id: str) -> Mapping[str, tuple[JobStatus, Any]]:
        progress = {}
        for job in self._get_job_ids(batch_id):
            status = self._job_status(job)
            progress[job] = (status, self._result(job) if status == JobStatus.DONE else None)
        return progress

    def _fetch_result(self, batch_id: str, job_ids: list[str] | None) -> list[Any]:
        results = []
        for job in job_ids or self._get_job_ids(batch_id):
            status = self._job_status(job)
            if status != JobStatus.DONE:
                raise RemoteResultsError(f"job {job} of batch {batch_id} is {status.name}")
            results.append(self._result(job))
        return results

    # -- extras of the reference -------------------------------------------------------------

    def cancel_batch_jobs(self, batch_id: str | None = None) -> None:
        """Stop every task of the batch (default: the last one submitted here).

        Finished tasks keep their results. A task that cannot be stopped is reported as a
        warning and the others are still stopped.
        """
        for job in self._get_job_ids(self._batch_or_last(batch_id)):
            try:
                self._qrmi.task_stop(job)
            except RuntimeError as exc:  # QrmiError is a RuntimeError, as in the reference
                logger.warning("could not stop job %s: %s", job, exc)

    def get_batch_logs(self, batch_id: str | None = None) -> tuple[str, ...]:
        """The log text of each task of the batch, in job order (default: the last batch
        submitted here). A task whose logs cannot be read is left out, with a warning."""
        logs = []
        for job in self._get_job_ids(self._batch_or_last(batch_id)):
            try:
                logs.append(self._qrmi.task_logs(job))
            except RuntimeError as exc:
                logger.warning("could not read the logs of job %s: %s", job, exc)
        return tuple(logs)

    # -- helpers -----------------------------------------------------------------------------

    def _batch_or_last(self, batch_id: str | None) -> str:
        if batch_id:
            return batch_id
        if self._last_batch_id is None:
            raise InvalidInputError(
                "batch_id is required: this connection has not submitted a batch yet; pass "
                "the id of a batch (RemoteResults.batch_id)"
            )
        return self._last_batch_id

    def _start(self, sequence: Sequence[Any], params: Mapping[str, Any]) -> str:
        runs = params.get("runs")
        if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
            raise InvalidInputError(f"every job needs a positive integer 'runs'; got {runs!r}")
        variables = params.get("variables") or {}
        built = sequence.build(**variables) if sequence.is_parametrized() else sequence
        payload = Payload.PasqalCloud(sequence=built.to_abstract_repr(), job_runs=runs)
        task = self._qrmi.task_start(payload)
        atoms = tuple(str(q) for q in built.register.qubit_ids)
        with self._lock:
            self._layouts[task] = (atoms, int(built.get_duration()))
        return task

    def _job_status(self, job: str) -> JobStatus:
        return _JOB_STATUS[self._qrmi.task_status(job)]

    def _result(self, job: str) -> Any:
        counter = json.loads(self._qrmi.task_result(job).value)["counter"]
        with self._lock:
            layout = self._layouts.get(job)
        if layout is None:
            # A batch submitted by another process: name atoms by position; duration unknown.
            width = len(next(iter(counter), ""))
            layout = (tuple(f"q{i}" for i in range(width)), 0)
        atom_order, duration = layout
        bitstrings = {str(k): int(v) for k, v in counter.items()}
        return Results.from_final_bitstrings(atom_order, duration, bitstrings)

    def _wait(self, batch: str) -> None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        for job in self._get_job_ids(batch):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            wait = getattr(self._qrmi, "task_wait", None)
            if wait is None:
                raise TaskTimeoutError("the resource has no task_wait; submit with wait=False")
            wait(job, remaining)


def _job_pasqal_resource() -> QuantumResourceProtocol:
    service = QRMIService()
    found = [r for r in service.resources() if r.resource_type() in PASQAL_TYPES]
    if len(found) != 1:
        names = ", ".join(r.resource_id() for r in found) or "none"
        raise UnsupportedResourceTypeError(
            f"PulserQRMIConnection() needs exactly one Pasqal resource in the job "
            f"(QRMI_JOB_QPU_RESOURCES); found {names}. Pass the resource explicitly."
        )
    return found[0]
