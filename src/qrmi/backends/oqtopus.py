"""OQTOPUS Cloud (User API): type ``oqtopus``. Plain HTTP; the ``oqtopus-client`` SDK is not used.

The resource name is the OQTOPUS device id (``anemone``, ``qulacs`` ...). Settings are read as
``{name}_{KEY}`` or from the resource's ``environment`` in ``qrmi_config.json``:

====================================  ======================================================
``QRMI_OQTOPUS_URL``                  User API base URL (e.g. ``https://api.example/v1``);
                                      required
``QRMI_OQTOPUS_API_TOKEN``            API token, sent as the ``q-api-token`` header; required
``QRMI_OQTOPUS_PROXY``                HTTP(S) proxy URL for every request (API and storage)
``QRMI_OQTOPUS_TIMEOUT``              seconds per HTTP request; default 30
``QRMI_OQTOPUS_RETRY_MAX_ATTEMPTS``   tries per request, the first included; default 3
``QRMI_OQTOPUS_RETRY_BACKOFF_SECONDS``  first backoff delay, doubled per retry; default 0.2
``QRMI_OQTOPUS_RETRY_STATUS_CODES``   statuses retried, e.g. ``429,503``; default
                                      408, 429, 500, 502, 503 and 504
``QRMI_OQTOPUS_RETRY_METHODS``        methods retried, e.g. ``GET,DELETE``; default GET and
                                      DELETE (as the SDK): job registration is not repeated
====================================  ======================================================

``task_start(Payload.Oqtopus(job_spec))``: ``job_spec`` is the JSON text of the SDK's
``OqtopusJobSpec`` fields: ``program`` (one OpenQASM 3 text or a list), ``job_type``
(``sampling`` by default; ``estimation``, ``multi_manual``, ``sse``), ``shots`` (default 1000),
``name``, ``description``, ``transpiler_info``, ``simulator_info``, ``mitigation_info``,
``operator`` (estimation: ``[{"pauli": "X 0 X 1", "coeff": 1.0}]``) and ``device_id`` (default
and only accepted value: the resource's device). The submission is the User API's three steps:
``POST /jobs`` registers a job id and returns a presigned upload form, the program goes to
storage as a zipped JSON document, then ``POST /jobs/{id}/submit`` completes the job.

Status is ``GET /jobs/{id}/status``; the result is the job's result document
(``{"sampling": {"counts": {...}, "divided_counts": ...}, "estimation": ...}``), downloaded
from the presigned URL in ``job_info.result``; ``task_logs`` gives the job's timeline, its
message and, for SSE jobs, the SSE log. ``target()`` is the device description
(``GET /devices/{id}``, with ``device_info`` fetched when it is a storage URL); ``status()``
is online while the device is ``available``. OQTOPUS has no reservations: ``acquire`` returns
a local token (with a warning, as the reference) and ``release`` does nothing.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, ClassVar, TypeGuard
from urllib.parse import quote

import httpx

from qrmi.backends._usage import duration, seconds
from qrmi.backends.base import Backend, Clock, Sleeper, dump_json
from qrmi.config import Settings
from qrmi.errors import (
    ConfigError,
    InvalidInputError,
    ResourceNotFoundError,
    ServiceError,
    TaskNotFoundError,
)
from qrmi.http import HttpClient, RetryPolicy, StaticToken
from qrmi.models import (
    OqtopusPayload,
    Payload,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    TaskStatus,
    TaskUsage,
)

__all__ = [
    "DEFAULT_SHOTS",
    "JOB_SPEC_FIELDS",
    "JOB_TYPES",
    "MAX_SHOTS",
    "OqtopusBackend",
    "build_job",
    "retry_settings",
]

logger = logging.getLogger(__name__)

PREFIX = "QRMI_OQTOPUS_"
SERVICE = "OQTOPUS Cloud"
USER_AGENT = "pyqrmi-oqtopus"
TOKEN_HEADER = "q-api-token"
#: OQTOPUS's own default number of shots (``OqtopusJobSpec.shots``).
DEFAULT_SHOTS = 1000
MAX_SHOTS = 10_000_000
JOB_TYPES = ("sampling", "estimation", "multi_manual", "sse")
JOB_SPEC_FIELDS = (
    "device_id",
    "job_type",
    "program",
    "shots",
    "name",
    "description",
    "transpiler_info",
    "simulator_info",
    "mitigation_info",
    "operator",
    "job_info",
)
_INFO_FIELDS = ("transpiler_info", "simulator_info", "mitigation_info")
_DEFAULT_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_THROTTLE_STATUSES = frozenset({423, 429})
_DEFAULT_RETRY_METHODS = frozenset({"GET", "DELETE"})
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UPLOAD_OK = (200, 201, 204)


# -- settings -------------------------------------------------------------------------------


def retry_settings(settings: Settings) -> tuple[RetryPolicy, frozenset[str]]:
    """The shared HTTP layer's policy for the ``RETRY_*`` settings, and the methods it covers.

    Retries are bounded by the number of attempts (no time budget), like the SDK's.

    Raises:
        ConfigError: a setting is malformed; the message names it.
    """
    attempts = settings.get_int(PREFIX + "RETRY_MAX_ATTEMPTS", 3, minimum=1) or 3
    backoff = settings.get_float(PREFIX + "RETRY_BACKOFF_SECONDS", 0.2)
    if backoff is None or backoff < 0:
        raise ConfigError(
            f"{settings.env_name(PREFIX + 'RETRY_BACKOFF_SECONDS')}={backoff} must be a "
            "number of seconds >= 0"
        )
    statuses = _status_codes(settings) or _DEFAULT_RETRY_STATUSES
    policy = RetryPolicy(
        max_attempts=attempts,
        backoff_initial=backoff,
        backoff_max=max(8.0, backoff),
        throttle_statuses=statuses & _THROTTLE_STATUSES,
        retry_statuses=statuses - _THROTTLE_STATUSES,
        deadline=None,
    )
    return policy, _methods(settings) or _DEFAULT_RETRY_METHODS


def _items(raw: str) -> list[str]:
    return [item for item in raw.replace(",", " ").split() if item]


def _status_codes(settings: Settings) -> frozenset[int]:
    key = PREFIX + "RETRY_STATUS_CODES"
    raw = settings.get(key)
    if raw is None:
        return frozenset()
    codes = set()
    for item in _items(raw):
        if not item.isdigit() or not 100 <= int(item) <= 599:
            raise ConfigError(
                f"{settings.env_name(key)}={raw!r} must list HTTP status codes separated by "
                f"commas, e.g. 429,503; {item!r} is not one"
            )
        codes.add(int(item))
    return frozenset(codes)


def _methods(settings: Settings) -> frozenset[str]:
    key = PREFIX + "RETRY_METHODS"
    raw = settings.get(key)
    if raw is None:
        return frozenset()
    methods = {item.upper() for item in _items(raw)}
    unknown = sorted(methods - _HTTP_METHODS)
    if unknown:
        raise ConfigError(
            f"{settings.env_name(key)}={raw!r} names unknown HTTP methods {unknown}; list "
            f"some of {', '.join(sorted(_HTTP_METHODS))} separated by commas"
        )
    return frozenset(methods)


def _proxy_transport(settings: Settings) -> httpx.HTTPTransport | None:
    proxy = settings.get(PREFIX + "PROXY")
    if proxy is None:
        return None
    if not proxy.startswith(("http://", "https://", "socks5://", "socks5h://")):
        # The value may hold a password: name the setting, never echo it.
        raise ConfigError(
            f"{settings.env_name(PREFIX + 'PROXY')} must be an http://, https:// or "
            "socks5:// URL; fix the proxy setting of the resource"
        )
    try:
        return httpx.HTTPTransport(proxy=proxy)
    except (ValueError, ImportError) as exc:
        raise ConfigError(
            f"{settings.env_name(PREFIX + 'PROXY')} cannot be used: {type(exc).__name__}"
        ) from None


# -- the job specification ------------------------------------------------------------------


def build_job(job_spec: str, device_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check ``job_spec`` (JSON text of ``OqtopusJobSpec`` fields) for device ``device_id``.

    Returns ``(submit_request, job_input)``: the body of ``POST /jobs/{id}/submit`` and the
    document uploaded to storage (``{"program": [...], "operator": [...]}`` or
    ``{"sse_program": "..."}``).

    Raises:
        InvalidInputError: the spec is malformed; the message names the field and the fix.
    """
    spec = _spec_object(job_spec)
    job_type = _job_type(spec.get("job_type", "sampling"))
    wanted_device = spec.get("device_id", device_id)
    if wanted_device != device_id:
        raise InvalidInputError(
            f"job_spec device_id {wanted_device!r} is not this resource's device "
            f"{device_id!r}; drop device_id or run the job on resource {wanted_device!r}"
        )
    legacy = spec.get("job_info")
    legacy_info = legacy if isinstance(legacy, Mapping) else {}
    if legacy is not None and not isinstance(legacy, Mapping):
        raise InvalidInputError("job_spec job_info must be an object with 'program'")
    programs = _programs(spec.get("program", legacy_info.get("program")), job_type)
    operator = _operator(spec.get("operator", legacy_info.get("operator")), job_type)
    request: dict[str, Any] = {"device_id": device_id, "job_type": job_type}
    request["shots"] = _shots(spec.get("shots", DEFAULT_SHOTS))
    for field in ("name", "description"):
        value = spec.get(field)
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"job_spec {field} must be a string; got {value!r}")
        if value is not None:
            request[field] = value
    for field in _INFO_FIELDS:
        request[field] = _info(field, spec.get(field))
    if job_type == "sse":
        return request, {"sse_program": programs[0]}
    job_input: dict[str, Any] = {"program": programs}
    if operator is not None:
        job_input["operator"] = operator
    return request, job_input


