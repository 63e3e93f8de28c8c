"""The gateway's logic, without HTTP: jobs, tokens, leases, task ownership and QRMI calls.

:class:`GatewayService` holds one :class:`~qrmi.QuantumResource` per QPU of the configuration,
shared by every job (one vendor token, one connection pool). Backends whose tasks run inside a
per-job vendor session (:data:`JOB_SCOPED_TYPES`) get, in addition, one view per job and QPU,
built from the same settings plus the job's lease, id and uid; the views are rebuilt from the
store after a restart.

Every call names the job (found from its token by :meth:`GatewayService.authenticate`), and the
service checks that the job holds the QPU and owns the task: another job's task id is answered
exactly like an unknown one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from qrmi.config import Config, ResourceDef
from qrmi.errors import (
    QrmiError,
    QuotaExceededError,
    ResourceNotFoundError,
    ServiceError,
    ServiceUnavailableError,
    TaskNotFoundError,
    TaskNotReadyError,
    UnsupportedPayloadError,
)
from qrmi.gateway import quota
from qrmi.gateway.auth import hash_token, new_token
from qrmi.gateway.coalesce import Coalescer
from qrmi.gateway.dispatch import (
    STALE_CLAIM_SECONDS,
    Dispatcher,
    capacity_of,
    is_gateway_task,
    new_gateway_task_id,
)
from qrmi.gateway.metrics import GatewayMetrics, TimedResource
from qrmi.gateway.store import JobRecord, OpenTask, QueuedTask, Store, UsageRecord
from qrmi.gateway.usage import payload_facts, task_cost
from qrmi.models import (
    Payload,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    Target,
    TaskResult,
    TaskStatus,
)
from qrmi.resource import QuantumResource

__all__ = [
    "INFINITE_TIMEOUT_SECONDS",
    "JOB_SCOPED_TYPES",
    "FinishedJob",
    "GatewayError",
    "GatewayService",
    "StartedJob",
]

logger = logging.getLogger(__name__)

#: Backends whose tasks belong to a per-job vendor session (the lease), so each job needs its
#: own backend object carrying that session, the job id and the uid.
JOB_SCOPED_TYPES = frozenset(
    {"ibm-quantum-compute-service", "qiskit-runtime-service", "pasqal-local"}
)
#: ``{name}_QRMI_JOB_TIMEOUT_SECONDS`` of a job without a time limit (the reference's value).
INFINITE_TIMEOUT_SECONDS = 4294967295
#: Job ids as Slurm writes them (``1234``, ``1234_5`` for an array task, ``1234+1`` het jobs).
_JOB_ID = re.compile(r"[0-9]{1,20}(?:[_+][0-9]{1,10})?")
_MAX_QPUS_PER_JOB = 64
#: A run identity: the job's Slurm start time (``2026-12-01T07:05:12``) or another short token.
_RUN_ID = re.compile(r"[A-Za-z0-9:._+-]{1,64}")
#: What a task the gateway holds (not yet at the vendor) reports, by its queue state.
_HELD_STATUS = {
    "queued": TaskStatus.Queued,
    "dispatching": TaskStatus.Queued,
    "cancelled": TaskStatus.Cancelled,
    "failed": TaskStatus.Failed,
}


class GatewayError(Exception):
    """An answer the gateway gives on its own behalf; ``kind`` is its wire error type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class StartedJob:
    """What a job start returns: the job's token (shown once) and its variables."""

    job_id: str
    token: str
    expires: float | None
    variables: dict[str, str]


@dataclass
class FinishedJob:
    """What the end of a job did; ``already_finished`` when an earlier call did it."""

    job_id: str
    already_finished: bool = False
    cancelled_tasks: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    #: Totals over the Slurm job's recorded tasks: ``tasks`` and ``qpu_seconds``.
    usage: dict[str, int | float] = field(default_factory=dict)


