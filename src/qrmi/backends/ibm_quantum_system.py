"""IBM Quantum System (the on-premises "Direct Access" API): type ``ibm-quantum-system``.

Settings (``{resource}_{KEY}`` or the ``environment`` of the resource in ``qrmi_config.json``):

========================================  ====================================================
``QRMI_IBM_QS_ENDPOINT``                  API base URL (``/v1/...`` is appended); required
``QRMI_IBM_QS_IAM_ENDPOINT``              IBM Cloud IAM base URL; required
``QRMI_IBM_QS_IAM_APIKEY``                IAM API key; required
``QRMI_IBM_QS_SERVICE_CRN``               service instance CRN (``Service-CRN`` header); required
``QRMI_IBM_QS_AWS_ACCESS_KEY_ID``         S3 credentials, endpoint, bucket and region: needed by
``QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY``     ``task_start``, ``task_result`` and ``task_logs``
``QRMI_IBM_QS_S3_ENDPOINT``
``QRMI_IBM_QS_S3_BUCKET``
``QRMI_IBM_QS_S3_REGION``
``QRMI_IBM_QS_S3_ENDPOINT_FOR_QSAPI``     S3 URL the *service* reaches; used in presigned URLs
``QRMI_JOB_TIMEOUT_SECONDS``              job time limit (``timeout_secs``, presigned URL
                                          lifetime); required by ``task_start``
``QRMI_IBM_QS_THROTTLE_WAIT_SECONDS``     cap of the wait for a reserved (423) or throttling
                                          (429) service at submission; default 900
``QRMI_IBM_QS_HTTP_TIMEOUT``              per-request timeout in seconds; default 60
========================================  ====================================================

Protocol: the input is uploaded to ``input_{id}.json`` in the bucket; the job is created with
``POST /v1/jobs`` (answer 204) carrying a presigned GET URL for the input and presigned PUT URLs
for ``results_{id}.json`` and ``logs_{id}.json``, which the service fills itself. Results and
logs are read back from S3 with the configured credentials.

**Finished jobs free their lanes; no result is lost.** The service keeps every job it ran
until a client deletes it, and a stored job holds one of the backend's execution lanes: with
all lanes held, every new job is refused (429, code 1232) even though nothing runs. So a job is
deleted from the service once it is final *and* what it produced is safe in the bucket:

1. a ``Completed`` job is deleted only once ``results_{id}.json`` is in the bucket;
2. its final status is stored as tags of its input object (``qrmi:status``,
   ``qrmi:status:reason_code``, ``qrmi:status:finished``: the tags the reference's newer
   releases write and read too; and ``qrmi:usage:quantum_nanoseconds``). That is all a
   ``Completed`` job needs; a job that did not complete (its reason: message and solution), or
   whose store refused the tags, is also stored as it was last described (not its presigned
   URLs) as ``job_{id}.json``;
3. then ``DELETE /v1/jobs/{id}``.

This happens when a caller sees the job final: in the background after ``task_status`` and
``task_result`` (their answers need none of it: a final job is answered from memory meanwhile,
and a ``Completed`` job's results are *read* rather than looked up, then handed to the
``task_result`` that usually follows, so a polled task costs the bucket one read of its results),
and before ``task_wait`` and ``task_stop`` return. Background work still pending when the
program exits is finished first (a killed program leaves it to a sweep). Sweeps delete the
finished jobs of this backend whose input object is in our bucket and tagged with this
process's user id (``qrmi:uid``; set at upload): in the background when a backend object first
submits and again at a submission once :data:`SWEEP_INTERVAL_SECONDS` have passed, and at once
whenever the service refuses a job with 429: so a job whose program died still frees its lane.
(Listing every stored job before *every* submission cost each task a request whose answer grows
with the number of jobs: at 64 concurrent tasks, more than the task itself.) A job whose input
URL is not in our bucket is another client's and costs no request; the tags of another client's
job in our bucket are read once, never on the way of a submission, and at most
:data:`MAX_OWNER_READS_PER_SWEEP` per sweep, the newest jobs first. ``task_status`` and
``task_result`` of a deleted job read the recorded status, and results and logs stay in the
bucket (configure an S3 lifecycle rule to expire old objects): nothing a caller has not read is
lost. The reference instead deleted on ``task_stop`` only, and a job deleted that way could no
longer be read.

**Lanes.** ``status()`` reports the lanes as the service counts them: ``GET .../lanes`` gives
the total, and every job the service still stores for the backend holds one.

**Retries.** Every call goes through :class:`~qrmi.http.HttpClient`: connection errors, 408 and
5xx are retried with backoff and jitter; a 401 refreshes the IAM token once. 423 (backend
reserved) and 429 (code 1232: execution lanes full; or rate limiting) at submission are retried
with backoff, deleting our finished jobs between tries, until a deadline of
``min(QRMI_JOB_TIMEOUT_SECONDS, QRMI_IBM_QS_THROTTLE_WAIT_SECONDS)`` and then fail with
:class:`~qrmi.errors.ServiceUnavailableError` saying which it was; other calls use a 120 s
budget. Nothing retries forever.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import wait
from typing import Any, ClassVar

import httpx

from qrmi._pools import LazyPool
from qrmi.backends._ibm_common import (
    IamToken,
    failure_reason,
    fetch_description,
    ibm_error_message,
    json_object,
    primitive_input,
)
from qrmi.backends._ibm_s3 import PREFIX, S3Storage
from qrmi.backends._usage import seconds
from qrmi.backends.base import Backend, Clock, Sleeper
from qrmi.config import Settings
from qrmi.errors import (
    AuthenticationFailedError,
    ConfigError,
    InvalidInputError,
    QrmiError,
    ServiceError,
    ServiceUnavailableError,
    TaskNotFoundError,
    TaskNotReadyError,
    UnsupportedPayloadError,
)
from qrmi.http import HttpClient, RetryPolicy
from qrmi.models import (
    Payload,
    QiskitPrimitivePayload,
    ResourceCapacity,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    TaskResult,
    TaskStatus,
    TaskUsage,
)

__all__ = ["PROGRAM_IDS", "QuantumSystemBackend"]

logger = logging.getLogger(__name__)

#: The primitives the Quantum System API runs.
PROGRAM_IDS = ("estimator", "sampler")
#: Default cap of the wait for a reserved or throttling service at submission.
DEFAULT_THROTTLE_WAIT_SECONDS = 900
#: Longest lifetime S3 SigV4 allows for a presigned URL.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
#: The service's error code for "every execution lane of the backend is taken".
LANES_FULL_CODE = "1232"
#: Final job states, and the tag of the input object that records them once a job is deleted.
FINAL_STATES = ("Completed", "Failed", "Cancelled")
STATUS_TAG = "qrmi:status"
#: Tag of the input object that records a deleted job's ``usage.quantum_nanoseconds``.
USAGE_TAG = "qrmi:usage:quantum_nanoseconds"
#: Least time between two sweeps of our finished jobs before submissions (a 429 always sweeps).
SWEEP_INTERVAL_SECONDS = 10.0
#: Most characters of results kept in memory, read by retirements for task_result to take.
MAX_KEPT_RESULT_CHARS = 64 * 1024 * 1024
#: How long a backend's lane count (its configuration, not its use) is taken as known:
#: ``status()`` then asks for the backend and its jobs only.
LANES_KNOWN_SECONDS = 60.0
#: Final jobs remembered per backend object (a final state never changes, so asking the service
#: or the bucket again would only cost round trips); the oldest are forgotten beyond this.
MAX_REMEMBERED_FINAL_JOBS = 10_000
#: Most input tags one sweep reads to learn whose finished jobs are (the newest jobs first):
#: a process's first sweep would otherwise read one per job that other clients left.
MAX_OWNER_READS_PER_SWEEP = 64
#: A sweep is best effort (the next one catches up): its requests give up after this many
#: seconds, so that a program's exit, which finishes a sweep still running, never waits long.
SWEEP_DEADLINE_SECONDS = 10.0
#: A job the service accepted less than this long ago is ``Queued``: the first ``task_status``
#: that soon (programs poll once right after ``task_start``) answers so without a round trip,
#: which could not bring newer news. Our own polling waits as long before its second call.
JUST_CREATED_SECONDS = 0.005

_BACKEND_STATUS = {
    "online": ResourceStatusCode.Online,
    "paused": ResourceStatusCode.Paused,
    "offline": ResourceStatusCode.Offline,
}


class QuantumSystemBackend(Backend):
    """An IBM Quantum System (Direct Access API) QPU; see the module docstring."""

    RESOURCE_TYPE: ClassVar[ResourceType | str] = ResourceType.IBMQuantumSystem
    PAYLOADS: ClassVar[tuple[type[Payload], ...]] = (QiskitPrimitivePayload,)
    STATE_MAP: ClassVar[Mapping[str, TaskStatus]] = {
        "Queued": TaskStatus.Queued,
        "Running": TaskStatus.Running,
        "Completed": TaskStatus.Completed,
        "Failed": TaskStatus.Failed,
        "Cancelled": TaskStatus.Cancelled,
    }

    def __init__(
        self,
        resource_id: str,
        settings: Settings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleeper = time.sleep,
    ) -> None:
        super().__init__(resource_id, settings, clock=clock, sleep=sleep)
        endpoint = settings.require(PREFIX + "ENDPOINT")
        iam_endpoint = settings.require(PREFIX + "IAM_ENDPOINT")
        apikey = settings.require(PREFIX + "IAM_APIKEY")
        crn = settings.require(PREFIX + "SERVICE_CRN")
        timeout = settings.get_float(PREFIX + "HTTP_TIMEOUT", 60.0) or 60.0
        self._token = IamToken(iam_endpoint, apikey, timeout=timeout)
        self._http = HttpClient(
            endpoint,
            service="IBM Quantum System API",
            headers={"Accept": "application/json", "Service-CRN": crn},
            auth=self._token,
            timeout=timeout,
            retry=RetryPolicy(backoff_initial=0.25, backoff_max=8.0, deadline=120.0),
            error_message=ibm_error_message,
            clock=self.clock,
            sleep=self.sleep,
        )
        self._storage: S3Storage | None = None
        self._storage_lock = threading.Lock()
        # Final jobs already retired (or not ours to retire): answered from memory. And the
        # tags put on the inputs this object uploaded, so that retiring needs not read them.
        self._final_jobs: dict[str, dict[str, Any]] = {}
        self._own_tags: dict[str, dict[str, str]] = {}
        # Jobs being retired right now (by a background chore or another thread).
        self._retiring: dict[str, _Retirement] = {}
        # Results read while retiring, kept for the task_result that usually follows at once.
        self._kept_results: OrderedDict[str, str] = OrderedDict()
        # Final jobs on the service that are not ours to delete (seen by a sweep).
        self._foreign_jobs: OrderedDict[str, None] = OrderedDict()
        self._kept_chars = 0
        self._last_sweep: float | None = None  # clock() of the last pre-submission sweep
        self._sweep_lock = threading.Lock()
        self._memory_lock = threading.Lock()
        self._known_lanes: tuple[float, int] | None = None  # (clock() when read, lanes)
        # Jobs accepted in the last JUST_CREATED_SECONDS: id -> clock() when accepted.
        self._created: OrderedDict[str, float] = OrderedDict()

    # ----- resource ------------------------------------------------------------------------

    def is_accessible(self) -> bool:
        """True when the backend is online (one request, unlike :meth:`status`)."""
        return self._status_code(self._backend()) == ResourceStatusCode.Online

    def fetch_status(self) -> ResourceStatus:
        """Backend status, free execution lanes and this backend's running jobs (the requests
        go out at once; the lane count, a configuration, is asked for at most once a minute)."""
        known = self._lanes_if_known()
        calls: list[Callable[[], Any]] = [self._backend, self._stored_jobs]
        if known is None:
            calls.append(self._lanes)
        backend, jobs, *asked = _concurrently(*calls)
        total = known if known is not None else asked[0]
        code = self._status_code(backend)
        running = None if jobs is None else sum(1 for j in jobs if j.get("status") == "Running")
        capacity = self._capacity(total, None if jobs is None else len(jobs))
        busy = None if capacity is None else capacity.available_slots == 0
        return ResourceStatus(
            status=code,
            status_reason=backend.get("message") or None,
            busy=True if backend.get("locked") is True else busy,
            capacity=capacity,
            pending_job_count=running,
        )

    def _backend(self) -> dict[str, Any]:
        return json_object(self._http.get(self._backend_path()), "backend status")

    @staticmethod
    def _status_code(backend: Mapping[str, Any]) -> ResourceStatusCode:
        return _BACKEND_STATUS.get(
            str(backend.get("status", "")).lower(), ResourceStatusCode.Offline
        )

    @staticmethod
    def _capacity(total: int | None, held: int | None) -> ResourceCapacity | None:
        """``total`` lanes of which the service counts ``held`` as taken."""
        if total is None:
            return None
        return ResourceCapacity(available_slots=max(0, total - (held or 0)), max_slots=total)

    def _lanes_if_known(self) -> int | None:
        known = self._known_lanes
        if known is None or self.clock() - known[0] >= LANES_KNOWN_SECONDS:
            return None
        return known[1]

    def _lanes(self) -> int | None:
        """How many execution lanes the backend has, or ``None`` if the service does not say."""
        try:
            lanes = json_object(self._http.get(self._backend_path() + "/lanes"), "lanes")
        except (ServiceError, InvalidInputError, QrmiError) as exc:
            if isinstance(exc, AuthenticationFailedError | ServiceUnavailableError):
                raise
            logger.debug("lanes of %s unavailable: %s", self.resource_id, exc)
            return None
        hpc = lanes.get("hpc_workload_manager")
        total = hpc.get("lanes") if isinstance(hpc, dict) else None
        if not isinstance(total, int):
            return None
        self._known_lanes = (self.clock(), total)
        return total

    def _stored_jobs(self, deadline: float | None = None) -> list[dict[str, Any]] | None:
        """The jobs the service stores for this backend (each holds a lane), or ``None``."""
        body = json_object(self._http.get("v1/jobs", deadline=deadline), "job list")
        jobs = body.get("jobs")
        if not isinstance(jobs, list):
            return None
        return [j for j in jobs if isinstance(j, dict) and j.get("backend") == self.resource_id]

    def fetch_target(self) -> str:
        """``{"configuration": ..., "properties": ...}`` of the backend."""
        return fetch_description(self._http, self._backend_path())

    # ----- tasks ---------------------------------------------------------------------------

    def submit(self, payload: Payload) -> str:
        """Upload the input to S3, then create the job with presigned storage URLs."""
        assert isinstance(payload, QiskitPrimitivePayload)
        if payload.program_id not in PROGRAM_IDS:
            raise UnsupportedPayloadError(
                f"unknown program ID: {payload.program_id!r}; IBM Quantum System runs "
                + " and ".join(repr(p) for p in PROGRAM_IDS)
            )
        primitive_input(payload.input, self.resource_id)
        timeout = self._job_timeout()
        storage = self._s3()
        if self._sweep_due():
            self._sweep_soon()
        job_id = str(uuid.uuid4())
        tags = _owner_tags(payload.program_id)
        storage.put(f"input_{job_id}.json", payload.input.encode("utf-8"), tags=tags)
        with self._memory_lock:
            self._own_tags[job_id] = tags
        expires = min(timeout, MAX_PRESIGN_SECONDS)
        body = {
            "id": job_id,
            "backend": self.resource_id,
            "program_id": payload.program_id,
            "log_level": "info",
            "timeout_secs": timeout,
            "storage": {
                "input": _location(storage.presign("get", f"input_{job_id}.json", expires)),
                "results": _location(storage.presign("put", f"results_{job_id}.json", expires)),
                "logs": _location(storage.presign("put", f"logs_{job_id}.json", expires)),
            },
        }
        self._create_job(body, self._submit_deadline(timeout))
        self._note_created(job_id)
        return job_id

    def _note_created(self, task_id: str) -> None:
        now = self.clock()
        with self._memory_lock:
            self._created[task_id] = now
            while now - next(iter(self._created.values())) >= JUST_CREATED_SECONDS:
                self._created.popitem(last=False)

    def _just_created(self, task_id: str) -> bool:
        """Whether ``task_id`` was accepted less than :data:`JUST_CREATED_SECONDS` ago and not
        asked about since (so it is answered ``Queued`` once at most)."""
        with self._memory_lock:
            created = self._created.pop(task_id, None)
        return created is not None and self.clock() - created < JUST_CREATED_SECONDS

    def _sweep_soon(self) -> None:
        """:meth:`_retire_finished_jobs` in the background: the submission needs none of it (a
        full service answers 429, which sweeps at once), and the first sweep of a process reads
        the tags of every finished job of other clients, one request each."""
        try:
            _RETIREMENTS.get().submit(self._retire_finished_jobs)
        except RuntimeError:  # the interpreter is shutting down: sweep here instead
            self._retire_finished_jobs()

    def _sweep_due(self) -> bool:
        """Whether to sweep our finished jobs before this submission (and note the sweep)."""
        now = self.clock()
        with self._memory_lock:
            if self._last_sweep is not None and now - self._last_sweep < SWEEP_INTERVAL_SECONDS:
                return False
            self._last_sweep = now
            return True

    def _create_job(self, body: dict[str, Any], deadline: float) -> None:
        """``POST /v1/jobs`` until accepted; a 429 (lanes full) frees our finished jobs' lanes
        and waits, up to ``deadline`` seconds in all."""
        started = self.clock()
        refusals = 0
        while True:
            left = max(1.0, deadline - (self.clock() - started))
            response = self._http.post(
                "v1/jobs", json=body, expected=(204, 200, 201, 429), deadline=left
            )
            if response.status_code != 429:
                return
            refusals += 1
            self._retire_finished_jobs()
            retry_after = _retry_after(response)
            delay = self._http.retry.throttle_delay(refusals, retry_after, random.random)
            elapsed = self.clock() - started
            if elapsed + delay >= deadline:
                raise self._throttled_error(response, refusals, elapsed)
            logger.warning(
                "%s refused job %s (%s); try %d, retrying in %.2f s",
                self.resource_id,
                body["id"],
                _throttle_reason(response),
                refusals,
                delay,
            )
            self.sleep(delay)

    def _throttled_error(
        self, response: httpx.Response, refusals: int, elapsed: float
    ) -> ServiceUnavailableError:
        vendor = ibm_error_message(response) or "no detail"
        if _error_code(response) == LANES_FULL_CODE:
            what = (
                f"the execution lanes of {self.resource_id} stayed full for {elapsed:.1f} s "
                f"({refusals} tries; IBM Quantum System API: {vendor}). Our finished jobs were "
                "deleted from the service between tries, so the lanes are held by running jobs "
                "or by jobs of other clients. What to do: wait for running jobs to end, have "
                "the other clients delete their finished jobs, or raise "
                f"{self.settings.env_name('QRMI_JOB_TIMEOUT_SECONDS')} / "
                f"{self.settings.env_name(PREFIX + 'THROTTLE_WAIT_SECONDS')}."
            )
        else:
            what = (
                f"the IBM Quantum System API kept rate-limiting job submissions to "
                f"{self.resource_id} for {elapsed:.1f} s ({refusals} tries; {vendor}). What to "
                "do: retry later or send fewer requests at once."
            )
        return ServiceUnavailableError(what, status_code=429)

    def cancel(self, task_id: str) -> None:
        """``POST /v1/jobs/{id}/cancel``; a job that ended meanwhile (409) is left alone."""
        try:
            self._http.post(f"v1/jobs/{task_id}/cancel", expected=(204, 200))
        except InvalidInputError as exc:
            logger.info("cancel of task %s not needed: %s", task_id, exc)

    def task_stop(self, task_id: str) -> None:
        """Cancel the job unless it is final; then delete it from the service (its results,
        logs and final status stay in the bucket)."""
        job = self._job(task_id)
        if job.get("status") not in FINAL_STATES:
            self.cancel(task_id)
            logger.info("task %s on %s cancelled", task_id, self.resource_id)
            job = self._job(task_id)
        self._retire(job)
        self._settle(task_id)

    def fetch_state(self, task_id: str) -> str:
        """The job's ``status`` (``Running``, ``Completed``, ``Failed``, ``Cancelled``); a
        final job is deleted from the service in the background once its outputs are safe
        (module docstring); ``Queued`` without a request just after ``task_start``."""
        if self._just_created(task_id):
            return "Queued"
        job = self._job(task_id)
        self._retire_soon(job)
        return str(job.get("status"))

    def wait(self, task_id: str, timeout: float | None = None) -> TaskStatus:
        """Poll until the task is final (:meth:`Backend.wait`), and until the final job has
        left the service (or had to stay: module docstring)."""
        status = super().wait(task_id, timeout)
        self._settle(task_id)
        return status

    def task_result(self, task_id: str) -> TaskResult:
        """The result JSON from ``results_{id}.json``, once the job has completed.

        Raises:
            TaskNotReadyError: the job is running, failed (with IBM's reason) or cancelled.
        """
        job = self._job(task_id)
        self._retire_soon(job)
        state = str(job.get("status"))
        status = self.STATE_MAP.get(state, TaskStatus.Running)
        if status == TaskStatus.Failed:
            raise TaskNotReadyError(
                f"unable to retrieve result for task {task_id}: task failed. {failure_reason(job)}"
            )
        if status != TaskStatus.Completed:
            why = "task was cancelled" if status == TaskStatus.Cancelled else "task is running"
            raise TaskNotReadyError(f"unable to retrieve result for task {task_id}: {why}")
        return TaskResult(self.fetch_result(task_id))

    def fetch_result(self, task_id: str) -> str:
        """The text of ``results_{id}.json`` (read by the job's retirement when it read it)."""
        text = self._result_text(task_id)
        if text is None:
            raise ServiceError(
                f"task {task_id} on {self.resource_id} is Completed but its result object "
                f"results_{task_id}.json is missing from the bucket; check the bucket's "
                "lifecycle rules and QRMI_IBM_QS_S3_ENDPOINT_FOR_QSAPI"
            )
        return text

    def fetch_logs(self, task_id: str) -> str:
        """The text of ``logs_{id}.json`` (written by the service when the job ends)."""
        text = self._s3().get(f"logs_{task_id}.json")
        if text is not None:
            return text
        status = self.task_status(task_id)
        if not status.is_final:
            return f"task {task_id} is {status.name}; its logs are written when it ends."
        return f"task {task_id} ended ({status.name}) without logs."

    def task_usage(self, task_id: str) -> TaskUsage | None:
        """The job's ``usage.quantum_nanoseconds`` as QPU seconds (also read from the job's
        record in the bucket once it was deleted from the service); ``None`` until reported."""
        usage = self._job(task_id).get("usage")
        if not isinstance(usage, Mapping):
            return None
        quantum = seconds(usage.get("quantum_nanoseconds"), scale=1e-9)
        return None if quantum is None else TaskUsage(quantum_seconds=quantum)

    # ----- helpers -------------------------------------------------------------------------

    def _backend_path(self) -> str:
        return f"v1/backends/{self.resource_id}"

    def _job(self, task_id: str) -> dict[str, Any]:
        """The job from the service or, once deleted, as recorded in the bucket.

        Raises:
            TaskNotFoundError: neither the service nor the bucket knows the job.
        """
        with self._memory_lock:
            remembered = self._final_jobs.get(task_id)
        if remembered is not None:
            return remembered
        try:
            response = self._http.get(f"v1/jobs/{task_id}", not_found=TaskNotFoundError)
        except TaskNotFoundError:
            recorded = self._recorded_job(task_id)
            if recorded is None:
                raise
            return recorded
        return json_object(response, f"job {task_id}")

    def _recorded_job(self, task_id: str) -> dict[str, Any] | None:
        """The final state of a deleted job as recorded in the bucket, or ``None``: the tags
        of its input object (all a ``Completed`` job has, and all the reference records), then
        ``job_{id}.json`` (the whole description of a job that did not complete)."""
        if not self._s3_configured():
            return None
        try:
            tags = self._s3().tags(f"input_{task_id}.json")
        except QrmiError as exc:  # a store without tags: the record may still be there
            logger.debug("cannot read the tags of the input of task %s: %s", task_id, exc)
            tags = None
        status = (tags or {}).get(STATUS_TAG)
        if status != "Completed":
            try:
                text = self._s3().get(f"job_{task_id}.json")
                record = json.loads(text) if text else None
            except (QrmiError, ValueError) as exc:
                logger.warning("cannot read the recorded state of task %s: %s", task_id, exc)
                record = None
            if isinstance(record, dict) and record.get("status") in FINAL_STATES:
                self._remember_final(task_id, record)
                return record
        if tags is None or status not in FINAL_STATES:
            return None
        recorded_job = _job_from_tags(task_id, self.resource_id, tags)
        self._remember_final(task_id, recorded_job)
        return recorded_job

    def _remember_final(self, task_id: str, job: Mapping[str, Any]) -> None:
        """Answer ``task_id`` from memory from now on (its state is final and settled)."""
        record = {key: value for key, value in job.items() if key != "storage"}
        with self._memory_lock:
            self._final_jobs[task_id] = record
            while len(self._final_jobs) > MAX_REMEMBERED_FINAL_JOBS:
                del self._final_jobs[next(iter(self._final_jobs))]

    # ----- deleting finished jobs (they hold execution lanes) -------------------------------

    def _retire_soon(self, job: Mapping[str, Any]) -> None:
        """:meth:`_retire` in the background: the caller's answer needs none of its round
        trips (the job is final, so it is answered from memory meanwhile); a ``Completed`` job's
        results are read rather than looked up, and kept for :meth:`fetch_result`."""
        self._retire(job, background=True)

    def _retire(self, job: Mapping[str, Any], *, background: bool = False) -> None:
        """Delete a final job from the service once what it produced is safe in the bucket.

        Best effort: a failure is logged, and the job is retired on a later call (or sweep).
        """
        status, task_id = job.get("status"), str(job.get("id", ""))
        if status not in FINAL_STATES or not task_id:
            return
        if "storage" not in job or not self._s3_configured():
            # A recorded job (already deleted), or no bucket to keep the outputs in.
            self._remember_final(task_id, job)
            return
        retirement = _Retirement(read_results=background)
        with self._memory_lock:
            if task_id in self._retiring:
                return
            self._retiring[task_id] = retirement
        self._remember_final(task_id, job)  # final: answered from memory from now on
        if background:
            try:
                _RETIREMENTS.get().submit(self._retire_now, job, task_id, str(status), retirement)
                return
            except RuntimeError:  # the interpreter is shutting down: retire here instead
                pass
        self._retire_now(job, task_id, str(status), retirement)

    def _retire_now(
        self, job: Mapping[str, Any], task_id: str, status: str, retirement: _Retirement
    ) -> None:
        done = False
        try:
            done = self._record_and_delete(job, task_id, status, retirement)
        except QrmiError as exc:
            logger.warning("finished task %s stays on the service for now: %s", task_id, exc)
        except Exception:  # a background chore must not die silently
            logger.warning("retiring finished task %s failed", task_id, exc_info=True)
        finally:
            with self._memory_lock:
                self._retiring.pop(task_id, None)
                if done:
                    self._own_tags.pop(task_id, None)
                else:  # ask the service again next time, which retires it again
                    self._final_jobs.pop(task_id, None)
            retirement.results_read.set()
            retirement.finished.set()

    def _settle(self, task_id: str) -> None:
        """Wait for the retirement of ``task_id`` in progress, if any."""
        with self._memory_lock:
            retirement = self._retiring.get(task_id)
        if retirement is not None:
            retirement.finished.wait()

    def _result_text(self, task_id: str) -> str | None:
        """The text of ``results_{id}.json``, or ``None`` when it is not in the bucket: read
        once for the caller and the job's retirement. The caller reads it itself when the
        retirement has not begun to (a queued retirement must not delay a result), else takes
        what the retirement read."""
        key = f"results_{task_id}.json"
        with self._memory_lock:
            retirement = self._retiring.get(task_id)
        if retirement is not None and retirement.read_results:
            first, text = retirement.read_once(lambda: self._s3().get(key))
            if first:
                return text
        with self._memory_lock:
            text = self._kept_results.pop(task_id, None)
            if text is not None:
                self._kept_chars -= len(text)
        return text if text is not None else self._s3().get(key)

    def _keep_result(self, task_id: str, text: str) -> None:
        with self._memory_lock:
            if len(text) > MAX_KEPT_RESULT_CHARS:
                return
            self._kept_results[task_id] = text
            self._kept_chars += len(text)
            while self._kept_chars > MAX_KEPT_RESULT_CHARS:
                _, dropped = self._kept_results.popitem(last=False)
                self._kept_chars -= len(dropped)

    def _record_and_delete(
        self, job: Mapping[str, Any], task_id: str, status: str, retirement: _Retirement
    ) -> bool:
        """Record the final job in the bucket and delete it from the service; ``False`` when
        that has to wait (its results are not in the bucket yet)."""
        storage = self._s3()
        with self._memory_lock:
            own = self._own_tags.get(task_id)
        tags = dict(own) if own is not None else _input_tags(storage, task_id)
        if tags is None:
            logger.debug("task %s was not submitted through this bucket; not deleting", task_id)
            return True
        if status == "Completed" and not self._results_there(storage, task_id, retirement):
            logger.debug("results of task %s not in the bucket yet; not deleting", task_id)
            return False
        self._record_final(storage, job, task_id, status, tags)
        try:
            self._http.delete(
                f"v1/jobs/{task_id}", expected=(204, 200), not_found=TaskNotFoundError
            )
        except TaskNotFoundError:
            return True  # another client deleted it first
        logger.info("finished task %s (%s) deleted from %s", task_id, status, self.resource_id)
        return True

    @staticmethod
    def _record_final(
        storage: S3Storage,
        job: Mapping[str, Any],
        task_id: str,
        status: str,
        tags: dict[str, str],
    ) -> None:
        """Record a final job in the bucket: its status as tags of its input object (what the
        reference reads too) and, when the tags cannot hold it all (a job that did not
        complete: its reason; or a store that refused the tags), as ``job_{id}.json``."""
        tags[STATUS_TAG] = status
        if job.get("reason_code") is not None:
            tags[STATUS_TAG + ":reason_code"] = str(job["reason_code"])
        if job.get("end_time"):
            tags[STATUS_TAG + ":finished"] = str(job["end_time"])
        usage = job.get("usage")
        quantum = usage.get("quantum_nanoseconds") if isinstance(usage, Mapping) else None
        if isinstance(quantum, int) and not isinstance(quantum, bool):
            tags[USAGE_TAG] = str(quantum)
        tagged = True
        try:
            storage.set_tags(f"input_{task_id}.json", tags)
        except QrmiError as exc:
            logger.debug("cannot tag the input of task %s: %s", task_id, exc)
            tagged = False
        if status != "Completed" or not tagged:
            record = {key: value for key, value in job.items() if key != "storage"}
            storage.put(f"job_{task_id}.json", json.dumps(record).encode("utf-8"))

    def _results_there(self, storage: S3Storage, task_id: str, retirement: _Retirement) -> bool:
        """Whether ``results_{id}.json`` is in the bucket: read (and kept for
        :meth:`fetch_result`, which a caller that polled the status usually asks next) when
        ``retirement.read_results``, else only looked up."""
        key = f"results_{task_id}.json"
        if not retirement.read_results:
            return storage.exists(key)

        def read_and_keep() -> str | None:
            text = storage.get(key)
            if text is not None:  # kept before the caller waiting for this read wakes up
                self._keep_result(task_id, text)
            return text

        first, text = retirement.read_once(read_and_keep)
        if first:
            return text is not None
        if retirement.results_there is not None:  # the caller read them: its answer will do
            return retirement.results_there
        return storage.exists(key)  # its read failed

    def _retire_finished_jobs(self) -> None:
        """Delete this backend's finished jobs that this user submitted through our bucket
        (one sweep at a time: the next one skips what this one learnt)."""
        if not self._s3_configured():
            return
        with self._sweep_lock:
            self._sweep()

    def _sweep(self) -> None:
        try:
            storage = self._s3()
            jobs = self._stored_jobs(deadline=SWEEP_DEADLINE_SECONDS) or []
            unknown = [job for job in jobs if self._owner_unknown(job, storage)]
            # The newest first: a job of ours that a dead program left is likely recent.
            unknown.sort(key=lambda job: str(job.get("created_time", "")), reverse=True)
            batch = unknown[:MAX_OWNER_READS_PER_SWEEP]
            owners = _concurrently(
                *(
                    functools.partial(
                        storage.tags, f"input_{job['id']}.json", deadline=SWEEP_DEADLINE_SECONDS
                    )
                    for job in batch
                )
            )
            mine = str(os.getuid())
            for job, tags in zip(batch, owners, strict=True):
                if tags is not None and tags.get("qrmi:uid") == mine:
                    self._retire(job)
                else:
                    self._remember_foreign(str(job["id"]))
        except QrmiError as exc:
            logger.warning("could not delete the finished jobs of %s: %s", self.resource_id, exc)

    def _owner_unknown(self, job: Mapping[str, Any], storage: S3Storage) -> bool:
        """Whether ``job`` is final and only its input's tags can tell whose it is; a final job
        known without a request is dealt with here (retired if ours, else remembered)."""
        job_id = str(job.get("id", ""))
        if job.get("status") not in FINAL_STATES or not job_id:
            return False
        with self._memory_lock:
            submitted_here = job_id in self._own_tags
            known_foreign = job_id in self._foreign_jobs
            retired = job_id in self._final_jobs and job_id not in self._retiring
        if retired or known_foreign:  # deleted since the list was read; or read once already
            return False
        if submitted_here:  # ours for sure: no need to read its tags
            self._retire(job)
            return False
        if not _input_in(storage, job):  # not submitted through our bucket: not ours
            self._remember_foreign(job_id)
            return False
        return True

    def _remember_foreign(self, job_id: str) -> None:
        """Skip ``job_id`` in later sweeps: another user's, or not submitted through our bucket
        (the jobs of other clients stay on the service, and reading their tags at every sweep
        cost a request each)."""
        with self._memory_lock:
            self._foreign_jobs[job_id] = None
            while len(self._foreign_jobs) > MAX_REMEMBERED_FINAL_JOBS:
                self._foreign_jobs.popitem(last=False)

    def _s3_configured(self) -> bool:
        return all(
            self.settings.get(PREFIX + key)
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_ENDPOINT", "S3_BUCKET")
        )

    def _job_timeout(self) -> int:
        value = self.settings.get_int("QRMI_JOB_TIMEOUT_SECONDS", minimum=1)
        if value is None:
            self.settings.require("QRMI_JOB_TIMEOUT_SECONDS")  # raises EnvVarNotSetError
            raise AssertionError("unreachable")  # pragma: no cover
        return value

    def _submit_deadline(self, timeout: int) -> float:
        cap = self.settings.get_float(
            PREFIX + "THROTTLE_WAIT_SECONDS", float(DEFAULT_THROTTLE_WAIT_SECONDS)
        )
        if cap is None or cap <= 0:
            raise ConfigError(
                f"{self.settings.env_name(PREFIX + 'THROTTLE_WAIT_SECONDS')} must be a "
                "positive number of seconds"
            )
        return float(min(timeout, cap))

    def _s3(self) -> S3Storage:
        with self._storage_lock:
            if self._storage is None:
                self._storage = S3Storage.from_settings(self.settings)
            return self._storage


class _Retirement:
    """A final job being recorded in the bucket and deleted from the service."""

    def __init__(self, *, read_results: bool) -> None:
        self.read_results = read_results  # read a Completed job's results (else look them up)
        self.results_read = threading.Event()  # the results were read, or never will be
        self.results_there: bool | None = None  # what that read found (None: it failed)
        self.finished = threading.Event()
        self._read_claim = threading.Lock()

    def read_once(self, read: Callable[[], str | None]) -> tuple[bool, str | None]:
        """``(True, read())`` for the first thread to ask, which records whether the results
        were there; ``(False, None)`` for any other, once that read has ended."""
        if not self._read_claim.acquire(blocking=False):
            self.results_read.wait()
            return False, None
        try:
            text = read()
            self.results_there = text is not None
        finally:
            self.results_read.set()
        return True, text


def _location(url: str) -> dict[str, str]:
    return {"presigned_url": url, "type": "s3_compatible"}


_CONCURRENT = LazyPool(16, "qrmi-ibm-qs")
#: The threads that retire final jobs: apart from :func:`_concurrently`'s, so that ``status()``
#: never waits behind a burst of retirements. (The interpreter finishes their queued work
#: before it exits.)
_RETIREMENTS = LazyPool(16, "qrmi-ibm-qs-retire")


def _concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """The results of ``calls`` run at once, the first in this thread and the others on a
    shared pool (one thread hand-over fewer); the first failure is raised once all have
    ended."""
    pool = _CONCURRENT.get()
    futures = [pool.submit(call) for call in calls[1:]]
    try:
        here = [calls[0]()] if calls else []
    finally:
        wait(futures)
    return [*here, *(future.result() for future in futures)]


def _input_in(storage: S3Storage, job: Mapping[str, Any]) -> bool:
    """Whether the job's input URL names its ``input_{id}.json`` in our bucket (``True`` when
    the job does not say: its tags will tell)."""
    try:
        url = job["storage"]["input"]["presigned_url"]
    except (KeyError, TypeError):
        return True
    return not isinstance(url, str) or storage.holds(url, f"input_{job['id']}.json")


def _input_tags(storage: S3Storage, task_id: str) -> dict[str, str] | None:
    """The tags of a job's input object; ``{}`` when the store keeps no tags (or may not read
    them) but the object is there; ``None`` when the job's input is not in the bucket."""
    try:
        return storage.tags(f"input_{task_id}.json")
    except QrmiError:
        return {} if storage.exists(f"input_{task_id}.json") else None


def _job_from_tags(task_id: str, backend: str, tags: Mapping[str, str]) -> dict[str, Any]:
    """A deleted job as its input object's tags describe it (status, end, usage, reason)."""
    status = tags[STATUS_TAG]
    job: dict[str, Any] = {"id": task_id, "backend": backend, "status": status}
    if tags.get(STATUS_TAG + ":finished"):
        job["end_time"] = tags[STATUS_TAG + ":finished"]
    quantum = tags.get(USAGE_TAG, "")
    if quantum.isdigit():
        job["usage"] = {"quantum_nanoseconds": int(quantum)}
    if status == "Failed":
        code = tags.get(STATUS_TAG + ":reason_code")
        job["reason_code"] = int(code) if code and code.isdigit() else code
        job["reason_message"] = "the job was deleted from the service after it failed"
        job["reason_solution"] = f"read its logs (task_logs) or logs_{task_id}.json"
    return {k: v for k, v in job.items() if v is not None}


def _owner_tags(program_id: str) -> dict[str, str]:
    """Tags of an input object: who submitted it (the reference's newer releases use these)."""
    tags = {
        "qrmi:uid": str(os.getuid()),
        "qrmi:gid": str(os.getgid()),
        "qrmi:program_type": program_id,
    }
    job_id = os.environ.get("QRMI_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job_id and job_id.isdigit():
        tags["qrmi:jid"] = job_id
    return tags


def _error_code(response: httpx.Response) -> str | None:
    """``errors[0].code`` of an IBM error body."""
    try:
        errors = response.json().get("errors")
        return str(errors[0].get("code"))
    except (ValueError, AttributeError, IndexError, TypeError):
        return None


def _throttle_reason(response: httpx.Response) -> str:
    if _error_code(response) == LANES_FULL_CODE:
        return "HTTP 429, code 1232: execution lanes full"
    return "HTTP 429: rate limited"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