def _spec_object(job_spec: str) -> dict[str, Any]:
    try:
        spec = json.loads(job_spec)
    except ValueError as exc:
        raise InvalidInputError(
            f"the Oqtopus payload's job_spec is not valid JSON ({exc}); pass the job as JSON "
            'text: {"program": "OPENQASM 3; ...", "shots": 1000}'
        ) from None
    if not isinstance(spec, dict):
        raise InvalidInputError(
            "the Oqtopus payload's job_spec must be a JSON object with at least 'program'"
        )
    unknown = sorted(set(spec) - set(JOB_SPEC_FIELDS))
    if unknown:
        raise InvalidInputError(
            f"job_spec has unknown fields {unknown}; valid fields: {', '.join(JOB_SPEC_FIELDS)}"
        )
    return spec


def _job_type(value: Any) -> str:
    if value not in JOB_TYPES:
        raise InvalidInputError(
            f"job_spec job_type {value!r} is unknown; use one of {', '.join(JOB_TYPES)}"
        )
    return str(value)


def _programs(value: Any, job_type: str) -> list[str]:
    programs = [value] if isinstance(value, str) else value
    if (
        not isinstance(programs, list)
        or not programs
        or not all(isinstance(p, str) and p.strip() for p in programs)
    ):
        raise InvalidInputError(
            "job_spec program must be a non-empty OpenQASM 3 text (a Python script for sse "
            "jobs) or a non-empty list of them"
        )
    if job_type != "multi_manual" and len(programs) != 1:
        raise InvalidInputError(
            f"a {job_type} job takes exactly one program; got {len(programs)}. Use job_type "
            "multi_manual to combine several programs"
        )
    return list(programs)


