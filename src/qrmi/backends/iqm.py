"""IQM Server (REST API v1): type ``iqm-server``. Plain HTTP; IQM's client libraries are not used.

The resource id is ``"<name>[,<calibration set id>]"`` (default calibration set ``default``).
Settings are read as ``<name>_{KEY}`` (without the calibration set part):

=================================  ==========================================================
``QRMI_IQM_ISA_ENDPOINT``          IQM Server base URL; required
``QRMI_IQM_ISA_TOKEN``             API token (``Authorization: Bearer``); required
``QRMI_IQM_HTTP_TIMEOUT``          seconds per HTTP request; default 30
``QRMI_IQM_RETRY_DEADLINE``        seconds one call may spend retrying; default 120
``QRMI_JOB_ACQUISITION_TOKEN``     echoed in ``metadata()`` when set
=================================  ==========================================================

The quantum computer's alias on the server is ``<name>`` with its **last** ``_`` replaced by
``:`` (``garnet_mock`` -> ``garnet:mock``); ``metadata()["backend_name"]`` is that alias, while
``resource_id()`` stays the id the resource was built with (the reference returned the alias,
which then no longer named the resource's settings).

Payload ``Payload.IQMServer(iqmjson, job_type, use_timeslot, tag)``: ``iqmjson`` is the JSON
text of the run request (``{"circuits": [...], "shots": N, ...}``), ``job_type`` one of
``circuit``, ``run`` and ``sweep``, ``tag`` at most 50 characters.

Status is one ``GET /api/v1/jobs/{id}`` without a server-side wait (the reference long-polled up
to 30 s on every ``task_status``); :meth:`~qrmi.backends.base.Backend.wait` does the polling.
The result is ``{"measurements": ..., "measurement_counts": ...}`` (an artifact the server does
not have is ``null``). ``target()`` combines the dynamic and static quantum architectures, the
calibration set and its quality metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from qrmi.backends._usage import duration
from qrmi.backends.base import Backend, Clock, Sleeper, dump_json
from qrmi.config import Settings
from qrmi.errors import InvalidInputError, ServiceError, TaskNotFoundError
from qrmi.http import HttpClient, RetryPolicy, StaticToken
from qrmi.models import (
    IQMServerPayload,
    Payload,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    TaskStatus,
    TaskUsage,
)

__all__ = ["JOB_TYPES", "MAX_TAG_LENGTH", "IQMServerBackend", "qc_alias", "split_resource_id"]

PREFIX = "QRMI_IQM_"
JOB_TYPES = ("circuit", "run", "sweep")
MAX_TAG_LENGTH = 50
DEFAULT_CALIBRATION_SET = "default"
USER_AGENT = "pyqrmi-iqm"


def split_resource_id(resource_id: str) -> tuple[str, str]:
    """``"garnet_mock,abc"`` -> ``("garnet_mock", "abc")``; the calibration set defaults to
    ``"default"``.

    Raises:
        InvalidInputError: the name or the calibration set part is empty.
    """
    name, _, calibration_set = resource_id.partition(",")
    name, calibration_set = name.strip(), calibration_set.strip()
    if not name or ("," in resource_id and not calibration_set):
        raise InvalidInputError(
            f"IQM resource id {resource_id!r} must be '<name>' or '<name>,<calibration set id>'"
        )
    return name, calibration_set or DEFAULT_CALIBRATION_SET


def qc_alias(name: str) -> str:
    """The server's quantum computer alias: the last ``_`` of ``name`` becomes ``:``."""
    head, sep, tail = name.rpartition("_")
    return f"{head}:{tail}" if sep else name