class GatewayService:
    """The gateway over ``config``'s QPUs, with its state in ``store``.

    ``token_grace_seconds`` is added to a job's time limit before its token expires (Slurm lets
    a job overrun by ``OverTimeLimit`` and ``KillWait``); a job still active that long after its
    limit is ended by :meth:`reap_expired` (its node died before the Epilog ran).
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        token_grace_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.token_grace_seconds = token_grace_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._job_locks: dict[str, threading.Lock] = {}
        self._shared: dict[str, QuantumResource] = {}
        self._views: dict[tuple[str, str], QuantumResource] = {}
        # Token hash -> job, for the hot path of every call. Alone on its store (SQLite), this
        # process drops a job's entries whenever it changes its token or state, which keeps it
        # exact. On a shared store another gateway may revoke a token at any time, so each use
        # checks that it is still an active job's (one indexed lookup).
        self._by_token: dict[str, JobRecord] = {}
        self._quota_locks: dict[str, threading.Lock] = {}
        for rdef in config.resource_map.values():
            capacity_of(rdef)  # a malformed capacity fails the gateway's start, not a task
        #: The fair-share queue in front of QPUs with a gateway capacity (its thread is started
        #: by the application, and by the first task it holds).
        self.dispatcher = Dispatcher(self)
        #: What this process already wrote to a task's usage record ("running", "final"), so
        #: that a client polling a task costs no store write per poll.
        self._noted: dict[tuple[str, str], str] = {}
        self._coalesce = Coalescer()
        # Vendor call latency and errors, tasks started and ended: for /metrics.
        self.metrics = GatewayMetrics()

    # ----- resources ---------------------------------------------------------------------------

    def definition(self, qpu: str) -> ResourceDef:
        """The configuration of ``qpu``; unknown names are ``ResourceNotFoundError``."""
        rdef = self.config.resource_map.get(qpu)
        if rdef is None:
            raise ResourceNotFoundError(
                f"resource {qpu!r} is not served by this gateway; its resources are: "
                f"{', '.join(sorted(self.config.resource_map)) or '(none)'}"
            )
        return rdef

    def type_string(self, qpu: str) -> str:
        """The type string of ``qpu`` (``ibm-quantum-system`` ...)."""
        kind = self.definition(qpu).resource_type
        return kind.type_string if isinstance(kind, ResourceType) else kind

    def shared(self, qpu: str) -> QuantumResource:
        """The one backend object of ``qpu`` that every job shares (built on first use)."""
        rdef = self.definition(qpu)
        with self._lock:
            resource = self._shared.get(qpu)
            if resource is None:
                resource = _build(rdef, {}, self.metrics)
                self._shared[qpu] = resource
            return resource

    def _task_resource(self, job: JobRecord, qpu: str) -> QuantumResource:
        if self.type_string(qpu) not in JOB_SCOPED_TYPES:
            return self.shared(qpu)
        with self._lock:
            view = self._views.get((job.job_id, qpu))
        if view is not None:
            return view
        leases = [lease for lease in self.store.leases(job.job_id) if lease.qpu == qpu]
        lease = next((item.token for item in leases if item.main), None)
        view = _build(self.definition(qpu), self._job_settings(job, qpu, lease), self.metrics)
        with self._lock:
            return self._views.setdefault((job.job_id, qpu), view)

    def _job_settings(self, job: JobRecord, qpu: str, lease: str | None) -> dict[str, str]:
        """The job's own settings of its view of ``qpu``: its id, uid, time left, lease, and
        the vendor's exclusive mode when the job runs in a dedicated window of the QPU."""
        from qrmi.lifecycle import exclusive_settings

        settings = {
            "QRMI_JOB_ID": job.job_id,
            "QRMI_JOB_UID": str(job.uid),
            "QRMI_JOB_TIMEOUT_SECONDS": str(self._timeout_seconds(job)),
        }
        if lease is not None:
            settings["QRMI_JOB_ACQUISITION_TOKEN"] = lease
        return exclusive_settings(settings, qpu, self.type_string(qpu), job.reservation)

    def _timeout_seconds(self, job: JobRecord) -> int:
        if job.expires is None:
            return INFINITE_TIMEOUT_SECONDS
        return max(1, round(job.expires - self.token_grace_seconds - job.created))

    # ----- job lifecycle -----------------------------------------------------------------------

    def start_job(
        self,
        job_id: str,
        uid: int,
        qpus: list[str],
        time_limit: int | None,
        run_id: str | None = None,
        *,
        user_name: str | None = None,
        account: str | None = None,
        partition: str | None = None,
        reservation: str | None = None,
    ) -> StartedJob:
        """Acquire ``qpus`` for the job and mint its token; ``user_name``, ``account`` and
        ``partition`` (as Slurm knows the job) go into the job's usage records.

        ``run_id`` tells one run of the job from the next (the Slurm helper sends the job's start
        time: a requeued job runs again under the same id). Starting a run that is already
        active again (a later step, or the helper retried) keeps its leases and mints a new
        token, which replaces the previous one. A start with a new ``run_id`` ends the job's
        previous run if it is still active (its node died: Slurm requeued it), archives that
        run's rows under ``<job_id>~<n>`` and starts afresh. A run that ended is never revived.

        Raises:
            GatewayError: malformed arguments, or the job id belongs to another or an ended run.
            ResourceNotFoundError: a QPU is not configured here.
            QrmiError: a vendor acquisition failed (nothing stays acquired).
        """
        _check_job_request(job_id, uid, qpus, time_limit, run_id)
        for what, value in (
            ("user", user_name),
            ("account", account),
            ("partition", partition),
            ("reservation", reservation),
        ):
            _check_slurm_name(what, value)
        for qpu in qpus:
            self.definition(qpu)
        with self._job_lock(job_id):
            existing = self.store.job(job_id)
            if existing is not None and _is_new_run(existing, run_id):
                self._archive_run(existing)
            elif existing is not None:
                return self._restart_job(existing, uid, qpus, run_id)
            token = new_token()
            expires = None
            if time_limit is not None and 0 < time_limit < INFINITE_TIMEOUT_SECONDS:
                expires = self.clock() + time_limit + self.token_grace_seconds
            self.store.add_job(
                job_id,
                uid,
                hash_token(token),
                expires,
                run_id,
                user_name=user_name,
                account=account,
                partition=partition,
                reservation=reservation,
            )
            job = self.store.job(job_id)
            assert job is not None
            self._acquire_all(job, qpus)
            logger.info("job %s (uid %d) started on %s", job_id, uid, ",".join(qpus))
            return self._started(job_id, token)

    def _archive_run(self, job: JobRecord) -> None:
        """End ``job``'s run if needed (exactly once, as at any job end) and move its rows
        aside, so that the job id starts a new run."""
        if job.state != "finished":
            logger.warning(
                "job %s starts a new run while its previous run is %s (requeued after its "
                "node failed?): ending the previous run first",
                job.job_id,
                job.state,
            )
            self._finish(job, keep_lock=True)  # the new run starts under this lock
        archived = self.store.archive_job(job.job_id)
        self._forget_views(job.job_id, keep_lock=True)
        logger.info(
            "job %s runs again (requeued): its previous run is kept as %s", job.job_id, archived
        )

    def _acquire_all(self, job: JobRecord, qpus: list[str]) -> None:
        try:
            for qpu in qpus:
                self._acquire_main(job, qpu)
        except BaseException:
            self._release_held(job.job_id, [])
            self._forget_views(job.job_id)
            self.store.delete_job(job.job_id)
            raise

    def _acquire_main(self, job: JobRecord, qpu: str) -> None:
        """Acquire ``qpu`` for the job at its start, if it is online and not paused (the same
        rule as direct mode: a job does not start on a QPU it cannot use)."""
        paused = self.store.paused(qpu)
        status = self.shared(qpu).status()
        if paused is not None or status.status != ResourceStatusCode.Online:
            reason = paused or status.status_reason
            word = "paused" if paused is not None else status.status.name.lower()
            raise ServiceUnavailableError(
                f"QPU {qpu!r} ({self.type_string(qpu)}) is not accessible (status {word}"
                f"{': ' + reason if reason else ''}); the job cannot use it now"
            )
        lease = self._acquirer(job, qpu).acquire()
        self.store.add_lease(job.job_id, qpu, lease, main=True)

    def _acquirer(self, job: JobRecord, qpu: str) -> QuantumResource:
        if self.type_string(qpu) not in JOB_SCOPED_TYPES:
            return self.shared(qpu)
        view = _build(self.definition(qpu), self._job_settings(job, qpu, None), self.metrics)
        with self._lock:
            self._views[(job.job_id, qpu)] = view
        return view

    def _restart_job(
        self, job: JobRecord, uid: int, qpus: list[str], run_id: str | None
    ) -> StartedJob:
        if job.state != "active":
            raise GatewayError(
                "JobConflictError",
                f"job {job.job_id} has ended ({job.state}); a run is started once (a requeued "
                "job's next run is started with its new start time)",
            )
        if job.uid != uid or not set(job.qpus) <= set(qpus):
            raise GatewayError(
                "JobConflictError",
                f"job {job.job_id} is already running for uid {job.uid} on "
                f"{','.join(job.qpus)}; a repeated start must name the same uid and QPUs",
            )
        # A start cut short (gateway killed while acquiring) holds only some QPUs: finish it.
        for qpu in qpus:
            if qpu not in job.qpus:
                self._acquire_main(job, qpu)
        if run_id is not None and job.run_id is None:
            self.store.set_run(job.job_id, run_id)
        token = new_token()
        self._forget_tokens(job.job_id)
        self.store.set_token(job.job_id, hash_token(token))
        logger.info("job %s started again: new token minted, leases kept", job.job_id)
        return self._started(job.job_id, token)

    def _started(self, job_id: str, token: str) -> StartedJob:
        job = self.store.job(job_id)
        assert job is not None
        return StartedJob(job_id, token, job.expires, self.job_variables(job, token))

    def job_variables(self, job: JobRecord, token: str) -> dict[str, str]:
        """The job's environment: the reference's non-secret variables and, per QPU, the
        gateway token (the gateway URL is added by the caller, which knows how it reached us)."""
        names = ",".join(job.qpus)
        types = ",".join(self.type_string(qpu) for qpu in job.qpus)
        variables = {
            "QRMI_JOB_ID": job.job_id,
            "QRMI_JOB_UID": str(job.uid),
            "QRMI_JOB_QPU_RESOURCES": names,
            "QRMI_JOB_QPU_TYPES": types,
            "SLURM_JOB_QPU_RESOURCES": names,
            "SLURM_JOB_QPU_TYPES": types,
        }
        timeout = str(self._timeout_seconds(job))
        for lease in self.store.leases(job.job_id):
            if lease.main:
                variables[f"{lease.qpu}_QRMI_JOB_ACQUISITION_TOKEN"] = lease.token
                variables[f"{lease.qpu}_QRMI_JOB_TIMEOUT_SECONDS"] = timeout
                variables[f"{lease.qpu}_QRMI_GATEWAY_TOKEN"] = token
        return variables

    def finish_job(self, job_id: str, run_id: str | None = None) -> FinishedJob:
        """End a job exactly once: revoke its token, stop its unfinished tasks, release its
        leases. A later call answers ``already_finished``; a call after a partial failure
        finishes what is left. With ``run_id``, only that run of the job is ended: a run that
        was followed by another (the job was requeued) has ended already.

        Raises:
            ServiceError: a lease could not be released (the job stays ``finishing``; call
                again to retry).
        """
        with self._job_lock(job_id):
            job = self.store.job(job_id)
            if job is None or job.state == "finished":
                return FinishedJob(job_id, already_finished=True)
            if run_id is not None and job.run_id is not None and run_id != job.run_id:
                logger.info(
                    "job %s: the end of an earlier run (%s) leaves this run", job_id, run_id
                )
                return FinishedJob(job_id, already_finished=True)
            return self._finish(job)

    def _finish(self, job: JobRecord, *, keep_lock: bool = False) -> FinishedJob:
        """End ``job`` (the caller holds its lock, which is dropped unless ``keep_lock``)."""
        job_id = job.job_id
        self._forget_tokens(job_id)
        self.store.revoke_token(job_id)
        self.store.set_state(job_id, "finishing")
        report = FinishedJob(job_id, cancelled_tasks=self._stop_tasks(job))
        failures = self._release_held(job_id, report.released)
        if failures:
            raise ServiceError(
                f"job {job_id} ended but these leases could not be released: "
                f"{'; '.join(failures)}. Its token is revoked; call the job end again to retry."
            )
        self.store.set_state(job_id, "finished")
        self._settle_usage({job_id})
        report.usage = self.usage_totals(job_id)
        self._forget_views(job_id, keep_lock=keep_lock)
        logger.info(
            "job %s finished: %d task(s) cancelled, %d lease(s) released",
            job_id,
            len(report.cancelled_tasks),
            len(report.released),
        )
        return report

    def _stop_tasks(self, job: JobRecord) -> list[str]:
        cancelled = []
        for task in self.store.tasks(job.job_id):
            held = self._held(task.qpu, task.task_id)
            if held is not None and held.vendor_task_id is None:
                if self.end_held(task.qpu, task.task_id, "cancelled", "the job ended"):
                    cancelled.append(task.task_id)
                continue
            vendor_id = task.task_id if held is None else str(held.vendor_task_id)
            try:
                resource = self._task_resource(job, task.qpu)
                if not resource.task_status(vendor_id).is_final:
                    resource.task_stop(vendor_id)
                    cancelled.append(task.task_id)
            except QrmiError as exc:
                logger.warning("job %s: cannot stop task %s: %s", job.job_id, task.task_id, exc)
        return cancelled

    def _release_held(self, job_id: str, released: list[str]) -> list[str]:
        failures = []
        job = self.store.job(job_id)
        for lease in self.store.leases(job_id, held_only=True):
            try:
                resource = self.shared(lease.qpu)
                if job is not None and self.type_string(lease.qpu) in JOB_SCOPED_TYPES:
                    resource = self._task_resource(job, lease.qpu)
                resource.release(lease.token)
            except QrmiError as exc:
                failures.append(f"{lease.qpu}: {exc}")
                continue
            if self.store.mark_released(lease.qpu, lease.token):
                released.append(lease.qpu)
        return failures

    def reap_expired(self) -> list[str]:
        """End the jobs whose token expired (their node died before the job end); return them.
        Also drop what this process cached of jobs that ended, maybe on another gateway."""
        now = self.clock()
        ended = []
        jobs = self.store.jobs()
        self._forget_ended(jobs)
        self._settle_usage({job.job_id for job in jobs if job.state == "finished"})
        for job in jobs:
            if job.state == "finished" or job.expires is None or job.expires > now:
                continue
            try:
                self.finish_job(job.job_id)
                ended.append(job.job_id)
            except QrmiError as exc:
                logger.warning("cannot end expired job %s yet: %s", job.job_id, exc)
        return ended

    @contextmanager
    def _job_lock(self, job_id: str) -> Iterator[None]:
        """Serialise the job's start and end: among this process's threads, then among the
        gateways sharing the store (a database lock)."""
        with self._lock:
            lock = self._job_locks.setdefault(job_id, threading.Lock())
        with lock, self.store.job_lock(job_id):
            yield

    def _forget_ended(self, jobs: list[JobRecord]) -> None:
        active = {job.job_id for job in jobs if job.state == "active"}
        with self._lock:
            cached = {key[0] for key in self._views} | {j.job_id for j in self._by_token.values()}
        for job_id in cached - active:  # its lock stays: a start may be running
            self._forget_tokens(job_id)
            with self._lock:
                for key in [key for key in self._views if key[0] == job_id]:
                    del self._views[key]

    def _forget_tokens(self, job_id: str) -> None:
        with self._lock:
            for digest in [d for d, job in self._by_token.items() if job.job_id == job_id]:
                del self._by_token[digest]

    def _forget_views(self, job_id: str, *, keep_lock: bool = False) -> None:
        with self._lock:
            for key in [key for key in self._views if key[0] == job_id]:
                del self._views[key]
            if not keep_lock:
                self._job_locks.pop(job_id, None)
                self._quota_locks.pop(job_id, None)

    # ----- authentication ----------------------------------------------------------------------

    def authenticate(self, token: str | None) -> JobRecord:
        """The running job whose token this is.

        Raises:
            GatewayError: ``InvalidTokenError`` for a missing, forged, revoked or expired token.
        """
        if not token:
            raise GatewayError(
                "InvalidTokenError",
                "this call needs a job token: send 'Authorization: Bearer <token>' with the "
                "value of {qpu}_QRMI_GATEWAY_TOKEN from the job's environment",
            )
        digest = hash_token(token)
        job = self._by_token.get(digest)
        if job is not None and self.store.shared and self.store.active_job_id(digest) != job.job_id:
            self._forget_tokens(job.job_id)  # revoked or replaced, maybe by another gateway
            job = None
        if job is None:
            job = self.store.job_by_token(digest)
            if job is not None and job.state == "active":
                with self._lock:
                    self._by_token[digest] = job
        if job is None:
            revoked = self.store.job_by_revoked_token(digest)
            if revoked is not None:
                raise GatewayError(
                    "InvalidTokenError",
                    f"the job token was revoked: job {revoked.job_id} has ended or was given a "
                    "new token",
                )
            raise GatewayError(
                "InvalidTokenError", "the job token is not valid (unknown to this gateway)"
            )
        if job.state != "active":
            raise GatewayError(
                "InvalidTokenError", f"the job token was revoked: job {job.job_id} has ended"
            )
        if job.expires is not None and job.expires <= self.clock():
            raise GatewayError(
                "InvalidTokenError",
                f"the job token expired: job {job.job_id}'s time limit has passed",
            )
        return job

    def check_qpu(self, job: JobRecord, qpu: str) -> None:
        """Raise unless ``qpu`` is configured (404) and held by ``job`` (403)."""
        self.definition(qpu)
        if qpu not in job.qpus:
            raise GatewayError(
                "AccessDeniedError",
                f"job {job.job_id} does not hold QPU {qpu!r} (it holds "
                f"{', '.join(job.qpus) or 'none'}); submit the job with --qpu={qpu}",
            )

    def _owned(self, job: JobRecord, qpu: str, task_id: str) -> QuantumResource:
        self.check_qpu(job, qpu)
        record = self.store.task(qpu, task_id)
        if record is None or record.job_id != job.job_id:
            raise TaskNotFoundError(f"task {task_id} not found on resource {qpu!r}")
        return self._task_resource(job, qpu)

    # ----- QRMI calls on behalf of a job -------------------------------------------------------

    def status(self, job: JobRecord, qpu: str) -> ResourceStatus:
        """The QPU's status; ``Paused`` while an admin paused it here."""
        self.check_qpu(job, qpu)
        reason = self.store.paused(qpu)
        if reason is not None:
            return ResourceStatus(ResourceStatusCode.Paused, status_reason=reason)
        resource = self.shared(qpu)
        return self._coalesce.run(("status", qpu), resource.status)

    def is_accessible(self, job: JobRecord, qpu: str) -> bool:
        """True when the QPU is online and not paused (the backend's own check, which costs
        most vendors less than a full status)."""
        self.check_qpu(job, qpu)
        if self.store.paused(qpu) is not None:
            return False
        resource = self.shared(qpu)
        return self._coalesce.run(("accessible", qpu), resource.is_accessible)

    def target(self, job: JobRecord, qpu: str) -> Target:
        """The QPU's device description."""
        self.check_qpu(job, qpu)
        return self.shared(qpu).target()

    def metadata(self, job: JobRecord, qpu: str) -> dict[str, str]:
        """The QPU's metadata (for session backends, the job's session)."""
        self.check_qpu(job, qpu)
        return self._task_resource(job, qpu).metadata()

    def acquire(self, job: JobRecord, qpu: str) -> str:
        """One more lease for the job (released by :meth:`release` or at the job's end)."""
        self.check_qpu(job, qpu)
        lease = self._task_resource(job, qpu).acquire()
        self.store.add_lease(job.job_id, qpu, lease, main=False)
        return lease

    def release(self, job: JobRecord, qpu: str, lease: str) -> None:
        """Release one of the job's leases; another job's or an unknown lease is left alone."""
        self.check_qpu(job, qpu)
        record = self.store.lease(qpu, lease)
        if record is None or record.job_id != job.job_id or record.released is not None:
            return
        self._task_resource(job, qpu).release(lease)
        self.store.mark_released(qpu, lease)

    def observe(
        self,
        resource: QuantumResource,
        qpu: str,
        task_id: str,
        status: TaskStatus,
        vendor_id: str | None = None,
    ) -> TaskStatus:
        """Note a status the gateway saw in the task's usage record; returns ``status``.
        ``vendor_id`` is the vendor's id of a task the gateway held (``task_id`` otherwise)."""
        key = (qpu, task_id)
        noted = self._noted.get(key)
        if status == TaskStatus.Running and noted is None:
            self.store.mark_usage_running(qpu, task_id, self.clock())
        elif status.is_final and noted != "final":
            self._end_usage(resource, qpu, task_id, status, vendor_id or task_id)
        else:
            return status  # polled again: already in the record, no write
        with self._lock:
            if len(self._noted) >= _MAX_NOTED:
                self._noted.clear()  # only saves writes: forgetting costs one more
            self._noted[key] = "final" if status.is_final else "running"
        return status

    def _end_usage(
        self,
        resource: QuantumResource,
        qpu: str,
        task_id: str,
        status: TaskStatus,
        vendor_id: str,
    ) -> None:
        record = self.store.usage_of(qpu, task_id)
        if record is None or record.ended is not None:
            return
        rdef = self.config.resource_map.get(qpu)
        if rdef is not None and capacity_of(rdef) is not None:
            self.dispatcher.wake()  # a lane is free: the next waiting task may go
        try:
            reported = resource.task_usage(vendor_id)
        except QrmiError as exc:
            logger.info("no vendor usage for task %s on %s: %s", task_id, qpu, exc)
            reported = None
        ended = self.clock()
        self._close_usage(qpu, task_id, status, ended, *task_cost(reported, record.started, ended))

    def _settle_usage(self, job_ids: set[str]) -> None:
        """Complete the open usage records of ended jobs whose tasks are now final."""
        if not job_ids:
            return
        only = next(iter(job_ids)) if len(job_ids) == 1 else None
        for record in self.store.usage(slurm_job_id=only, open_only=True):
            job = self.store.job(record.slurm_job_id) if record.slurm_job_id in job_ids else None
            if job is None:
                continue
            held = self._held(record.qpu, record.task_id)
            if held is not None and held.vendor_task_id is None:
                self.end_held(record.qpu, record.task_id, "cancelled", "the job ended")
                continue
            vendor_id = record.task_id if held is None else str(held.vendor_task_id)
            try:
                resource = self._task_resource(job, record.qpu)
                status = resource.task_status(vendor_id)
                self.observe(resource, record.qpu, record.task_id, status, vendor_id)
            except QrmiError as exc:
                logger.warning(
                    "job %s: no final state yet for task %s: %s", job.job_id, record.task_id, exc
                )

    def usage_totals(self, job_id: str) -> dict[str, int | float]:
        """``tasks`` and ``qpu_seconds`` (known costs only) of the Slurm job's tasks."""
        records = self.store.usage(slurm_job_id=job_id)
        seconds = sum(r.quantum_seconds or 0.0 for r in records)
        return {"tasks": len(records), "qpu_seconds": round(seconds, 6)}

    def task_start(self, job: JobRecord, qpu: str, payload: Payload) -> str:
        """Start a task for the job and record that the job owns it.

        Within the QPU's gateway capacity (or without one) the task goes to the vendor and
        its id is the vendor's; beyond it the gateway holds the task in its fair-share queue
        and answers a gateway task id at once (:mod:`qrmi.gateway.dispatch`).

        Raises:
            QuotaExceededError: a quota of the config refuses the task (the message names the
                limit, the usage and when it resets).
        """
        self.check_qpu(job, qpu)
        reason = self.store.paused(qpu)
        if reason is not None:
            raise GatewayError(
                "ResourcePausedError", f"QPU {qpu!r} is paused by the administrator: {reason}"
            )
        submitted = self.clock()
        resource = self._task_resource(job, qpu)
        with self._quota_lock(job, qpu):
            self._check_quotas(job, qpu)
            if not self.dispatcher.admit(qpu):
                return self._hold(job, qpu, payload, resource, submitted)
            try:
                task_id = resource.task_start(payload)
                self._record_task(job, qpu, task_id, payload, submitted)
            finally:
                self.dispatcher.started(qpu)
            return task_id

    def _hold(
        self,
        job: JobRecord,
        qpu: str,
        payload: Payload,
        resource: QuantumResource,
        submitted: float,
    ) -> str:
        """Queue the task in the gateway (every lane is taken, or other tasks wait)."""
        from qrmi.gateway.wire import payload_to_json

        accepted = resource.backend.PAYLOADS
        if not isinstance(payload, accepted):  # refused now, not when its turn comes
            names = ", ".join(f"Payload.{p.__name__.removesuffix('Payload')}" for p in accepted)
            raise UnsupportedPayloadError(
                f"payload type is not supported: resource {qpu!r} takes {names}, got "
                f"{type(payload).__name__.removesuffix('Payload')}"
            )
        task_id = new_gateway_task_id()
        self._record_task(job, qpu, task_id, payload, submitted)
        weight = quota.job_weight(self.config.quotas, qpu, job.user_name, job.account)
        text = json.dumps(payload_to_json(payload))
        self.store.enqueue(qpu, task_id, job.job_id, text, weight, submitted)
        self.dispatcher.start()
        self.dispatcher.wake()
        return task_id

    def _record_task(
        self, job: JobRecord, qpu: str, task_id: str, payload: Payload, submitted: float
    ) -> None:
        facts = payload_facts(payload)
        self.store.add_task(
            qpu,
            task_id,
            job.job_id,
            UsageRecord(
                qpu=qpu,
                task_id=task_id,
                slurm_job_id=job.job_id,
                uid=job.uid,
                user_name=job.user_name,
                account=job.account,
                partition=job.partition,
                qpu_type=self.type_string(qpu),
                payload_kind=facts.kind,
                program=facts.program,
                shots=facts.shots,
                input_bytes=facts.input_bytes,
                submitted=submitted,
            ),
        )

    # ----- quotas ------------------------------------------------------------------------------

    def _quota_lock(self, job: JobRecord, qpu: str) -> contextlib.AbstractContextManager[object]:
        """The job's lock while per-job limits apply (two tasks started at once must not both
        pass the count); no lock otherwise, so that a job's tasks start in parallel."""
        per_job = any(
            (rule.tasks_per_job or rule.concurrent_tasks_per_job)
            and rule.applies(qpu, job.user_name, job.account)
            for rule in self.config.quotas
        )
        if not per_job:
            return contextlib.nullcontext()
        with self._lock:
            return self._quota_locks.setdefault(job.job_id, threading.Lock())

    def _check_quotas(self, job: JobRecord, qpu: str) -> None:
        rules = [r for r in self.config.quotas if r.applies(qpu, job.user_name, job.account)]
        if not rules:
            return
        user, account = job.user_name, job.account
        refusal = quota.qpu_seconds_refusal(
            rules, qpu, user, account, self.clock(), self.store.qpu_seconds_used
        )
        if refusal is None and any(r.tasks_per_job for r in rules):
            started = self.store.job_task_count(job.job_id, qpu)
            refusal = quota.tasks_refusal(rules, qpu, user, account, job.job_id, started)
        if refusal is None and any(r.concurrent_tasks_per_job for r in rules):
            refusal = self._concurrent_refusal(rules, job, qpu)
        if refusal is not None:
            logger.info("job %s: task refused on %s: %s", job.job_id, qpu, refusal.message)
            raise QuotaExceededError(refusal.message)

    def _concurrent_refusal(
        self, rules: list[quota.QuotaRule], job: JobRecord, qpu: str
    ) -> quota.Refusal | None:
        user, account = job.user_name, job.account
        unfinished = self.store.open_tasks(qpu, job.job_id)
        refusal = quota.concurrent_refusal(rules, qpu, user, account, job.job_id, len(unfinished))
        if refusal is None:
            return None
        # Tasks nobody asked about since they ended still look unfinished: ask the vendor.
        still = [task for task in unfinished if not self.refresh(qpu, task)]
        return quota.concurrent_refusal(rules, qpu, user, account, job.job_id, len(still))

    # ----- tasks the gateway holds -------------------------------------------------------------

    def _held(self, qpu: str, task_id: str) -> QueuedTask | None:
        """The queue entry of a task the gateway held (only its own ids are looked up: the
        direct path costs no query)."""
        return self.store.queued_task(qpu, task_id) if is_gateway_task(task_id) else None

    def refresh(self, qpu: str, task: OpenTask) -> bool:
        """Ask the vendor about an unfinished task and record what it says; True when the task
        is final. A task the vendor no longer knows, long after its start, counts as failed
        (it would hold a lane for ever)."""
        job = self.store.job(task.job_id)
        if job is None or task.queue_state in ("queued", "dispatching"):
            return False
        vendor_id = task.vendor_task_id or task.task_id
        try:
            resource = self._task_resource(job, qpu)
            status = resource.task_status(vendor_id)
        except TaskNotFoundError:
            if self.clock() - task.submitted < STALE_CLAIM_SECONDS:
                return False
            logger.warning("task %s on %s is unknown to the vendor: ended", task.task_id, qpu)
            self._close_usage(qpu, task.task_id, TaskStatus.Failed)
            return True
        except QrmiError as exc:
            logger.info("task %s on %s: no status now: %s", task.task_id, qpu, exc)
            return False
        return self.observe(resource, qpu, task.task_id, status, vendor_id).is_final

    def end_held(self, qpu: str, task_id: str, state: str, reason: str | None = None) -> bool:
        """End a task the gateway holds before the vendor has it (``cancelled`` or
        ``failed``); False when it was no longer waiting."""
        if not self.store.end_queued(qpu, task_id, state, reason):
            return False
        final = TaskStatus.Cancelled if state == "cancelled" else TaskStatus.Failed
        self._close_usage(qpu, task_id, final)
        return True

    def _close_usage(
        self,
        qpu: str,
        task_id: str,
        status: TaskStatus,
        ended: float | None = None,
        seconds: float | None = 0.0,
        source: str | None = "gateway",
    ) -> None:
        """End a task's usage record (once) and count the end in the metrics. Without a cost
        the vendor cannot complete it: the task ran nothing the gateway knows of."""
        if self.store.end_usage(
            qpu,
            task_id,
            state=status.name,
            ended=self.clock() if ended is None else ended,
            quantum_seconds=seconds,
            usage_source=source,
        ):
            self.metrics.task_ended(qpu, status.name)

    def stop_quietly(self, resource: QuantumResource, qpu: str, vendor_id: str) -> None:
        """Stop a vendor task no job wants any more (errors are logged)."""
        try:
            resource.task_stop(vendor_id)
        except QrmiError as exc:
            logger.warning("cannot stop task %s on %s: %s", vendor_id, qpu, exc)

    def job_resource(self, job: JobRecord, qpu: str) -> QuantumResource:
        """The backend that runs the job's tasks on ``qpu`` (shared, or the job's own view)."""
        return self._task_resource(job, qpu)

    def _held_text(self, held: QueuedTask) -> str:
        if held.state in ("queued", "dispatching"):
            ahead = self.store.waiting_ahead(held.qpu, held.seq)
            return (
                f"task {held.task_id} waits in the QRMI gateway's fair-share queue for a lane of "
                f"QPU {held.qpu} ({ahead} task(s) queued before it)"
            )
        if held.state == "cancelled":
            return f"task {held.task_id} was cancelled before it reached QPU {held.qpu}"
        return (
            f"task {held.task_id} could not be submitted to QPU {held.qpu}: "
            f"{held.error or 'no reason recorded'}"
        )

    # ----- task calls --------------------------------------------------------------------------

    def task_status(self, job: JobRecord, qpu: str, task_id: str) -> TaskStatus:
        """The status of one of the job's tasks (``Queued`` while the gateway holds it)."""
        resource = self._owned(job, qpu, task_id)
        held = self._held(qpu, task_id)
        if held is None:
            return self.observe(resource, qpu, task_id, self._vendor_status(resource, task_id))
        if held.vendor_task_id is None:
            return _HELD_STATUS.get(held.state, TaskStatus.Queued)
        status = self._vendor_status(resource, held.vendor_task_id)
        return self.observe(resource, qpu, task_id, status, held.vendor_task_id)

    def _vendor_status(self, resource: QuantumResource, vendor_id: str) -> TaskStatus:
        """The vendor's status of a task; pollers asking at the same moment share one call."""
        key = ("task_status", id(resource), vendor_id)
        return self._coalesce.run(key, lambda: resource.task_status(vendor_id))

    def task_result(self, job: JobRecord, qpu: str, task_id: str) -> TaskResult:
        """The result of one of the job's completed tasks."""
        resource = self._owned(job, qpu, task_id)
        vendor_id = self._vendor_id(qpu, task_id, for_what="result")
        result = resource.task_result(vendor_id)
        self.observe(resource, qpu, task_id, TaskStatus.Completed, vendor_id)
        self.store.set_result_bytes(qpu, task_id, len(result.value))
        return result

    def _vendor_id(self, qpu: str, task_id: str, *, for_what: str) -> str:
        held = self._held(qpu, task_id)
        if held is None:
            return task_id
        if held.vendor_task_id is None:
            raise TaskNotReadyError(
                f"unable to retrieve {for_what} for task {task_id}: {self._held_text(held)}"
            )
        return held.vendor_task_id

    def task_logs(self, job: JobRecord, qpu: str, task_id: str) -> str:
        """The logs of one of the job's tasks (for a task the gateway holds, why it waits or
        failed)."""
        resource = self._owned(job, qpu, task_id)
        held = self._held(qpu, task_id)
        if held is not None and held.vendor_task_id is None:
            return self._held_text(held)
        return resource.task_logs(task_id if held is None else str(held.vendor_task_id))

    def task_stop(self, job: JobRecord, qpu: str, task_id: str) -> None:
        """Stop one of the job's tasks (a finished task keeps its result; a task the gateway
        holds is cancelled without the vendor)."""
        self._owned(job, qpu, task_id)
        self._stop(job, qpu, task_id)

    def _stop(self, job: JobRecord, qpu: str, task_id: str) -> None:
        held = self._held(qpu, task_id)
        if held is not None and held.vendor_task_id is None:
            if self.end_held(qpu, task_id, "cancelled", "stopped by its job") or held.state in (
                "cancelled",
                "failed",
            ):
                return
            held = self._held(qpu, task_id)  # dispatched meanwhile: stop it at the vendor
            if held is None or held.vendor_task_id is None:
                return
        vendor_id = task_id if held is None else str(held.vendor_task_id)
        self._task_resource(job, qpu).task_stop(vendor_id)

    def task_resource(self, job: JobRecord, qpu: str, task_id: str) -> QuantumResource:
        """The resource that runs one of the job's tasks."""
        return self._owned(job, qpu, task_id)

    # ----- administration ----------------------------------------------------------------------

    def admin_stop(self, qpu: str, task_id: str) -> None:
        """Stop any task the gateway started (one it holds is cancelled without the vendor)."""
        record = self.store.task(qpu, task_id)
        job = None if record is None else self.store.job(record.job_id)
        if record is None or job is None:
            raise TaskNotFoundError(f"task {task_id} not found on resource {qpu!r}")
        self._stop(job, qpu, task_id)

    def over_quota(self) -> list[quota.Refusal]:
        """Every user and account that has used up a QPU-seconds quota now (for
        ``qrmi slurm sync``, which has ``sbatch --qpu`` refuse their jobs)."""

        def usage_since(start: float) -> list[quota.Usage]:
            return [quota.Usage(*row) for row in self.store.usage_since(start)]

        return quota.over_quota(
            self.config.quotas, self.config.resource_map, self.clock(), usage_since
        )

    def pause(self, qpu: str, reason: str) -> None:
        """Refuse new tasks on ``qpu`` (running ones continue)."""
        self.definition(qpu)
        self.store.pause(qpu, reason or "paused")

    def resume(self, qpu: str) -> None:
        """Accept new tasks on ``qpu`` again."""
        self.definition(qpu)
        self.store.resume(qpu)