def _operator(value: Any, job_type: str) -> list[dict[str, Any]] | None:
    if value is None:
        if job_type == "estimation":
            raise InvalidInputError(
                'an estimation job needs job_spec operator, e.g. [{"pauli": "Z 0 Z 1", '
                '"coeff": 1.0}]'
            )
        return None
    if not isinstance(value, list) or not value:
        raise InvalidInputError("job_spec operator must be a non-empty list of {pauli, coeff}")
    for index, item in enumerate(value):
        coeff = item.get("coeff") if isinstance(item, dict) else None
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("pauli"), str)
            or isinstance(coeff, bool)
            or not isinstance(coeff, int | float | type(None))
        ):
            raise InvalidInputError(
                f"job_spec operator[{index}] must be an object with a Pauli string 'pauli' "
                "(e.g. \"X 0 Y 1\") and a number 'coeff'"
            )
    return [dict(item) for item in value]


def _shots(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHOTS:
        raise InvalidInputError(
            f"job_spec shots must be an integer between 1 and {MAX_SHOTS}; got {value!r}"
        )
    return value


def _info(field: str, value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):  # the User API once took these as JSON text
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, dict):
        raise InvalidInputError(f"job_spec {field} must be a JSON object (or omitted)")
    return value


def _zipped_json(document: Mapping[str, Any], name: str) -> bytes:
    """One JSON document in a zip archive: the form OQTOPUS storage holds job files in."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, json.dumps(document))
    return buffer.getvalue()


def _unzipped(data: bytes, what: str) -> str:
    """The text of the files in a storage zip archive (text that is not a zip, as is)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            return "\n".join(archive.read(n).decode("utf-8", "replace") for n in names)
    except zipfile.BadZipFile:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ServiceError(f"{SERVICE} storage returned {what} that is not a zip") from None


