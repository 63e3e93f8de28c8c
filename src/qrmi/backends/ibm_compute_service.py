"""IBM Quantum Compute Service (the Qiskit Runtime REST API): type ``ibm-quantum-compute-service``.

Settings (``{resource}_{KEY}`` or the resource's ``environment`` in ``qrmi_config.json``):

=====================================  =======================================================
``QRMI_IBM_QCS_ENDPOINT``              API base URL with its version prefix, e.g.
                                       ``https://quantum.cloud.ibm.com/api/v1``; required
``QRMI_IBM_QCS_IAM_ENDPOINT``          IBM Cloud IAM base URL; required
``QRMI_IBM_QCS_IAM_APIKEY``            IAM API key; required
``QRMI_IBM_QCS_SERVICE_CRN``           instance CRN (``Service-CRN`` header); required
``QRMI_IBM_QCS_SESSION_MODE``          ``dedicated`` (default) or ``batch``
``QRMI_IBM_QCS_SESSION_MAX_TTL``       session lifetime in seconds; default 28800
``QRMI_IBM_QCS_TIMEOUT_SECONDS``       job ``cost`` (maximum execution seconds); falls back to
                                       ``QRMI_JOB_TIMEOUT_SECONDS``; unset: the service default
``QRMI_IBM_QCS_SESSION_ID``            session to use; falls back to
                                       ``QRMI_JOB_ACQUISITION_TOKEN`` (set by the Slurm plugin)
``QRMI_IBM_QCS_API_VERSION``           ``IBM-API-Version`` header; default :data:`API_VERSION`
``QRMI_IBM_QCS_HTTP_TIMEOUT``          per-request timeout in seconds; default 60
=====================================  =======================================================

The deprecated type ``qiskit-runtime-service`` (:class:`LegacyQiskitRuntimeServiceBackend`)
is the same implementation reading ``QRMI_IBM_QRS_*``; it warns once per resource.

Differences from the reference, on purpose:

* the primitive input is sent **untouched** inside the job's ``params`` (the reference parses it
  into typed models and silently drops fields it does not know);
* every request carries ``IBM-API-Version``, as IBM's API documentation asks;
* a failed token refresh raises :class:`~qrmi.errors.AuthenticationFailedError` instead of
  sending the request without credentials, and a 401 refreshes the token once;
* transient failures (network, 408, 5xx) and throttling (429) are retried with backoff under a
  deadline, as for IBM Quantum System.

Sessions: :meth:`acquire` reuses the configured session (``SESSION_ID`` or the job's acquisition
token) while it accepts jobs and has more than 1 % of its lifetime left, otherwise opens a new
one (``POST /sessions``); each further ``acquire`` opens another session.
:meth:`release` closes it: ``DELETE /sessions/{id}/close`` (which cancels its queued jobs) when
jobs are still pending, else ``PATCH /sessions/{id} {"accepting_jobs": false}``. Jobs started by
this object run in the current session, if any. ``task_stop`` cancels a queued or running job
and never deletes anything.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

from qrmi._version import __version__
from qrmi.backends._ibm_common import (
    IamToken,
    failure_reason,
    fetch_description,
    ibm_error_message,
    json_object,
    primitive_input,
)
from qrmi.backends._usage import duration, seconds
from qrmi.backends.base import Backend, Clock, Sleeper
from qrmi.config import Settings
from qrmi.errors import (
    ConfigError,
    InvalidInputError,
    ResourceNotFoundError,
    TaskNotFoundError,
    TaskNotReadyError,
    UnsupportedPayloadError,
)
from qrmi.http import HttpClient, RetryPolicy
from qrmi.models import (
    Payload,
    QiskitPrimitivePayload,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    TaskResult,
    TaskStatus,
    TaskUsage,
)

__all__ = [
    "API_VERSION",
    "SESSION_MODES",
    "LegacyQiskitRuntimeServiceBackend",
    "QuantumComputeServiceBackend",
]

logger = logging.getLogger(__name__)

#: ``IBM-API-Version`` sent unless ``QRMI_IBM_QCS_API_VERSION`` says otherwise.
API_VERSION = "2025-05-01"
SESSION_MODES = ("dedicated", "batch")
DEFAULT_SESSION_MAX_TTL = 28800
#: Our program ids -> the service's (the reference spells the noise learner without a dash).
PROGRAM_IDS = {
    "sampler": "sampler",
    "estimator": "estimator",
    "noise-learner": "noise-learner",
    "noiselearner": "noise-learner",
}

_BACKEND_STATUS = {
    "online": ResourceStatusCode.Online,
    "active": ResourceStatusCode.Online,
    "paused": ResourceStatusCode.Paused,
    "maintenance": ResourceStatusCode.Paused,
    "offline": ResourceStatusCode.Offline,
}


class QuantumComputeServiceBackend(Backend):
    """A QPU of IBM Quantum Compute Service (Qiskit Runtime REST); see the module docstring."""

    RESOURCE_TYPE: ClassVar[ResourceType | str] = ResourceType.IBMQuantumComputeService
    PAYLOADS: ClassVar[tuple[type[Payload], ...]] = (QiskitPrimitivePayload,)
    STATE_MAP: ClassVar[Mapping[str, TaskStatus]] = {
        "Queued": TaskStatus.Queued,
        "Running": TaskStatus.Running,
        "Completed": TaskStatus.Completed,
        "Failed": TaskStatus.Failed,
        "Cancelled": TaskStatus.Cancelled,
        "Cancelled - Ran too long": TaskStatus.Cancelled,
        # Spellings of older API versions.
        "QUEUED": TaskStatus.Queued,
        "RUNNING": TaskStatus.Running,
        "COMPLETED": TaskStatus.Completed,
        "DONE": TaskStatus.Completed,
        "FAILED": TaskStatus.Failed,
        "ERROR": TaskStatus.Failed,
        "CANCELLED": TaskStatus.Cancelled,
        "CANCELLED - RAN TOO LONG": TaskStatus.Cancelled,
    }
    #: Prefix of this type's settings.
    PREFIX: ClassVar[str] = "QRMI_IBM_QCS_"

    def __init__(
        self,
        resource_id: str,
        settings: Settings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleeper = time.sleep,
    ) -> None:
        super().__init__(resource_id, settings, clock=clock, sleep=sleep)
        endpoint = self._require("ENDPOINT")
        iam_endpoint = self._require("IAM_ENDPOINT")
        apikey = self._require("IAM_APIKEY")
        crn = self._require("SERVICE_CRN")
        self.session_mode = self._session_mode()
        self.session_max_ttl = settings.get_int(
            self.PREFIX + "SESSION_MAX_TTL", DEFAULT_SESSION_MAX_TTL, minimum=1
        )
        self.cost = self._cost()
        timeout = settings.get_float(self.PREFIX + "HTTP_TIMEOUT", 60.0) or 60.0
        api_version = settings.get(self.PREFIX + "API_VERSION") or API_VERSION
        self._token = IamToken(iam_endpoint, apikey, timeout=timeout)
        self._http = HttpClient(
            endpoint,
            service="IBM Quantum Compute Service",
            headers={
                "Accept": "application/json",
                "Service-CRN": crn,
                "IBM-API-Version": api_version,
                "User-Agent": f"pyqrmi/{__version__}",
            },
            auth=self._token,
            timeout=timeout,
            retry=RetryPolicy(backoff_initial=0.25, backoff_max=8.0, deadline=120.0),
            error_message=ibm_error_message,
            clock=self.clock,
            sleep=self.sleep,
        )
        self._session_lock = threading.Lock()
        configured = settings.get(self.PREFIX + "SESSION_ID") or settings.get(
            "QRMI_JOB_ACQUISITION_TOKEN"
        )
        #: The session jobs run in (the configured one until acquire says otherwise).
        self._session_id: str | None = configured
        self._configured_session: str | None = configured

    # ----- settings ------------------------------------------------------------------------

    def _require(self, key: str) -> str:
        return self.settings.require(self.PREFIX + key)

    def _session_mode(self) -> str:
        mode = (self.settings.get(self.PREFIX + "SESSION_MODE") or "dedicated").lower()
        if mode not in SESSION_MODES:
            raise ConfigError(
                f"invalid session mode: {self.settings.env_name(self.PREFIX + 'SESSION_MODE')}="
                f"{mode!r}; valid modes are {' and '.join(SESSION_MODES)}"
            )
        return mode

    def _cost(self) -> int | None:
        own = self.settings.get_int(self.PREFIX + "TIMEOUT_SECONDS", minimum=1)
        if own is not None:
            return own
        return self.settings.get_int("QRMI_JOB_TIMEOUT_SECONDS", minimum=1)

    # ----- resource ------------------------------------------------------------------------

    def fetch_status(self) -> ResourceStatus:
        """``GET /backends/{name}/status``: status word, message and queue length."""
        body = json_object(self._http.get(f"backends/{self.resource_id}/status"), "status")
        word = str(body.get("status", "")).lower()
        queue = body.get("length_queue")
        state = body.get("state")
        return ResourceStatus(
            status=_BACKEND_STATUS.get(word, ResourceStatusCode.Offline),
            status_reason=body.get("message") or None,
            healthy=state if isinstance(state, bool) else None,
            busy=None if not isinstance(queue, int) else queue > 0,
            pending_job_count=queue if isinstance(queue, int) else None,
        )

    def fetch_target(self) -> str:
        """``{"configuration": ..., "properties": ...}`` of the backend."""
        return fetch_description(self._http, f"backends/{self.resource_id}")

    def metadata(self) -> dict[str, str]:
        """``backend_name`` and, once known, ``session_id``."""
        data = {"backend_name": self.resource_id}
        if self._session_id:
            data["session_id"] = self._session_id
        return data

    # ----- sessions ------------------------------------------------------------------------

    def acquire(self) -> str:
        """A session for this resource's jobs; its id is the acquisition token.

        The configured session (``SESSION_ID`` or the job's ``QRMI_JOB_ACQUISITION_TOKEN``) is
        reused once if it is healthy; otherwise, and on every later call, a new session is
        opened, so that each acquisition can be released on its own. Jobs started afterwards
        run in the newest session.
        """
        with self._session_lock:
            configured, self._configured_session = self._configured_session, None
            if configured is not None:
                if self._healthy(configured):
                    self._session_id = configured
                    return configured
                logger.info(
                    "%s: session %s is not usable; opening a new one", self.resource_id, configured
                )
                self._close(configured)
            self._session_id = self._open()
            logger.info(
                "%s: opened %s session %s", self.resource_id, self.session_mode, self._session_id
            )
            return self._session_id

    def release(self, token: str) -> None:
        """Close session ``token`` (idempotent: a closed or unknown session is left alone)."""
        with self._session_lock:
            self._close(token)
            if self._session_id == token:
                self._session_id = None
            if self._configured_session == token:
                self._configured_session = None

    def _healthy(self, session_id: str) -> bool:
        try:
            session = json_object(self._http.get(f"sessions/{session_id}"), "session")
        except ResourceNotFoundError:
            return False
        if session.get("state") == "closed" or session.get("accepting_jobs") is False:
            return False
        max_ttl = session.get("max_ttl") or 1
        active_ttl = session.get("active_ttl")
        if not isinstance(active_ttl, int | float):
            return True
        return bool(active_ttl > int(max_ttl) // 100)

    def _open(self) -> str:
        body = {
            "mode": self.session_mode,
            "backend": self.resource_id,
            "max_ttl": self.session_max_ttl,
        }
        session = json_object(self._http.post("sessions", json=body), "new session")
        session_id = session.get("id")
        if not isinstance(session_id, str) or not session_id:
            raise InvalidInputError(f"the service answered POST /sessions without an id: {session}")
        return session_id

    def _close(self, session_id: str) -> None:
        try:
            pending = json_object(
                self._http.get("jobs", params={"pending": "true", "session_id": session_id}),
                "pending jobs",
            ).get("jobs")
            if pending:
                self._http.delete(f"sessions/{session_id}/close")
            else:
                self._http.patch(f"sessions/{session_id}", json={"accepting_jobs": False})
        except ResourceNotFoundError:
            logger.info("%s: session %s is already gone", self.resource_id, session_id)

    # ----- tasks ---------------------------------------------------------------------------

    def submit(self, payload: Payload) -> str:
        """``POST /jobs`` with the input as ``params``, byte for byte, in the current session."""
        assert isinstance(payload, QiskitPrimitivePayload)
        program_id = PROGRAM_IDS.get(payload.program_id)
        if program_id is None:
            raise UnsupportedPayloadError(
                f"unknown program ID: {payload.program_id!r}; IBM Quantum Compute Service runs "
                "'sampler', 'estimator' and 'noise-learner'"
            )
        primitive_input(payload.input, self.resource_id)
        envelope: dict[str, Any] = {"program_id": program_id, "backend": self.resource_id}
        if self.cost is not None:
            envelope["cost"] = self.cost
        if self._session_id:
            envelope["session_id"] = self._session_id
        envelope["private"] = False
        # Splice the caller's text in unchanged: no field is dropped, no number reformatted.
        content = json.dumps(envelope)[:-1] + ', "params": ' + payload.input + "}"
        response = self._http.post(
            "jobs", content=content, headers={"Content-Type": "application/json"}
        )
        job_id = json_object(response, "new job").get("id")
        if not isinstance(job_id, str) or not job_id:
            raise InvalidInputError("the service answered POST /jobs without a job id")
        return job_id

    def cancel(self, task_id: str) -> None:
        """``POST /jobs/{id}/cancel``; a job that ended meanwhile (409) is left alone."""
        try:
            self._http.post(f"jobs/{task_id}/cancel", not_found=TaskNotFoundError)
        except InvalidInputError as exc:
            logger.info("cancel of task %s not needed: %s", task_id, exc)

    def fetch_state(self, task_id: str) -> str:
        """The job's ``status`` (``state.status`` when the top-level field is absent)."""
        return _job_status(self._job(task_id))

    def task_result(self, task_id: str) -> TaskResult:
        """The result text of a completed job.

        Raises:
            TaskNotReadyError: not completed; a failed job's message carries IBM's reason.
        """
        job = self._job(task_id)
        state = _job_status(job)
        status = self.STATE_MAP.get(state, TaskStatus.Running)
        if status != TaskStatus.Completed:
            detail = f"; {failure_reason(job)}" if status == TaskStatus.Failed else ""
            raise TaskNotReadyError(
                f"unable to retrieve result for task {task_id}: task is not completed "
                f"(current status: {state}){detail}"
            )
        return TaskResult(self.fetch_result(task_id))

    def fetch_result(self, task_id: str) -> str:
        """``GET /jobs/{id}/results`` as text."""
        return _text(self._http.get(f"jobs/{task_id}/results", not_found=TaskNotFoundError))

    def fetch_logs(self, task_id: str) -> str:
        """``GET /jobs/{id}/logs`` as text."""
        return _text(self._http.get(f"jobs/{task_id}/logs", not_found=TaskNotFoundError))

    def task_usage(self, task_id: str) -> TaskUsage | None:
        """From ``GET /jobs/{id}/metrics``: the QPU seconds IBM charged (``usage``
        ``qpu_charge_time_seconds``, else ``quantum_seconds``, else ``seconds``; not while the
        usage ``status`` is ``pending``) and the running time (``timestamps`` ``running`` to
        ``finished``)."""
        response = self._http.get(f"jobs/{task_id}/metrics", not_found=TaskNotFoundError)
        metrics = json_object(response, f"the metrics of job {task_id}")
        usage = metrics.get("usage")
        quantum = None
        if isinstance(usage, Mapping) and usage.get("status") != "pending":
            for name in ("qpu_charge_time_seconds", "quantum_seconds", "seconds"):
                if (quantum := seconds(usage.get(name))) is not None:
                    break
        stamps = metrics.get("timestamps")
        running = (
            duration(stamps.get("running"), stamps.get("finished"))
            if isinstance(stamps, Mapping)
            else None
        )
        if quantum is None and running is None:
            return None
        return TaskUsage(quantum_seconds=quantum, running_seconds=running)

    def _job(self, task_id: str) -> dict[str, Any]:
        response = self._http.get(
            f"jobs/{task_id}", params={"exclude_params": "true"}, not_found=TaskNotFoundError
        )
        return json_object(response, f"job {task_id}")


class LegacyQiskitRuntimeServiceBackend(QuantumComputeServiceBackend):
    """Deprecated type ``qiskit-runtime-service``: reads ``QRMI_IBM_QRS_*`` settings.

    Use type ``ibm-quantum-compute-service`` with ``QRMI_IBM_QCS_*`` settings instead; the old
    names are supported until 2026-11-21, as in the reference.
    """

    RESOURCE_TYPE: ClassVar[ResourceType | str] = ResourceType.IBMQiskitRuntimeService
    PREFIX: ClassVar[str] = "QRMI_IBM_QRS_"

    def __init__(
        self,
        resource_id: str,
        settings: Settings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleeper = time.sleep,
    ) -> None:
        message = (
            f"resource {resource_id!r}: type 'qiskit-runtime-service' and its QRMI_IBM_QRS_* "
            "settings are deprecated; use type 'ibm-quantum-compute-service' with "
            "QRMI_IBM_QCS_* settings (same values)"
        )
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        logger.warning("%s", message)
        super().__init__(resource_id, settings, clock=clock, sleep=sleep)


def _job_status(job: Mapping[str, Any]) -> str:
    status = job.get("status")
    if not isinstance(status, str):
        state = job.get("state")
        status = state.get("status") if isinstance(state, Mapping) else None
    return str(status)


def _text(response: Any) -> str:
    """The body as text; a JSON string literal (some API versions) is unwrapped."""
    text: str = response.text
    if "json" in response.headers.get("content-type", ""):
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if isinstance(value, str):
            return value
    return text
