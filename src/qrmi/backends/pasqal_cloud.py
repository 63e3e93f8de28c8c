"""Pasqal Cloud: type ``pasqal-cloud``. The resource name is the device type.

Device types (case-insensitive resource names): ``FRESNEL``, ``FRESNEL_CAN1``, ``EMU_MPS``,
``EMU_FREE``, ``EMU_FRESNEL``.

Settings (``{resource}_{KEY}`` or the resource's ``environment`` in ``qrmi_config.json``; blank
values count as unset):

======================================  ======================================================
``QRMI_PASQAL_CLOUD_PROJECT_ID``        project the batches are billed to; needed by
                                        ``task_start``
``QRMI_PASQAL_CLOUD_AUTH_TOKEN``        a pre-issued access token (used while valid)
``QRMI_PASQAL_CLOUD_CLIENT_ID``         service-account credentials (OAuth client
``QRMI_PASQAL_CLOUD_CLIENT_SECRET``     credentials grant)
``QRMI_PASQAL_CLOUD_AUTH_ENDPOINT``     token endpoint; default
                                        ``authenticate.pasqal.cloud/oauth/token`` (``https://``
                                        is added when there is no scheme)
``QRMI_PASQAL_CLOUD_BASE_URL``          API base URL; default ``https://apis.pasqal.cloud``
``QRMI_PASQAL_CLOUD_HTTP_TIMEOUT``      seconds per HTTP request; default 30
``QRMI_PASQAL_CLOUD_RETRY_DEADLINE``    seconds one call may spend retrying; default 120
``PASQAL_USERNAME``/``PASQAL_PASSWORD`` (unprefixed) user account credentials
``PASQAL_CONFIG_ROOT``                  (unprefixed, then ``{resource}_PASQAL_CONFIG_ROOT``)
                                        directory holding ``.pasqal/config``; default ``$HOME``
======================================  ======================================================

**Tokens.** A configured token is used while it is usable: any non-JWT text, or a JWT whose
``exp`` is more than 10 s away (read without checking the signature). A malformed JWT is
unusable. Otherwise, or once the API refuses the token (401), a token is fetched from the
auth endpoint: with the username/password when set, else with the client credentials. With
nothing usable, calls fail with :class:`~qrmi.errors.AuthenticationFailedError` naming the
settings to set. ``~/.pasqal/config`` (``key=value`` lines: ``username password client_id
client_secret token project_id auth_endpoint``) fills in what the settings leave unset.

**Tasks.** A Pulser sequence (abstract representation JSON) becomes a batch with one job of
``job_runs`` runs; its task id is the batch id. A CUDA-Q sequence (a JSON object with
``setup`` and ``hamiltonian``) goes to the CUDA-Q job endpoint; its task id is
``cudaq:<job id>``, so any process can tell the kinds apart (the reference kept that in memory).
Results are ``{"counter": {bitstring: count}}``.

Every call goes through :class:`~qrmi.http.HttpClient`: timeouts, bounded retries of 5xx,
429 and network errors, one token refresh on 401 (the reference had none of these).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from qrmi.backends._usage import duration
from qrmi.backends.base import Backend, Clock, Sleeper, dump_json
from qrmi.config import Settings
from qrmi.errors import (
    AuthenticationFailedError,
    ConfigError,
    InvalidInputError,
    QrmiError,
    ServiceError,
    ServiceUnavailableError,
    TaskNotFoundError,
)
from qrmi.http import HttpClient, RetryPolicy
from qrmi.models import (
    PasqalCloudPayload,
    Payload,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    TaskStatus,
    TaskUsage,
)

__all__ = [
    "AUDIENCE",
    "DEVICE_TYPES",
    "PasqalCloudBackend",
    "PasqalCredentials",
    "PasqalToken",
    "jwt_expiry",
    "load_pasqal_config",
]

logger = logging.getLogger(__name__)

PREFIX = "QRMI_PASQAL_CLOUD_"
DEVICE_TYPES = ("FRESNEL", "FRESNEL_CAN1", "EMU_MPS", "EMU_FREE", "EMU_FRESNEL")
DEFAULT_BASE_URL = "https://apis.pasqal.cloud"
DEFAULT_AUTH_ENDPOINT = "authenticate.pasqal.cloud/oauth/token"
AUDIENCE = "https://apis.pasqal.cloud/account/api/v1"
#: Public OAuth client id of Pasqal's user login (the password-realm grant).
USER_LOGIN_CLIENT_ID = "PeZvo7Atx7IVv3iel59asJSb4Ig7vuSB"
#: A token this close to its expiry counts as expired.
EXPIRY_MARGIN_SECONDS = 10.0
CUDAQ_PREFIX = "cudaq:"
CUDAQ_MACHINE = "EMU_MPS"
MAX_RUNS = 2**31 - 1
LOGS_TEXT = "There are no logs for this job."
_CONFIG_KEYS = (
    "username",
    "password",
    "client_id",
    "client_secret",
    "token",
    "project_id",
    "auth_endpoint",
)


# ----- configuration ----------------------------------------------------------------------


def _expand_path(text: str, lookup: Callable[[str], str | None], what: str) -> str:
    """Expand ``~``, ``$VAR`` and ``${VAR}`` (``$$`` is a literal ``$``)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = text.find("}", i + 2)
            name = text[i + 2 : end] if end != -1 else ""
            if end == -1 or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ConfigError(
                    f"{what}={text!r} has a malformed '${{...}}' variable reference; write "
                    "${NAME} with a valid variable name, or $$ for a literal '$'"
                )
            out.append(lookup(name) or "")
            i = end + 1
        else:
            match = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i + 1 :])
            if match is None:
                out.append("$")
                i += 1
            else:
                out.append(lookup(match.group(0)) or "")
                i += 1 + match.end()
    expanded = "".join(out)
    if expanded == "~" or expanded.startswith("~/"):
        expanded = (lookup("HOME") or "") + expanded[1:]
    return expanded