def _is_url(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


class OqtopusBackend(Backend):
    """An OQTOPUS Cloud device; see the module docstring."""

    RESOURCE_TYPE: ClassVar[ResourceType | str] = ResourceType.OQTOPUS
    PAYLOADS: ClassVar[tuple[type[Payload], ...]] = (OqtopusPayload,)
    STATE_MAP: ClassVar[Mapping[str, TaskStatus]] = {
        "registered": TaskStatus.Queued,
        "submitted": TaskStatus.Queued,
        "ready": TaskStatus.Queued,
        "running": TaskStatus.Running,
        "cancelling": TaskStatus.Running,
        "succeeded": TaskStatus.Completed,
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
        self.device_id = resource_id
        url = settings.require(PREFIX + "URL")
        token = settings.require(PREFIX + "API_TOKEN")
        timeout = settings.get_float(PREFIX + "TIMEOUT", 30.0) or 30.0
        policy, self.retry_methods = retry_settings(settings)

        def client(retry: RetryPolicy) -> HttpClient:
            return HttpClient(
                url,
                service=SERVICE,
                headers={"Accept": "application/json", "User-Agent": USER_AGENT},
                auth=StaticToken(token),
                auth_header=TOKEN_HEADER,
                auth_scheme="",
                timeout=timeout,
                retry=retry,
                transport=_proxy_transport(settings),
                clock=clock,
                sleep=sleep,
            )

        self._retrying = client(policy)
        self._once = client(RetryPolicy(max_attempts=1, deadline=None))
        self._device = quote(self.device_id, safe="")

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send through the retrying client only for methods the RETRY_METHODS setting lists."""
        http = self._retrying if method in self.retry_methods else self._once
        return http.request(method, path, **kwargs)

    # -- resource ----------------------------------------------------------------------------

    def fetch_status(self) -> ResourceStatus:
        """Online while the device is ``available``; the queue length is ``n_pending_jobs``."""
        device = self._device_info()
        pending = device.get("n_pending_jobs")
        pending = pending if isinstance(pending, int) and not isinstance(pending, bool) else None
        if device.get("status") == "available":
            return ResourceStatus(ResourceStatusCode.Online, pending_job_count=pending)
        until = device.get("available_at")
        reason = f"{SERVICE} reports device {self.device_id} {device.get('status')}"
        return ResourceStatus(
            ResourceStatusCode.Offline,
            status_reason=reason + (f" until {until}" if until else ""),
            pending_job_count=pending,
        )

    def fetch_target(self) -> str:
        """The device description; ``device_info`` is downloaded when it is a storage URL."""
        device = self._device_info()
        if _is_url(device.get("device_info")):
            data = self._download(device["device_info"], "the device information")
            device["device_info"] = _unzipped(data, "the device information")
        return dump_json(device)

    def metadata(self) -> dict[str, str]:
        """``backend_name`` and ``device_id`` (both the OQTOPUS device id)."""
        return {"backend_name": self.device_id, "device_id": self.device_id}

    def acquire(self) -> str:
        """A local token: OQTOPUS Cloud has no reservations (warned, as the reference does)."""
        logger.warning(
            "OQTOPUS Cloud has no reservation or lock for device %s: acquire returns a local "
            "token and other cloud users share the device",
            self.device_id,
        )
        return str(uuid.uuid4())

    # -- tasks -------------------------------------------------------------------------------

    def submit(self, payload: Payload) -> str:
        """Register a job id, upload the program, submit the job; the task id is the job id."""
        assert isinstance(payload, OqtopusPayload)
        request, job_input = build_job(payload.job_spec, self.device_id)
        registered = self._json(self._request("POST", "/jobs"), "the job registration")
        job_id, form = registered.get("job_id"), registered.get("presigned_url")
        if not isinstance(job_id, str) or not job_id or not isinstance(form, dict):
            raise ServiceError(f"{SERVICE} did not return a job id and an upload URL")
        self._upload(form, job_input)
        self._request("POST", f"/jobs/{_path(job_id)}/submit", json=request)
        return job_id

    def fetch_state(self, task_id: str) -> str:
        """``GET /jobs/{id}/status`` ``.status``."""
        response = self._request(
            "GET", f"/jobs/{_path(task_id)}/status", not_found=TaskNotFoundError
        )
        return str(self._json(response, f"the status of job {task_id}").get("status", ""))

    def task_usage(self, task_id: str) -> TaskUsage | None:
        """The job's ``execution_time`` (the seconds OQTOPUS records the QPU executed it) and
        its running time (``running_at`` to ``ended_at``)."""
        job = self._job(task_id)
        quantum = seconds(job.get("execution_time"))
        running = duration(job.get("running_at"), job.get("ended_at"))
        if quantum is None and running is None:
            return None
        return TaskUsage(quantum_seconds=quantum, running_seconds=running)

    def cancel(self, task_id: str) -> None:
        """``POST /jobs/{id}/cancel``; a job that became final or is cancelling meanwhile is
        left alone."""
        try:
            self._request("POST", f"/jobs/{_path(task_id)}/cancel", not_found=TaskNotFoundError)
        except InvalidInputError:
            if self.fetch_state(task_id) not in ("cancelling", "succeeded", "failed", "cancelled"):
                raise

    def fetch_result(self, task_id: str) -> str:
        """The job's result document as compact JSON."""
        info = self._job_info(self._job(task_id))
        result = info.get("result")
        if _is_url(result):
            text = _unzipped(self._download(result, f"the result of job {task_id}"), "a result")
            try:
                result = json.loads(text)
            except ValueError:
                raise ServiceError(f"the result of job {task_id} is not JSON") from None
        if result is None:
            raise ServiceError(f"{SERVICE} reports job {task_id} succeeded but has no result")
        return dump_json(result)

    def fetch_logs(self, task_id: str) -> str:
        """The job's timeline and message, and the SSE log of SSE jobs."""
        job = self._job(task_id)
        what = f"{job.get('job_type')} on {job.get('device_id')}, {job.get('shots')} shots, "
        if not job.get("job_type"):  # a job registered but never submitted has no details
            what = ""
        lines = [f"job {job.get('job_id', task_id)}: {what}status {job.get('status')}"]
        for stamp in ("submitted_at", "ready_at", "running_at", "ended_at"):
            if job.get(stamp):
                lines.append(f"{stamp}: {job[stamp]}")
        if job.get("execution_time") is not None:
            lines.append(f"execution_time: {job['execution_time']} s")
        info = self._job_info(job)
        if info.get("message"):
            lines.append(f"message: {info['message']}")
        sse_log = info.get("sse_log")
        if _is_url(sse_log):
            lines.append(_unzipped(self._download(sse_log, "the SSE log"), "the SSE log"))
        elif isinstance(sse_log, str) and sse_log:
            lines.append(sse_log)
        return "\n".join(lines)

    # -- helpers -----------------------------------------------------------------------------

    def _device_info(self) -> dict[str, Any]:
        try:
            response = self._request("GET", f"/devices/{self._device}")
        except ResourceNotFoundError:
            raise ResourceNotFoundError(
                f"{SERVICE} has no device {self.device_id!r} (the resource name is the device "
                f"id); known devices: {', '.join(self._device_ids()) or 'none'}"
            ) from None
        return self._json(response, f"device {self.device_id}")

    def _device_ids(self) -> list[str]:
        devices = self._request("GET", "/devices").json()
        if not isinstance(devices, list):
            return []
        return [str(d.get("device_id")) for d in devices if isinstance(d, dict)]

    def _job(self, task_id: str) -> dict[str, Any]:
        response = self._request("GET", f"/jobs/{_path(task_id)}", not_found=TaskNotFoundError)
        return self._json(response, f"job {task_id}")

    @staticmethod
    def _job_info(job: Mapping[str, Any]) -> dict[str, Any]:
        info = job.get("job_info")
        return info if isinstance(info, dict) else {}

    def _upload(self, form: Mapping[str, Any], document: Mapping[str, Any]) -> None:
        """Post the zipped job input to storage with the presigned form fields."""
        url, fields = form.get("url"), form.get("fields")
        if not _is_url(url) or not isinstance(fields, dict) or not fields.get("key"):
            raise ServiceError(f"{SERVICE} returned an upload form without url and key")
        archive = PurePosixPath(str(fields["key"])).name
        content = _zipped_json(document, PurePosixPath(archive).stem + ".json")
        data = {str(k): str(v) for k, v in fields.items() if v is not None}
        files = {"file": (archive, content, "application/zip")}
        self._request("POST", url, data=data, files=files, authenticated=False, expected=_UPLOAD_OK)

    def _download(self, url: str, what: str) -> bytes:
        try:
            return self._request("GET", url, authenticated=False).content
        except ResourceNotFoundError:
            raise ServiceError(f"{SERVICE} storage no longer has {what}") from None

    @staticmethod
    def _json(response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise ServiceError(f"{SERVICE} answered {what} with a body that is not JSON") from None
        if not isinstance(body, dict):
            raise ServiceError(f"{SERVICE} answered {what} with JSON that is not an object")
        return body


def _path(job_id: str) -> str:
    return quote(job_id, safe="")