def _build(
    rdef: ResourceDef, job_settings: Mapping[str, str], metrics: GatewayMetrics
) -> QuantumResource:
    """A backend from the admin's settings alone (never the gateway's own environment), its
    calls timed into ``metrics``."""
    settings = {**rdef.environment, **job_settings, **_GATEWAY_SETTINGS}
    return TimedResource(rdef.name, rdef.resource_type, config=settings, metrics=metrics)


#: Settings the gateway imposes on every backend: jobs' circuits are never parsed or simulated
#: in the gateway's own process (it holds every QPU's credentials and serves every job), only
#: in the emulator worker's lanes.
_GATEWAY_SETTINGS = {"QRMI_LOCAL_IN_PROCESS": "false"}


#: Tasks whose recorded state :meth:`GatewayService.observe` remembers at most.
_MAX_NOTED = 100_000
_SLURM_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")


def _check_slurm_name(what: str, value: str | None) -> None:
    if value is not None and not _SLURM_NAME.fullmatch(value):
        raise GatewayError(
            "InvalidInputError",
            f"{what} {value[:80]!r} is not a Slurm {what} name (1 to 64 letters, digits, '._@+-')",
        )


def _is_new_run(job: JobRecord, run_id: str | None) -> bool:
    """Whether a start with ``run_id`` begins a new run of ``job`` (Slurm requeued it).

    Without a run identity a start is the same run (older helpers send none); an active job
    recorded without one takes the first identity it is given as its own."""
    if run_id is None or run_id == job.run_id:
        return False
    return not (job.state == "active" and job.run_id is None)


def _check_job_request(
    job_id: str, uid: int, qpus: list[str], time_limit: int | None, run_id: str | None
) -> None:
    if not _JOB_ID.fullmatch(job_id):
        raise GatewayError(
            "InvalidInputError",
            f"job id {job_id!r} is not a Slurm job id; expected digits such as 1234 "
            "(1234_5 for an array task)",
        )
    if uid < 0:
        raise GatewayError("InvalidInputError", f"uid {uid} must be a non-negative user id")
    if not qpus or len(qpus) > _MAX_QPUS_PER_JOB or len(set(qpus)) != len(qpus):
        raise GatewayError(
            "InvalidInputError",
            f"qpus must list 1 to {_MAX_QPUS_PER_JOB} distinct QPU names; got {qpus!r}",
        )
    if time_limit is not None and time_limit < 0:
        raise GatewayError(
            "InvalidInputError", f"time_limit {time_limit} must be seconds >= 0 (0: none)"
        )
    if run_id is not None and not _RUN_ID.fullmatch(run_id):
        raise GatewayError(
            "InvalidInputError",
            f"run_id {run_id[:80]!r} must be 1 to 64 letters, digits or ':._+-' (the job's "
            "start time, e.g. 2026-12-01T07:05:12)",
        )
