"""Alice & Bob Felis: type ``alice-bob-felis``. QIR programs on Alice & Bob's cat-qubit targets.

The resource name names the Felis target: drop the ``ab_`` prefix, turn the first two ``_``
into ``:`` and upper-case (``ab_emu_1q_lescanne_2020`` -> ``EMU:1Q:LESCANNE_2020``).

Settings (``{resource}_{KEY}`` first, then the unprefixed ``{KEY}``):

==================================  =========================================================
``QRMI_AB_FELIS_API_KEY``           API key: base64 of ``user:password`` (HTTP Basic); required
``QRMI_AB_FELIS_BASE_ENDPOINT``     Felis API base URL; required
``QRMI_AB_FELIS_HTTP_TIMEOUT``      seconds per HTTP request; default 30
``QRMI_AB_FELIS_RETRY_DEADLINE``    seconds one call may spend retrying; default 120
==================================  =========================================================

``task_start(Payload.AliceBobFelis(human_qir, input_params))`` creates the job
(``POST /v1/jobs/``) and uploads the QIR (``POST /v1/jobs/{id}/input``, multipart). The status
is the last job event's (no events yet: ``Queued``); the result is the job's output, a CSV
histogram, returned verbatim; ``task_logs`` lists the job's events and errors.

Differences from the reference (which panicked in these cases): a key that is not base64 of
``user:password`` raises :class:`~qrmi.errors.ConfigError`, invalid ``input_params`` JSON
raises :class:`~qrmi.errors.InvalidInputError`, an unknown target raises
:class:`~qrmi.errors.ResourceNotFoundError` listing the known ones, and a job with no events is
``Queued``. ``status()`` asks Felis whether the target is listed (the reference always said
yes without asking), and ``metadata()`` has ``backend_name`` besides ``felis_target``.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from qrmi.backends._usage import duration
from qrmi.backends.base import Backend, Clock, Sleeper, dump_json
from qrmi.config import Settings
from qrmi.errors import (
    ConfigError,
    EnvVarNotSetError,
    InvalidInputError,
    ResourceNotFoundError,
    ServiceError,
    TaskNotFoundError,
)
from qrmi.http import HttpClient, RetryPolicy, StaticToken
from qrmi.models import (
    AliceBobFelisPayload,
    Payload,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    TaskStatus,
    TaskUsage,
)

__all__ = ["FelisBackend", "device_to_target", "target_to_device"]

PREFIX = "QRMI_AB_FELIS_"
_QUEUED = ("CREATED", "FETCHING_INPUT", "INPUT_READY")
_RUNNING = ("COMPILING", "COMPILED", "TRANSPILING", "TRANSPILED", "EXECUTING")
_FAILED = ("TIMED_OUT", "COMPILATION_FAILED", "TRANSPILATION_FAILED", "EXECUTION_FAILED")
#: Events that end a job's execution (its running time ends there).
_EXECUTION_ENDS = ("SUCCEEDED", "EXECUTION_FAILED", "TIMED_OUT", "CANCELLED")


def device_to_target(device: str) -> str:
    """``ab_emu_1q_lescanne_2020`` -> ``EMU:1Q:LESCANNE_2020``."""
    return device.removeprefix("ab_").replace("_", ":", 2).upper()


def target_to_device(target: str) -> str:
    """``EMU:1Q:LESCANNE_2020`` -> ``ab_emu_1q_lescanne_2020``."""
    return "ab_" + target.replace(":", "_").lower()


class FelisBackend(Backend):
    """An Alice & Bob Felis target; see the module docstring."""

    RESOURCE_TYPE: ClassVar[ResourceType | str] = ResourceType.AliceBobFelis
    PAYLOADS: ClassVar[tuple[type[Payload], ...]] = (AliceBobFelisPayload,)
    STATE_MAP: ClassVar[Mapping[str, TaskStatus]] = {
        **dict.fromkeys(_QUEUED, TaskStatus.Queued),
        **dict.fromkeys(_RUNNING, TaskStatus.Running),
        "SUCCEEDED": TaskStatus.Completed,
        "CANCELLED": TaskStatus.Cancelled,
        **dict.fromkeys(_FAILED, TaskStatus.Failed),
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
        self.target_name = device_to_target(resource_id)
        api_key = self._setting("API_KEY")
        _check_api_key(api_key, settings.env_name(PREFIX + "API_KEY"))
        timeout = self._float("HTTP_TIMEOUT", 30.0)
        self._http = HttpClient(
            self._setting("BASE_ENDPOINT"),
            service="Alice & Bob Felis",
            headers={"Accept": "application/json"},
            auth=StaticToken(api_key),
            auth_scheme="Basic",
            timeout=timeout,
            retry=RetryPolicy(deadline=self._float("RETRY_DEADLINE", 120.0)),
            clock=clock,
            sleep=sleep,
        )

    def _setting(self, key: str) -> str:
        value = self.settings.get(PREFIX + key) or self.settings.get_global(PREFIX + key)
        if value is None:
            raise EnvVarNotSetError(
                f"neither {self.settings.env_name(PREFIX + key)} nor {PREFIX + key} is set: set "
                f'one, or add "{PREFIX + key}" to the "environment" of resource '
                f"{self.resource_id!r} in qrmi_config.json"
            )
        return value

    def _float(self, key: str, default: float) -> float:
        if self.settings.get(PREFIX + key) is not None:
            return self.settings.get_float(PREFIX + key, default) or default
        raw = self.settings.get_global(PREFIX + key)
        try:
            return float(raw) if raw is not None else default
        except ValueError:
            raise ConfigError(f"{PREFIX + key}={raw!r} is not a number") from None

    # -- resource ----------------------------------------------------------------------------

    def fetch_status(self) -> ResourceStatus:
        """Online when Felis lists the target."""
        names = [t.get("name") for t in self._targets()]
        if self.target_name in names:
            return ResourceStatus(ResourceStatusCode.Online)
        return ResourceStatus(
            ResourceStatusCode.Offline,
            status_reason=f"Felis does not list target {self.target_name}",
        )

    def fetch_target(self) -> str:
        """The ``GET /v1/targets/`` entry of this resource's target.

        Raises:
            ResourceNotFoundError: Felis does not know the target; the message lists the known.
        """
        targets = self._targets()
        for target in targets:
            if target.get("name") == self.target_name:
                return dump_json(target)
        known = ", ".join(
            f"{t.get('name')} (resource {target_to_device(str(t.get('name')))})" for t in targets
        )
        raise ResourceNotFoundError(
            f"Felis has no target {self.target_name} (from resource name "
            f"{self.resource_id!r}); known targets: {known or 'none'}"
        )

    def metadata(self) -> dict[str, str]:
        """``backend_name`` and ``felis_target``."""
        return {"backend_name": self.resource_id, "felis_target": self.target_name}

    # -- tasks -------------------------------------------------------------------------------

    def submit(self, payload: Payload) -> str:
        """Create the job, then upload the QIR as its input; the task id is the job id."""
        assert isinstance(payload, AliceBobFelisPayload)
        params = _input_params(payload.input_params)
        if not payload.human_qir.strip():
            raise InvalidInputError("the AliceBobFelis payload's human_qir is empty")
        body = {
            "inputDataFormat": "HUMAN_QIR",
            "outputDataFormat": "HISTOGRAM",
            "target": self.target_name,
            "inputParams": params,
        }
        job = self._json(self._http.post("/v1/jobs/", json=body))
        job_id = job.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise ServiceError("Felis did not return the id of the new job")
        files = {"input": ("input", payload.human_qir.encode(), "application/octet-stream")}
        self._http.post(f"/v1/jobs/{job_id}/input", files=files)
        return job_id

    def fetch_state(self, task_id: str) -> str:
        """The type of the job's last event (``CREATED`` while it has none)."""
        events = self._job(task_id).get("events") or []
        last = events[-1] if events else None
        return str(last.get("type", "CREATED")) if isinstance(last, dict) else "CREATED"

    def task_usage(self, task_id: str) -> TaskUsage | None:
        """The time the job ran: from its ``EXECUTING`` event to its final one (``SUCCEEDED``,
        ``EXECUTION_FAILED`` or ``CANCELLED``); Felis reports no QPU time of its own."""
        events = [e for e in self._job(task_id).get("events") or [] if isinstance(e, dict)]
        started = next((e for e in events if e.get("type") == "EXECUTING"), None)
        ended = next((e for e in events if e.get("type") in _EXECUTION_ENDS), None)
        if started is None or ended is None:
            return None
        running = duration(started.get("createdAt"), ended.get("createdAt"))
        return None if running is None else TaskUsage(running_seconds=running)

    def cancel(self, task_id: str) -> None:
        """``DELETE /v1/jobs/{id}``."""
        self._http.delete(f"/v1/jobs/{task_id}", not_found=TaskNotFoundError)

    def fetch_result(self, task_id: str) -> str:
        """The job's output (a CSV histogram), verbatim."""
        return self._http.get(f"/v1/jobs/{task_id}/output", not_found=TaskNotFoundError).text

    def fetch_logs(self, task_id: str) -> str:
        """The job's events and errors as text."""
        job = self._job(task_id)
        lines = [
            f"{e.get('createdAt', '')} {e.get('type', '')} {e.get('message') or ''}".rstrip()
            for e in job.get("events") or []
            if isinstance(e, dict)
        ]
        lines += [f"error: {json.dumps(error)}" for error in job.get("errors") or []]
        return "\n".join(lines) or "no events yet"

    # -- helpers -----------------------------------------------------------------------------

    def _targets(self) -> list[dict[str, Any]]:
        targets = self._http.get("/v1/targets/").json()
        if not isinstance(targets, list):
            raise ServiceError("Felis answered GET /v1/targets/ with something else than a list")
        return [t for t in targets if isinstance(t, dict)]

    def _job(self, task_id: str) -> dict[str, Any]:
        return self._json(self._http.get(f"/v1/jobs/{task_id}", not_found=TaskNotFoundError))

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise ServiceError("Felis answered with a body that is not JSON") from None
        if not isinstance(body, dict):
            raise ServiceError("Felis answered with JSON that is not an object")
        return body


def _check_api_key(api_key: str, setting: str) -> None:
    """The key must be base64 of ``user:password``; the message never shows the key."""
    try:
        decoded = base64.b64decode(api_key, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"{setting} is not valid base64; the Felis API key is base64 of 'user:password' "
            "(e.g. printf '%s' 'user:password' | base64)"
        ) from None
    user, sep, _ = decoded.partition(":")
    if not sep or not user:
        raise ConfigError(
            f"{setting} decodes to text without 'user:password'; the Felis API key is base64 "
            "of 'user:password'"
        )


def _input_params(text: str) -> dict[str, Any]:
    try:
        params = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise InvalidInputError(
            f"the AliceBobFelis payload's input_params is not valid JSON ({exc}); pass an "
            'object such as {"nbShots": 100, "averageNbPhotons": 4}'
        ) from None
    if not isinstance(params, dict):
        raise InvalidInputError(
            "the AliceBobFelis payload's input_params must be a JSON object such as "
            '{"nbShots": 100}'
        )
    return params