def find_pasqal_config(settings: Settings) -> Path | None:
    """The first readable ``.pasqal/config`` under ``$PASQAL_CONFIG_ROOT``, then
    ``${resource}_PASQAL_CONFIG_ROOT`` (only when the first is unset), then ``$HOME``."""
    roots: list[tuple[str, str]] = []
    global_root = settings.get_global("PASQAL_CONFIG_ROOT")
    if global_root:
        roots.append(("PASQAL_CONFIG_ROOT", global_root))
    else:
        own_root = settings.get("PASQAL_CONFIG_ROOT")
        if own_root:
            roots.append((settings.env_name("PASQAL_CONFIG_ROOT"), own_root))
    home = settings.get_global("HOME")
    if home:
        roots.append(("HOME", home))
    for what, root in roots:
        path = Path(_expand_path(root, settings.get_global, what)) / ".pasqal" / "config"
        if path.is_file() and os.access(path, os.R_OK):
            return path
    return None


def load_pasqal_config(path: Path) -> dict[str, str]:
    """Parse a ``.pasqal/config`` file: ``key=value`` lines, ``#``/``;`` comments, quotes
    stripped; unknown keys and ``[section]`` lines are ignored."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip().lower(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if key in _CONFIG_KEYS and value:
            values[key] = value
    return values


@dataclass(frozen=True)
class PasqalCredentials:
    """Everything the token logic can use; ``None`` means not configured anywhere."""

    token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    username: str | None = None
    password: str | None = None
    project_id: str | None = None
    auth_endpoint: str = DEFAULT_AUTH_ENDPOINT

    @classmethod
    def from_settings(cls, settings: Settings) -> PasqalCredentials:
        """Settings first, then ``PASQAL_USERNAME``/``PASSWORD``, then the config file."""
        path = find_pasqal_config(settings)
        file = load_pasqal_config(path) if path is not None else {}
        if path is not None:
            logger.debug("pasqal-cloud %s: read fallbacks from %s", settings.resource_name, path)
        return cls(
            token=settings.get(PREFIX + "AUTH_TOKEN") or file.get("token"),
            client_id=settings.get(PREFIX + "CLIENT_ID") or file.get("client_id"),
            client_secret=settings.get(PREFIX + "CLIENT_SECRET") or file.get("client_secret"),
            username=settings.get_global("PASQAL_USERNAME") or file.get("username"),
            password=settings.get_global("PASQAL_PASSWORD") or file.get("password"),
            project_id=settings.get(PREFIX + "PROJECT_ID") or file.get("project_id"),
            auth_endpoint=settings.get(PREFIX + "AUTH_ENDPOINT")
            or file.get("auth_endpoint")
            or DEFAULT_AUTH_ENDPOINT,
        )

    def grant(self) -> dict[str, str] | None:
        """The OAuth form to fetch a token with: user login first, else service account."""
        if self.username and self.password:
            return {
                "grant_type": "http://auth0.com/oauth/grant-type/password-realm",
                "realm": "pcs-users",
                "client_id": USER_LOGIN_CLIENT_ID,
                "audience": AUDIENCE,
                "username": self.username,
                "password": self.password,
            }
        if self.client_id and self.client_secret:
            return {
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "audience": AUDIENCE,
            }
        return None

    def __repr__(self) -> str:
        return "PasqalCredentials(***)"


# ----- tokens ------------------------------------------------------------------------------


class MalformedJWT(ValueError):
    """A token shaped like a JWT whose header or claims cannot be decoded."""


def _b64url_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError) as exc:
        raise MalformedJWT(str(exc)) from None


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (unix seconds) of a JWT, ``None`` for a non-JWT or a JWT without one.

    The signature is not checked: the token is only inspected to avoid sending an expired one.

    Raises:
        MalformedJWT: ``token`` has the three-part JWT shape but does not decode.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    header, claims = _b64url_json(parts[0]), _b64url_json(parts[1])
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise MalformedJWT("header and claims must be JSON objects")
    exp = claims.get("exp")
    if exp is None:
        return None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise MalformedJWT(f"'exp' must be a number, got {type(exp).__name__}")
    return float(exp)


class PasqalToken:
    """The Pasqal Cloud access token, as a :class:`~qrmi.http.TokenProvider`; thread-safe.

    ``wall_clock`` (unix seconds) is injectable for tests of expiry.
    """

    def __init__(
        self,
        resource: str,
        credentials: PasqalCredentials,
        auth_http: HttpClient,
        *,
        wall_clock: Clock = time.time,
    ) -> None:
        self._resource = resource
        self._credentials = credentials
        self._auth_http = auth_http
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._static_refused = False
        self._fetched: str | None = None
        self._fetched_until = 0.0
        self.fetch_count = 0

    def token(self) -> str:
        """A usable token: the configured one while valid, else a fetched (cached) one."""
        with self._lock:
            now = self._wall_clock()
            static, why_not = self._usable_static(now)
            if static is not None:
                return static
            if self._fetched is not None and now < self._fetched_until:
                return self._fetched
            grant = self._credentials.grant()
            if grant is None:
                raise AuthenticationFailedError(self._missing_message(why_not))
            self._fetched, self._fetched_until = self._fetch(grant, now)
            return self._fetched

    def invalidate(self) -> None:
        """The API refused the token in use: drop it (a configured one is not used again)."""
        with self._lock:
            if self._fetched is not None:
                self._fetched = None
            else:
                self._static_refused = True

    def _usable_static(self, now: float) -> tuple[str | None, str]:
        token = self._credentials.token
        if not token:
            return None, "no token is configured"
        if self._static_refused:
            return None, "Pasqal Cloud refused the configured token"
        try:
            exp = jwt_expiry(token)
        except MalformedJWT as exc:
            return None, f"the configured token looks like a JWT but is malformed ({exc})"
        if exp is not None and exp <= now + EXPIRY_MARGIN_SECONDS:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(exp))
            return None, f"the configured token expired (or expires within 10 s) at {when}"
        return token, ""

    def _fetch(self, grant: dict[str, str], now: float) -> tuple[str, float]:
        self.fetch_count += 1
        try:
            response = self._auth_http.post("", data=grant, authenticated=False)
            body = response.json()
        except ServiceUnavailableError:
            raise
        except QrmiError as exc:
            raise AuthenticationFailedError(
                f"Pasqal authentication refused the credentials of resource "
                f"{self._resource!r}: {exc}"
            ) from exc
        except ValueError:
            raise AuthenticationFailedError(
                "Pasqal authentication answered with a body that is not JSON; check "
                f"{PREFIX}AUTH_ENDPOINT"
            ) from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthenticationFailedError(
                f"Pasqal authentication returned no access_token; check {PREFIX}AUTH_ENDPOINT"
            )
        return token, self._expiry(token, body, now)

    @staticmethod
    def _expiry(token: str, body: dict[str, Any], now: float) -> float:
        candidates = []
        expires_in = body.get("expires_in")
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
            candidates.append(now + float(expires_in))
        try:
            exp = jwt_expiry(token)
        except MalformedJWT:
            exp = None
        if exp is not None:
            candidates.append(exp)
        return (min(candidates) if candidates else float("inf")) - EXPIRY_MARGIN_SECONDS

    def _missing_message(self, why_not: str) -> str:
        name = self._resource
        return (
            f"pasqal-cloud resource {name!r} has no usable credentials: {why_not}, and no "
            f"refresh credentials are configured. Set {name}_{PREFIX}AUTH_TOKEN to a valid "
            f"token, or {name}_{PREFIX}CLIENT_ID and {name}_{PREFIX}CLIENT_SECRET, or "
            "PASQAL_USERNAME and PASQAL_PASSWORD (or the same keys in ~/.pasqal/config)"
        )

    def __repr__(self) -> str:
        return f"PasqalToken({self._resource!r})"


# ----- the backend -------------------------------------------------------------------------


def device_type_of(resource_id: str) -> str:
    """The device type a resource name stands for (case-insensitive).

    Raises:
        InvalidInputError: the name is not a Pasqal Cloud device type.
    """
    device = resource_id.strip().upper()
    if device not in DEVICE_TYPES:
        raise InvalidInputError(
            f"device {resource_id!r} is invalid: a pasqal-cloud resource must be named after "
            f"its device type. Valid devices: {', '.join(DEVICE_TYPES)}"
        )
    return device


def _with_scheme(url: str) -> str:
    return url if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url) else "https://" + url


def _data(response: Any, what: str) -> Any:
    """The ``data`` member every Pasqal Cloud answer wraps its payload in."""
    try:
        body = response.json()
    except ValueError:
        raise ServiceError(f"Pasqal Cloud answered {what} with a body that is not JSON") from None
    if not isinstance(body, dict) or "data" not in body:
        raise ServiceError(f"Pasqal Cloud answered {what} without a 'data' member")
    return body["data"]


def _cudaq_sequence(sequence: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(sequence)
    except ValueError:
        return None
    if isinstance(parsed, dict) and "setup" in parsed and "hamiltonian" in parsed:
        return parsed
    return None


def _check_runs(job_runs: object) -> int:
    if isinstance(job_runs, bool) or not isinstance(job_runs, int):
        raise InvalidInputError(
            f"job_runs must be an integer number of runs; got {type(job_runs).__name__}"
        )
    if not 1 <= job_runs <= MAX_RUNS:
        raise InvalidInputError(f"job_runs must be between 1 and {MAX_RUNS}; got {job_runs}")
    return job_runs


def normalise_counter(result: Any) -> dict[str, Any]:
    """``{"counter": {bitstring: count}}`` from a CUDA-Q job result (see the module docs)."""
    if isinstance(result, str):
        try:
            result = json.loads(result)
        except ValueError:
            raise ServiceError("the CUDA-Q job result is text that is not JSON") from None
    if not isinstance(result, dict):
        raise ServiceError(f"the CUDA-Q job result is a {type(result).__name__}, not an object")
    counter = result.get("counter", result)
    if isinstance(counter, dict) and len(counter) == 1:
        (only,) = counter.values()
        if isinstance(only, dict):
            counter = only.get("counter", only)
    if not isinstance(counter, dict):
        raise ServiceError("the CUDA-Q job result holds no counter object")
    return {"counter": counter}


class PasqalCloudBackend(Backend):
    """A Pasqal Cloud device or emulator; see the module docstring."""

    RESOURCE_TYPE: ClassVar[ResourceType | str] = ResourceType.PasqalCloud
    PAYLOADS: ClassVar[tuple[type[Payload], ...]] = (PasqalCloudPayload,)
    STATE_MAP: ClassVar[Mapping[str, TaskStatus]] = {
        "PENDING": TaskStatus.Queued,
        "PAUSED": TaskStatus.Queued,
        "RUNNING": TaskStatus.Running,
        "DONE": TaskStatus.Completed,
        "CANCELING": TaskStatus.Cancelled,
        "CANCELED": TaskStatus.Cancelled,
        "ERROR": TaskStatus.Failed,
        "TIMED_OUT": TaskStatus.Failed,
    }

    def __init__(
        self,
        resource_id: str,
        settings: Settings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleeper = time.sleep,
        wall_clock: Clock = time.time,
    ) -> None:
        super().__init__(resource_id, settings, clock=clock, sleep=sleep)
        self.device_type = device_type_of(resource_id)
        self.credentials = PasqalCredentials.from_settings(settings)
        timeout = settings.get_float(PREFIX + "HTTP_TIMEOUT", 30.0) or 30.0
        deadline = settings.get_float(PREFIX + "RETRY_DEADLINE", 120.0) or 120.0
        retry = RetryPolicy(deadline=deadline)
        common: dict[str, Any] = {"timeout": timeout, "retry": retry, "clock": clock}
        common["sleep"] = sleep
        auth_http = HttpClient(
            _with_scheme(self.credentials.auth_endpoint),
            service="Pasqal authentication",
            headers={"Accept": "application/json"},
            **common,
        )
        self.token = PasqalToken(resource_id, self.credentials, auth_http, wall_clock=wall_clock)
        base_url = _with_scheme(settings.get(PREFIX + "BASE_URL", DEFAULT_BASE_URL) or "")
        self._http = HttpClient(
            base_url,
            service="Pasqal Cloud",
            headers={"Accept": "application/json", "Content-Type": "application/json"},
            auth=self.token,
            **common,
        )

    # -- resource ------------------------------------------------------------------------------

    def fetch_status(self) -> ResourceStatus:
        """``GET devices?device_type=T`` (unauthenticated); online iff availability is ACTIVE."""
        response = self._http.get(
            "/core-fast/api/v1/devices",
            params={"device_type": self.device_type},
            authenticated=False,
        )
        devices = _data(response, "the device list")
        if not isinstance(devices, list) or not devices or not isinstance(devices[0], dict):
            return ResourceStatus(
                ResourceStatusCode.Offline,
                status_reason=f"Pasqal Cloud does not list device {self.device_type}",
            )
        device = devices[0]
        availability, state = device.get("availability"), device.get("status")
        online = availability == "ACTIVE"
        return ResourceStatus(
            ResourceStatusCode.Online if online else ResourceStatusCode.Offline,
            status_reason=None if online else f"availability {availability}, status {state}",
            healthy=None if state is None else state == "UP",
        )

    def fetch_target(self) -> str:
        """``[{"device_type", "specs"}]``: for an emulator, every device of the public specs
        (``EMU_MPS``, ``EMU_FREE``, ``EMU_FRESNEL`` ..., as the reference lists them, so programs
        that pick a device from the list pick the same one); for a QPU, its own specs."""
        if self.device_type.startswith("EMU"):
            response = self._http.get("/core-fast/api/v1/devices/public-specs", authenticated=False)
            specs = _data(response, "the public device specs")
            if not isinstance(specs, list):
                raise ServiceError("Pasqal Cloud public specs are not a list")
            return dump_json(specs)
        response = self._http.get(f"/core-fast/api/v1/devices/specs/{self.device_type}")
        spec = _data(response, f"the specs of {self.device_type}")
        return dump_json([spec])

    def metadata(self) -> dict[str, str]:
        """``backend_name`` and ``device_type``."""
        return {"backend_name": self.resource_id, "device_type": self.device_type}

    # -- tasks ---------------------------------------------------------------------------------

    def submit(self, payload: Payload) -> str:
        """Create a batch (Pulser) or a CUDA-Q job; see the module docstring."""
        assert isinstance(payload, PasqalCloudPayload)
        runs = _check_runs(payload.job_runs)
        project = self._project_id()
        cudaq = _cudaq_sequence(payload.sequence)
        if cudaq is not None:
            body = {"machine": CUDAQ_MACHINE, "shots": runs, "project_id": project}
            body["sequence"] = cudaq
            response = self._http.post("/core-fast/api/v1/cudaq/job", json=body)
            return CUDAQ_PREFIX + self._new_id(response, "the CUDA-Q job")
        _check_pulser_sequence(payload.sequence)
        body = {
            "sequence_builder": payload.sequence,
            "jobs": [{"runs": runs}],
            "device_type": self.device_type,
            "project_id": project,
        }
        response = self._http.post("/core-fast/api/v1/batches", json=body)
        return self._new_id(response, "the new batch")

    def fetch_state(self, task_id: str) -> str:
        """The CUDA-Q job's status, or the batch's first job's status (the batch's if none)."""
        if task_id.startswith(CUDAQ_PREFIX):
            job = self._get(f"/core-fast/api/v1/cudaq/job/{_id(task_id)}", task_id)
            return str(job.get("status", ""))
        batch = self._get(f"/core-fast/api/v2/batches/{_id(task_id)}", task_id)
        job_ids = batch.get("job_ids") or []
        if not job_ids:
            return str(batch.get("status", ""))
        job = self._get(f"/core-fast/api/v2/jobs/{job_ids[0]}", task_id)
        return str(job.get("status", ""))

    def task_usage(self, task_id: str) -> TaskUsage | None:
        """The running time of the batch's first job (or the CUDA-Q job): Pasqal Cloud reports
        when the QPU began and finished processing it (``start_timestamp``, ``end_timestamp``)
        and no QPU time of its own."""
        if task_id.startswith(CUDAQ_PREFIX):
            job = self._get(f"/core-fast/api/v1/cudaq/job/{_id(task_id)}", task_id)
        else:
            batch = self._get(f"/core-fast/api/v2/batches/{_id(task_id)}", task_id)
            job_ids = batch.get("job_ids") or []
            if not job_ids:
                return None
            job = self._get(f"/core-fast/api/v2/jobs/{job_ids[0]}", task_id)
        running = duration(job.get("start_timestamp"), job.get("end_timestamp"))
        return None if running is None else TaskUsage(running_seconds=running)

    def cancel(self, task_id: str) -> None:
        """``PATCH v2/batches/{id}/cancel`` (CUDA-Q jobs are batches too)."""
        response = self._http.patch(
            f"/core-fast/api/v2/batches/{_id(task_id)}/cancel", not_found=TaskNotFoundError
        )
        _data(response, f"the cancellation of {task_id}")

    def fetch_result(self, task_id: str) -> str:
        """``{"counter": {...}}`` of the batch's only job, or of the CUDA-Q job."""
        if task_id.startswith(CUDAQ_PREFIX):
            job = self._get(f"/core-fast/api/v1/cudaq/job/{_id(task_id)}", task_id)
            return dump_json(normalise_counter(job.get("result")))
        response = self._http.get(
            f"/core-fast/api/v1/batches/{_id(task_id)}/full_results", not_found=TaskNotFoundError
        )
        results = _data(response, f"the results of {task_id}")
        if not isinstance(results, dict) or not results:
            raise ServiceError(f"No results found for batch {task_id}")
        if len(results) > 1:
            raise ServiceError(
                f"batch {task_id} has {len(results)} jobs; a QRMI task is a batch with one job"
            )
        (job_result,) = results.values()
        if not isinstance(job_result, dict) or not isinstance(job_result.get("counter"), dict):
            raise ServiceError(f"the result of batch {task_id} holds no 'counter' object")
        return dump_json({"counter": job_result["counter"]})

    def fetch_logs(self, task_id: str) -> str:
        """Pasqal Cloud has no logs API: a constant text, once the task is known to exist."""
        self.fetch_state(task_id)
        return LOGS_TEXT

    # -- helpers -------------------------------------------------------------------------------

    def _project_id(self) -> str:
        project = self.credentials.project_id
        if not project:
            raise ConfigError(
                f"{self.settings.env_name(PREFIX + 'PROJECT_ID')} is not set: Pasqal Cloud "
                "needs the project to bill batches to. Set it (or project_id in "
                "~/.pasqal/config)."
            )
        return project

    def _get(self, path: str, task_id: str) -> dict[str, Any]:
        data = _data(self._http.get(path, not_found=TaskNotFoundError), f"task {task_id}")
        if not isinstance(data, dict):
            raise ServiceError(f"Pasqal Cloud answered task {task_id} with a non-object")
        return data

    @staticmethod
    def _new_id(response: Any, what: str) -> str:
        data = _data(response, what)
        task_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(task_id, str | int) or task_id == "":
            raise ServiceError(f"Pasqal Cloud did not return the id of {what}")
        return str(task_id)


def _id(task_id: str) -> str:
    return task_id.removeprefix(CUDAQ_PREFIX)


def _check_pulser_sequence(sequence: str) -> None:
    try:
        parsed = json.loads(sequence)
    except ValueError as exc:
        raise InvalidInputError(
            f"the PasqalCloud payload's sequence is not JSON ({exc}); pass the Pulser "
            "sequence's abstract representation (Sequence.to_abstract_repr())"
        ) from None
    if not isinstance(parsed, dict):
        raise InvalidInputError(
            "the PasqalCloud payload's sequence must be a JSON object: a Pulser abstract "
            "representation, or a CUDA-Q sequence with 'setup' and 'hamiltonian'"
        )
