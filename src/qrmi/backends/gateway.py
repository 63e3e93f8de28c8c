"""A backend that sends every QRMI call to the QRMI gateway (``qrmi gateway``).

Inside a QPU job run in gateway mode the job's environment holds, instead of the vendor's
settings and credentials, only::

    QRMI_GATEWAY_URL=https://qpu-gw.example.org:8443
    {name}_QRMI_GATEWAY_TOKEN=<the job's token>
    (plus the reference's non-secret variables: QRMI_JOB_QPU_RESOURCES, ..._TYPES,
     {name}_QRMI_JOB_ACQUISITION_TOKEN, {name}_QRMI_JOB_TIMEOUT_SECONDS, QRMI_JOB_ID)

and :class:`~qrmi.QuantumResource` picks this backend whatever the vendor type
(:func:`gateway_settings`), so programs written for direct mode run unchanged.

Settings (``{name}_KEY`` or the config dict; the URL may also be unprefixed):

=================================  ==========================================================
``QRMI_GATEWAY_URL``               the gateway's base URL (required), or the URLs of its
                                   replicas separated by commas
``QRMI_GATEWAY_TOKEN``             the job token (required)
``QRMI_GATEWAY_CA_FILE``           CA bundle for a gateway with a private TLS certificate
``QRMI_GATEWAY_TIMEOUT``           seconds per HTTP try (default 30)
``QRMI_GATEWAY_RETRY_SECONDS``     how long a call retries an unreachable or restarting
                                   gateway before failing (default 60)
=================================  ==========================================================

A gateway that cannot be reached raises :class:`~qrmi.errors.ServiceUnavailableError` once the
retry budget is spent, never hangs. With several replicas listed, a call that cannot reach one
(connection refused or dropped, timeout, HTTP 503) goes on at once with the next, within the
same budget; later calls start with the replica that answered last. Errors the gateway answers
carry the type of the error raised on the gateway host (``TaskNotFoundError``,
``TaskNotReadyError`` ...), raised here again.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from qrmi._version import __version__
from qrmi.backends.base import Backend
from qrmi.config import Settings
from qrmi.errors import ConfigError, QrmiError, ServiceError, ServiceUnavailableError
from qrmi.gateway.wire import error_class, payload_to_json
from qrmi.http import HttpClient, RetryPolicy, StaticToken
from qrmi.models import (
    Payload,
    ResourceCapacity,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    TaskStatus,
)

__all__ = ["GatewayBackend", "gateway_backend_class", "gateway_settings"]

URL_KEY = "QRMI_GATEWAY_URL"
TOKEN_KEY = "QRMI_GATEWAY_TOKEN"
#: Statuses that mean "the gateway is restarting or overloaded": retried within the budget.
#: A 429 is the gateway's QuotaExceededError: an answer, not throttling (retrying cannot help
#: until the quota resets, and the caller must see the reason at once).
_RETRY_STATUSES = frozenset({503})
_ANSWERED = frozenset(range(200, 600)) - _RETRY_STATUSES
#: How long past the wait's own timeout a long-poll request may take to answer.
_LONG_POLL_SLACK = 15.0
_LONG_POLL_MAX = 55.0


def gateway_settings(settings: Settings) -> tuple[str, str] | None:
    """``(url, token)`` when ``settings`` route the resource through a gateway, else None."""
    token = settings.get(TOKEN_KEY)
    url = settings.get(URL_KEY) or settings.get_global(URL_KEY)
    if token and url:
        return url.rstrip("/"), token
    return None


@functools.cache
def gateway_backend_class(kind: ResourceType | str) -> type[GatewayBackend]:
    """The gateway backend reporting ``kind`` as its resource type."""
    name = kind.name if isinstance(kind, ResourceType) else "ThirdParty"
    return type(f"Gateway{name}Backend", (GatewayBackend,), {"RESOURCE_TYPE": kind})


class GatewayBackend(Backend):
    """QRMI calls over HTTP to the gateway, authenticated by the job's token."""

    RESOURCE_TYPE: ClassVar[ResourceType | str] = "gateway"
    PAYLOADS = (
        Payload.QiskitPrimitive,
        Payload.PasqalCloud,
        Payload.IQMServer,
        Payload.AliceBobFelis,
        Payload.Oqtopus,
    )
    STATE_MAP: ClassVar[Mapping[str, TaskStatus]] = {s.name: s for s in TaskStatus}

    def __init__(self, resource_id: str, settings: Settings, **kwargs: Any) -> None:
        super().__init__(resource_id, settings, **kwargs)
        found = gateway_settings(settings)
        if found is None:
            raise ConfigError(
                f"resource {resource_id!r} is not set up for the QRMI gateway: "
                f"{settings.env_name(TOKEN_KEY)} and {URL_KEY} must both be set"
            )
        from qrmi.gateway.wire import split_gateway_urls

        urls, token = found
        self.urls = split_gateway_urls(urls)
        self.url = self.urls[0]
        self._budget = settings.get_float("QRMI_GATEWAY_RETRY_SECONDS", 60.0) or 60.0
        timeout = settings.get_float("QRMI_GATEWAY_TIMEOUT", 30.0) or 30.0
        transport = _transport(settings.get("QRMI_GATEWAY_CA_FILE"))
        # Alone, a gateway is retried until the budget is spent; among replicas, one failed
        # try moves on to the next (the loop in _send_anywhere owns the budget).
        tries = 10_000 if len(self.urls) == 1 else 1
        self._http = [
            HttpClient(
                url,
                service="QRMI gateway",
                headers={"User-Agent": f"pyqrmi/{__version__}", "Accept": "application/json"},
                auth=StaticToken(token),
                timeout=timeout,
                retry=RetryPolicy(
                    max_attempts=tries,  # bounded by the deadline
                    backoff_initial=0.1,
                    backoff_max=2.0,
                    retry_statuses=_RETRY_STATUSES,
                    throttle_statuses=frozenset(),
                    deadline=self._budget,
                ),
                transport=transport,
                clock=self.clock,
                sleep=self.sleep,
            )
            for url in self.urls
        ]
        self._preferred = 0  # the replica that answered last
        self._base = f"v1/qpus/{resource_id}"

    # ----- one call ----------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        suffix = f"/{path}" if path else ""
        url, response = self._send_anywhere(method, self._base + suffix, **kwargs)
        if response.status_code >= 400:
            raise _error_from(response, url)
        try:
            return response.json()
        except ValueError:
            raise ServiceError(
                f"the QRMI gateway at {url} answered {method} {path} with a body that is "
                "not JSON; check that QRMI_GATEWAY_URL names the gateway",
                status_code=response.status_code,
            ) from None

    def _send_anywhere(self, method: str, path: str, **kwargs: Any) -> tuple[str, httpx.Response]:
        """The answer of the first replica that gives one, starting with the last that did;
        rounds over every replica, with a growing pause between rounds, until the budget."""
        count = len(self._http)
        if count == 1:
            return self.url, self._http[0].request(method, path, expected=_ANSWERED, **kwargs)
        started, pause = self.clock(), 0.1
        while True:
            first = self._preferred
            for index in [(first + step) % count for step in range(count)]:
                left = self._budget - (self.clock() - started)
                try:
                    response = self._http[index].request(
                        method, path, expected=_ANSWERED, deadline=max(left, 0.001), **kwargs
                    )
                except ServiceUnavailableError as exc:
                    last = exc
                    continue
                self._preferred = index
                return self.urls[index], response
            if self.clock() - started + pause >= self._budget:
                raise ServiceUnavailableError(
                    f"no QRMI gateway of {', '.join(self.urls)} answered {method} {path} within "
                    f"{self._budget:g} s; the last failure: {last}",
                    status_code=last.status_code,
                )
            self.sleep(pause)
            pause = min(2.0, pause * 2)

    # ----- resource calls ----------------------------------------------------------------------

    def fetch_status(self) -> ResourceStatus:
        """``GET /v1/qpus/{name}/status``."""
        return _status_from(self._call("GET", "status"))

    def is_accessible(self) -> bool:
        """``GET /v1/qpus/{name}/accessible``."""
        return bool(self._call("GET", "accessible").get("accessible"))

    def fetch_target(self) -> str:
        """``GET /v1/qpus/{name}/target``."""
        return str(self._call("GET", "target")["value"])

    def metadata(self) -> dict[str, str]:
        """``GET /v1/qpus/{name}/metadata``; never fails (falls back to ``backend_name``)."""
        try:
            data = self._call("GET", "metadata")
        except QrmiError:
            return {"backend_name": self.resource_id}
        return {str(k): str(v) for k, v in data.items()}

    def acquire(self) -> str:
        """One more lease for the job (the gateway releases it at the job's end at the latest)."""
        return str(self._call("POST", "acquire")["acquisition_token"])

    def release(self, token: str) -> None:
        """Release one of the job's leases (idempotent)."""
        self._call("POST", "release", json={"acquisition_token": token})

    # ----- tasks -------------------------------------------------------------------------------

    def submit(self, payload: Payload) -> str:
        """``POST /v1/qpus/{name}/tasks``."""
        return str(
            self._call("POST", "tasks", json={"payload": payload_to_json(payload)})["task_id"]
        )

    def fetch_state(self, task_id: str) -> str:
        """``GET /v1/qpus/{name}/tasks/{id}``: the status name."""
        return str(self._call("GET", f"tasks/{task_id}")["status"])

    def fetch_result(self, task_id: str) -> str:
        """``GET /v1/qpus/{name}/tasks/{id}/result``."""
        return str(self._call("GET", f"tasks/{task_id}/result")["value"])

    def cancel(self, task_id: str) -> None:
        """``POST /v1/qpus/{name}/tasks/{id}/stop``."""
        self._call("POST", f"tasks/{task_id}/stop")

    def fetch_logs(self, task_id: str) -> str:
        """``GET /v1/qpus/{name}/tasks/{id}/logs``."""
        return str(self._call("GET", f"tasks/{task_id}/logs")["logs"])

    def task_result(self, task_id: str) -> Any:
        """The result; the gateway answers ``TaskNotReadyError`` for an unfinished task."""
        from qrmi.models import TaskResult

        return TaskResult(self.fetch_result(task_id))

    def task_stop(self, task_id: str) -> None:
        """Stop the task; the gateway leaves a final task (and its result) alone."""
        self.cancel(task_id)

    def wait(self, task_id: str, timeout: float | None = None) -> TaskStatus:
        """Long-poll the gateway until the task is final (it answers as soon as it is).

        Raises:
            TaskTimeoutError: ``timeout`` seconds passed first (the task keeps running).
        """
        from qrmi.errors import TaskTimeoutError

        deadline = None if timeout is None else self.clock() + timeout
        while True:
            chunk = _LONG_POLL_MAX
            if deadline is not None:
                chunk = max(0.0, min(chunk, deadline - self.clock()))
            answer = self._call(
                "GET",
                f"tasks/{task_id}/wait",
                params={"timeout": f"{chunk:.3f}"},
                timeout=chunk + _LONG_POLL_SLACK,
            )
            status = TaskStatus[str(answer["status"])]
            if status.is_final:
                return status
            if deadline is not None and self.clock() >= deadline:
                raise TaskTimeoutError(
                    f"task {task_id} on {self.resource_id} is still {status.name} after "
                    f"{timeout:g} s; it keeps running: wait longer or stop it"
                )

    def __repr__(self) -> str:
        return f"GatewayBackend({self.resource_id!r}, {','.join(self.urls)!r})"


def _transport(ca_file: str | None) -> httpx.HTTPTransport | None:
    if not ca_file:
        return None
    import ssl

    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"QRMI_GATEWAY_CA_FILE={ca_file!r} cannot be used: {exc}") from None
    return httpx.HTTPTransport(verify=context)


def _error_from(response: httpx.Response, url: str) -> QrmiError:
    try:
        error = response.json()["error"]
        kind, message = str(error["type"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return ServiceError(
            f"the QRMI gateway at {url} answered HTTP {response.status_code} without a QRMI "
            "error; check that QRMI_GATEWAY_URL names the gateway",
            status_code=response.status_code,
        )
    cls = error_class(kind)
    if issubclass(cls, ServiceError):
        return cls(message, status_code=response.status_code)
    return cls(message)


def _status_from(data: Mapping[str, Any]) -> ResourceStatus:
    capacity = data.get("capacity")
    return ResourceStatus(
        status=ResourceStatusCode[str(data.get("status", "offline")).capitalize()],
        status_reason=data.get("status_reason"),
        healthy=data.get("healthy"),
        busy=data.get("busy"),
        capacity=ResourceCapacity(**capacity) if isinstance(capacity, dict) else None,
        pending_job_count=data.get("pending_job_count"),
    )