class IQMServerBackend(Backend):
    """An IQM quantum computer behind IQM Server; see the module docstring."""

    RESOURCE_TYPE: ClassVar[ResourceType | str] = ResourceType.IQMServer
    PAYLOADS: ClassVar[tuple[type[Payload], ...]] = (IQMServerPayload,)
    STATE_MAP: ClassVar[Mapping[str, TaskStatus]] = {
        "waiting": TaskStatus.Queued,
        "processing": TaskStatus.Running,
        "completed": TaskStatus.Completed,
        "failed": TaskStatus.Failed,
        "cancelled": TaskStatus.Cancelled,
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
        self.name, self.calibration_set = split_resource_id(resource_id)
        self.alias = qc_alias(self.name)
        self.settings = own = settings.renamed(self.name)
        endpoint = own.require(PREFIX + "ISA_ENDPOINT")
        token = own.require(PREFIX + "ISA_TOKEN")
        timeout = own.get_float(PREFIX + "HTTP_TIMEOUT", 30.0) or 30.0
        deadline = own.get_float(PREFIX + "RETRY_DEADLINE", 120.0) or 120.0
        self._http = HttpClient(
            endpoint,
            service="IQM Server",
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            auth=StaticToken(token),
            timeout=timeout,
            retry=RetryPolicy(deadline=deadline),
            clock=clock,
            sleep=sleep,
        )
        self._qc = quote(self.alias, safe=":")
        self._calset = quote(self.calibration_set, safe="")

    # -- resource ----------------------------------------------------------------------------

    def fetch_status(self) -> ResourceStatus:
        """``GET quantum-computers/{qc}/health``: online iff ``healthy``."""
        health = self._json(self._http.get(f"/api/v1/quantum-computers/{self._qc}/health"))
        healthy = health.get("healthy") is True
        return ResourceStatus(
            ResourceStatusCode.Online if healthy else ResourceStatusCode.Offline,
            status_reason=None if healthy else f"{self.alias} reports itself unhealthy",
            healthy=healthy,
        )

    def fetch_target(self) -> str:
        """Dynamic and static architecture, calibration set and quality metrics, one call each."""
        calibration = f"/api/v1/calibration-sets/{self._qc}/{self._calset}"
        static = self._http.get(
            f"/api/v1/quantum-computers/{self._qc}/artifacts/static-quantum-architectures",
            expected=(200, 404),
        )
        return dump_json(
            {
                "dynamic_quantum_architecture": self._json(
                    self._http.get(calibration + "/dynamic-quantum-architecture")
                ),
                "calibration_set": self._json(self._http.get(calibration)),
                "quality_metrics": self._json(self._http.get(calibration + "/metrics")),
                "static_quantum_architecture": None
                if static.status_code == 404
                else _parse(static, "the static quantum architecture"),
            }
        )

    def metadata(self) -> dict[str, str]:
        """``backend_name`` (the QC alias), ``calibration_set_id`` and the acquisition token."""
        data = {"backend_name": self.alias, "calibration_set_id": self.calibration_set}
        token = self.settings.get("QRMI_JOB_ACQUISITION_TOKEN")
        if token:
            data["acquisition_token"] = token
        return data

    # -- tasks -------------------------------------------------------------------------------

    def submit(self, payload: Payload) -> str:
        """``POST /api/v1/jobs/{qc}/{job_type}`` with the run request; the task id is the job id."""
        assert isinstance(payload, IQMServerPayload)
        body = _run_request(payload.iqmjson)
        if payload.job_type not in JOB_TYPES:
            raise InvalidInputError(
                f"IQM job_type {payload.job_type!r} is unknown; use one of {', '.join(JOB_TYPES)}"
            )
        params: dict[str, str] = {}
        if payload.use_timeslot is not None:
            params["use_timeslot"] = "true" if payload.use_timeslot else "false"
        if payload.tag is not None:
            if len(payload.tag) > MAX_TAG_LENGTH:
                raise InvalidInputError(
                    f"IQM job tag is {len(payload.tag)} characters long; the limit is "
                    f"{MAX_TAG_LENGTH}. Shorten the tag."
                )
            params["tag"] = payload.tag
        response = self._http.post(
            f"/api/v1/jobs/{self._qc}/{payload.job_type}", params=params, json=body
        )
        job_id = self._json(response).get("id")
        if not isinstance(job_id, str) or not job_id:
            raise ServiceError("IQM Server did not return the id of the new job")
        return job_id

    def fetch_state(self, task_id: str) -> str:
        """``GET /api/v1/jobs/{id}`` ``.status``, without waiting server-side."""
        return str(self._job(task_id).get("status", ""))

    def task_usage(self, task_id: str) -> TaskUsage | None:
        """The time the job ran on the instruments: from its timeline's ``execution_started``
        to ``execution_ended`` (IQM Server reports no QPU time of its own)."""
        stamps: dict[str, Any] = {}
        for entry in self._job(task_id).get("timeline") or []:
            if isinstance(entry, dict):
                stamps.setdefault(str(entry.get("status")), entry.get("timestamp"))
        running = duration(stamps.get("execution_started"), stamps.get("execution_ended"))
        return None if running is None else TaskUsage(running_seconds=running)

    def cancel(self, task_id: str) -> None:
        """``POST /api/v1/jobs/{id}/cancel``."""
        self._http.post(f"/api/v1/jobs/{_job_path(task_id)}/cancel", not_found=TaskNotFoundError)

    def fetch_result(self, task_id: str) -> str:
        """``{"measurements", "measurement_counts"}`` artifacts, pretty-printed like upstream."""
        result = {
            name: self._artifact(task_id, name) for name in ("measurements", "measurement_counts")
        }
        return json.dumps(result, indent=2)

    def fetch_logs(self, task_id: str) -> str:
        """The job's timeline and messages as text."""
        return format_job_log(self._job(task_id))

    # -- helpers -----------------------------------------------------------------------------

    def _job(self, task_id: str) -> dict[str, Any]:
        response = self._http.get(f"/api/v1/jobs/{_job_path(task_id)}", not_found=TaskNotFoundError)
        return self._json(response)

    def _artifact(self, task_id: str, name: str) -> Any:
        response = self._http.get(
            f"/api/v1/jobs/{_job_path(task_id)}/artifacts/{name}", expected=(200, 404)
        )
        if response.status_code == 404:
            self._job(task_id)  # an unknown job is an error, a missing artifact is null
            return None
        return _parse(response, f"the {name} artifact of job {task_id}")

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        body = _parse(response, "the request")
        if not isinstance(body, dict):
            raise ServiceError("IQM Server answered with JSON that is not an object")
        return body


def _job_path(task_id: str) -> str:
    return quote(task_id, safe="")


def _parse(response: Any, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ServiceError(f"IQM Server answered {what} with a body that is not JSON") from None


def _run_request(iqmjson: str) -> dict[str, Any]:
    try:
        body = json.loads(iqmjson)
    except ValueError as exc:
        raise InvalidInputError(
            f"the IQMServer payload's iqmjson is not valid JSON ({exc}); pass the run "
            'request as JSON text: {"circuits": [...], "shots": N}'
        ) from None
    if not isinstance(body, dict):
        raise InvalidInputError(
            "the IQMServer payload's iqmjson must be a JSON object (a run request with "
            "'circuits' and 'shots')"
        )
    return body


def format_job_log(job: Mapping[str, Any]) -> str:
    """The reference's text form of a job's timeline and messages."""
    lines = ["Timeline   :"]
    for entry in job.get("timeline") or []:
        if isinstance(entry, dict):
            stamp = str(entry.get("timestamp", "")).replace("T", " ").rstrip("Z")
            source = str(entry.get("source", ""))
            lines.append(f"  {stamp} [{source:<24}] {entry.get('status', '')}")
    messages = [m for m in job.get("messages") or [] if isinstance(m, dict)]
    if not messages:
        lines.append("Messages   : (none)")
    else:
        lines.append("Messages   :")
        lines += [f"  [{m.get('source', '')!s:<24}] {m.get('message', '')}" for m in messages]
    for error in job.get("errors") or []:
        text = error.get("message", error) if isinstance(error, dict) else error
        lines.append(f"Error      : {text}")
    return "\n".join(lines)
