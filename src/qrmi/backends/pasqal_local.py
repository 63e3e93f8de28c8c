"""Pasqal on-premises QPU through its "Warden" daemon: type ``pasqal-local``.

The Warden is a second-level scheduler next to the QPU. A Slurm job opens a *session*
(``acquire``, done by the Slurm plugin), runs jobs inside it, and closes it (``release``).
Every request except ``GET /accessible`` carries a fresh MUNGE credential in ``x-munge-cred``,
which proves the caller's uid to the Warden.

Settings (``{resource}_{KEY}`` or the resource's ``environment`` in ``qrmi_config.json``):

====================================  =======================================================
``QRMI_WARDEN_URL``                   Warden base URL; required (the deprecated
                                      ``QRMI_URL`` is accepted with a warning)
``QRMI_MUNGE_SOCKET``                 ``munged`` socket (also read unprefixed); default
                                      ``/run/munge/munge.socket.2``
``QRMI_JOB_ACQUISITION_TOKEN``        the session id; set by the Slurm plugin. Needed by
                                      ``task_start`` unless this object called ``acquire``
``QRMI_WARDEN_HTTP_TIMEOUT``          seconds per HTTP request; default 30
``QRMI_WARDEN_RETRY_DEADLINE``        seconds one call may spend retrying; default 120
``QRMI_JOB_ID``, ``QRMI_JOB_UID``     (unprefixed) Slurm job id and user id; needed by
                                      ``acquire``
====================================  =======================================================

Differences from the reference: missing or invalid ``QRMI_JOB_ID``/``QRMI_JOB_UID`` raise
:class:`~qrmi.errors.ConfigError` (the reference panics); ``release(token)`` closes the session
named by ``token`` (the reference ignored its argument and read the environment); MUNGE is
always available (libmunge through ctypes; the reference's PyPI wheel lacked it); a credential
the Warden refuses raises :class:`~qrmi.errors.AuthenticationFailedError`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from qrmi.backends._munge import Munge, MungeError
from qrmi.backends.base import Backend, Clock, Sleeper, dump_json
from qrmi.config import Settings
from qrmi.errors import (
    AuthenticationFailedError,
    ConfigError,
    EnvVarNotSetError,
    InvalidInputError,
    ResourceNotFoundError,
    ServiceError,
    TaskNotFoundError,
    TaskNotReadyError,
)
from qrmi.http import HttpClient, RetryPolicy
from qrmi.models import (
    PasqalCloudPayload,
    Payload,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    TaskStatus,
)

__all__ = ["MungeCredential", "PasqalLocalBackend"]

logger = logging.getLogger(__name__)

MAX_SHOTS = 2**31 - 1
_SLURM_JOB_ID = re.compile(r"[0-9]+(?:[_+][0-9]+)?")


class MungeCredential:
    """A :class:`~qrmi.http.TokenProvider` that mints a fresh MUNGE credential per request."""

    def __init__(self, munge: Munge) -> None:
        self._munge = munge

    def token(self) -> str:
        """A new credential with an empty payload."""
        try:
            return self._munge.encode()
        except MungeError as exc:
            raise AuthenticationFailedError(
                f"cannot create a MUNGE credential for the Warden: {exc}. Start munged, or "
                "set QRMI_MUNGE_SOCKET to the socket of a running munged."
            ) from None

    def invalidate(self) -> None:
        """Nothing cached: every request gets a new credential anyway."""

    def __repr__(self) -> str:
        return f"MungeCredential({self._munge.socket!r})"


class PasqalLocalBackend(Backend):
    """A Pasqal QPU behind a Warden; see the module docstring."""

    RESOURCE_TYPE: ClassVar[ResourceType | str] = ResourceType.PasqalLocal
    PAYLOADS: ClassVar[tuple[type[Payload], ...]] = (PasqalCloudPayload,)
    STATE_MAP: ClassVar[Mapping[str, TaskStatus]] = {
        "PENDING": TaskStatus.Queued,
        "RUNNING": TaskStatus.Running,
        "DONE": TaskStatus.Completed,
        "CANCELED": TaskStatus.Cancelled,
        "ERROR": TaskStatus.Failed,
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
        url = self._warden_url(settings)
        socket = settings.get("QRMI_MUNGE_SOCKET") or settings.get_global("QRMI_MUNGE_SOCKET")
        self.munge = Munge(socket)
        timeout = settings.get_float("QRMI_WARDEN_HTTP_TIMEOUT", 30.0) or 30.0
        deadline = settings.get_float("QRMI_WARDEN_RETRY_DEADLINE", 120.0) or 120.0
        self._http = HttpClient(
            url,
            service="Pasqal Warden",
            headers={"Accept": "application/json"},
            auth=MungeCredential(self.munge),
            auth_scheme="",
            auth_header="x-munge-cred",
            timeout=timeout,
            retry=RetryPolicy(deadline=deadline),
            clock=clock,
            sleep=sleep,
        )
        self._lock = threading.Lock()
        self._session: str | None = None

    @staticmethod
    def _warden_url(settings: Settings) -> str:
        url = settings.get("QRMI_WARDEN_URL")
        if url is not None:
            return url
        legacy = settings.get("QRMI_URL")
        if legacy is not None:
            logger.warning(
                "%s is deprecated; rename it to %s",
                settings.env_name("QRMI_URL"),
                settings.env_name("QRMI_WARDEN_URL"),
            )
            return legacy
        return settings.require("QRMI_WARDEN_URL")

    # -- resource and sessions ---------------------------------------------------------------

    def fetch_status(self) -> ResourceStatus:
        """``GET /accessible`` (no credential needed)."""
        body = self._json(self._http.get("/accessible", authenticated=False), "/accessible")
        accessible = bool(body.get("is_accessible"))
        message = body.get("message")
        return ResourceStatus(
            ResourceStatusCode.Online if accessible else ResourceStatusCode.Offline,
            status_reason=None if accessible else (str(message) if message else None),
        )

    def acquire(self) -> str:
        """Open a Warden session for this Slurm job (``POST /sessions``); return its id."""
        body = {"user_id": str(self._job_uid()), "slurm_job_id": self._job_id()}
        session = self._json(self._call("POST", "/sessions", json=body), "the new session")
        session_id = session.get("id")
        if session_id in (None, ""):
            raise ServiceError("the Warden did not return the id of the new session")
        with self._lock:
            self._session = str(session_id)
        return str(session_id)

    def release(self, token: str) -> None:
        """Close the session named by ``token``; closing an unknown or closed one is harmless."""
        if not token:
            raise InvalidInputError("release() needs the session id that acquire() returned")
        try:
            self._call("DELETE", f"/sessions/{token}")
        except ResourceNotFoundError:
            logger.info("Warden session %s was already closed", token)
        with self._lock:
            if self._session == token:
                self._session = None

    # -- tasks -------------------------------------------------------------------------------

    def submit(self, payload: Payload) -> str:
        """``POST /jobs`` in the session, with the sequence and the number of shots."""
        assert isinstance(payload, PasqalCloudPayload)
        shots = payload.job_runs
        if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= MAX_SHOTS:
            raise InvalidInputError(
                f"job_runs must be an integer between 1 and {MAX_SHOTS}; got {shots!r}"
            )
        _check_sequence(payload.sequence)
        body = {"sequence": payload.sequence, "shots": shots}
        headers = {"X-Warden-Session": self._session_id()}
        job = self._json(self._call("POST", "/jobs", json=body, headers=headers), "the new job")
        if job.get("id") in (None, ""):
            raise ServiceError("the Warden did not return the id of the new job")
        return str(job["id"])

    def fetch_state(self, task_id: str) -> str:
        """``GET /jobs/{id}`` ``.status``."""
        return str(self._job(task_id).get("status", ""))

    def cancel(self, task_id: str) -> None:
        """``POST /jobs/{id}/cancel``."""
        self._call("POST", f"/jobs/{task_id}/cancel", not_found=TaskNotFoundError)

    def fetch_result(self, task_id: str) -> str:
        """The job's ``results`` text (by convention ``{"counter": {...}}``)."""
        job = self._job(task_id)
        results = job.get("results")
        if results is None:
            raise TaskNotReadyError(
                f"unable to retrieve result for task {task_id}: results not available "
                f"(current status: {job.get('status')})"
            )
        return results if isinstance(results, str) else dump_json(results)

    def fetch_logs(self, task_id: str) -> str:
        """``GET /jobs/{id}/logs`` ``.logs``."""
        response = self._call("GET", f"/jobs/{task_id}/logs", not_found=TaskNotFoundError)
        return str(self._json(response, f"the logs of job {task_id}").get("logs", ""))

    def fetch_target(self) -> str:
        """``[{"device_type": <name>, "specs": <device JSON>}]`` from ``GET /qpu/specs``."""
        body = self._json(self._call("GET", "/qpu/specs"), "the QPU specs")
        specs = body.get("specs")
        if not isinstance(specs, str):
            raise ServiceError("the Warden's /qpu/specs answer has no 'specs' text")
        try:
            name = json.loads(specs).get("name")
        except (ValueError, AttributeError):
            raise ServiceError("the Warden's QPU specs are not a JSON object") from None
        return dump_json([{"device_type": name, "specs": specs}])

    def metadata(self) -> dict[str, str]:
        """``backend_name`` and, once known, the Warden ``session``."""
        data = {"backend_name": self.resource_id}
        session = self._session or self.settings.get("QRMI_JOB_ACQUISITION_TOKEN")
        if session:
            data["session"] = session
        return data

    # -- helpers -----------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One authenticated request; a refused MUNGE credential is an authentication error."""
        try:
            return self._http.request(method, path, **kwargs)
        except ServiceError as exc:
            if exc.status_code == 403:
                raise AuthenticationFailedError(
                    f"the Pasqal Warden refused this user ({exc}); ask the Warden admin to "
                    "allow your uid"
                ) from exc
            raise

    def _job(self, task_id: str) -> dict[str, Any]:
        response = self._call("GET", f"/jobs/{task_id}", not_found=TaskNotFoundError)
        return self._json(response, f"job {task_id}")

    @staticmethod
    def _json(response: Any, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise ServiceError(f"the Warden answered {what} with a body that is not JSON") from None
        if not isinstance(body, dict):
            raise ServiceError(f"the Warden answered {what} with a non-object")
        return body

    def _session_id(self) -> str:
        session = self.settings.get("QRMI_JOB_ACQUISITION_TOKEN") or self._session
        if session is None:
            raise EnvVarNotSetError(
                f"{self.settings.env_name('QRMI_JOB_ACQUISITION_TOKEN')} is not set: tasks run "
                "inside a Warden session. Run inside a Slurm job with --qpu (the plugin opens "
                "the session), or call acquire() first on this resource."
            )
        return session

    def _job_id(self) -> str:
        job_id = self.settings.get_global("QRMI_JOB_ID")
        if job_id is None:
            raise EnvVarNotSetError(
                "QRMI_JOB_ID environment variable is not set: a Warden session belongs to a "
                "Slurm job. Run inside a Slurm job, or set QRMI_JOB_ID and QRMI_JOB_UID."
            )
        if not _SLURM_JOB_ID.fullmatch(job_id):
            raise ConfigError(
                f"QRMI_JOB_ID={job_id!r} is not a Slurm job id; expected digits such as 1234 "
                "(or 1234_5 for an array task)"
            )
        return job_id

    def _job_uid(self) -> int:
        raw = self.settings.get_global("QRMI_JOB_UID")
        if raw is None:
            raise EnvVarNotSetError(
                "QRMI_JOB_UID environment variable is not set: a Warden session belongs to a "
                "user. Run inside a Slurm job, or set QRMI_JOB_UID to the numeric user id."
            )
        try:
            uid = int(raw)
        except ValueError:
            raise ConfigError(
                f"QRMI_JOB_UID={raw!r} is not a numeric user id; set it to an integer such "
                "as $(id -u)"
            ) from None
        if uid < 0:
            raise ConfigError(f"QRMI_JOB_UID={uid} must be a non-negative user id")
        return uid


def _check_sequence(sequence: str) -> None:
    try:
        parsed = json.loads(sequence)
    except ValueError as exc:
        raise InvalidInputError(
            f"the PasqalCloud payload's sequence is not JSON ({exc}); pass the Pulser "
            "sequence's abstract representation (Sequence.to_abstract_repr())"
        ) from None
    if not isinstance(parsed, dict):
        raise InvalidInputError(
            "the PasqalCloud payload's sequence must be a Pulser abstract representation "
            "(a JSON object)"
        )
