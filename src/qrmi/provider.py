"""Dynamic resource discovery: ``ResourceProvider`` lists the QPUs an account can use.

Supported types: ``ibm-quantum-compute-service`` (and the deprecated ``qiskit-runtime-service``)
and ``ibm-quantum-system``. ``environment`` is the unprefixed settings map of a
``qrmi_config.json`` entry (``{"QRMI_IBM_QCS_ENDPOINT": ..., ...}``); every resource returned is
built with :meth:`QuantumResource.from_config` from that same map. Nothing is written to
``os.environ`` (the reference exported every credential into the process environment).

Filters are ``key=value`` pairs joined by ``&`` (whitespace around pairs, keys and values is
ignored)::

    num_qubits=N      keep backends with at least N qubits
    max_shots=N       keep backends that allow at least N shots
    name=GLOB         shell-style pattern on the backend name (``ibm_*``)
    status=online     keep only online backends (the only accepted value)
    is_simulator=B    true or false; default false (simulators are left out)

An unknown key or a malformed pair raises :class:`~qrmi.errors.InvalidFilterError` naming it
(the reference ignored unknown keys silently, so a typo returned every backend).

Order, least busy first: Quantum Compute Service backends by the service's ``queue_length``;
Quantum System backends by how many jobs of the account are running or queued on them (the API
reports no queue length), ties keeping the service's order.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qrmi.config import Settings
from qrmi.errors import (
    AuthenticationFailedError,
    ConfigError,
    InvalidFilterError,
    QrmiError,
    ServiceError,
    ServiceUnavailableError,
    UnsupportedResourceTypeError,
)
from qrmi.models import ResourceType
from qrmi.resource import QuantumResource

if TYPE_CHECKING:
    from qrmi.http import HttpClient

__all__ = ["FILTER_KEYS", "ResourceFilter", "ResourceProvider", "parse_filters"]

logger = logging.getLogger(__name__)

#: Filter keys and what their value must be.
FILTER_KEYS = {
    "is_simulator": "true or false",
    "max_shots": "a whole number >= 0",
    "name": "a shell-style pattern such as ibm_*",
    "num_qubits": "a whole number >= 0",
    "status": "online",
}

_PREFIXES = {
    ResourceType.IBMQuantumComputeService: "QRMI_IBM_QCS_",
    ResourceType.IBMQiskitRuntimeService: "QRMI_IBM_QRS_",
    ResourceType.IBMQuantumSystem: "QRMI_IBM_QS_",
}
_REQUIRED = ("ENDPOINT", "IAM_ENDPOINT", "IAM_APIKEY", "SERVICE_CRN")
#: Discovery calls made concurrently (one per candidate backend's configuration).
MAX_CONCURRENT_REQUESTS = 8


@dataclass(frozen=True)
class ResourceFilter:
    """Parsed filters; ``None`` means "no condition"."""

    num_qubits: int | None = None
    max_shots: int | None = None
    name: str | None = None
    online_only: bool = False
    is_simulator: bool = False

    def name_ok(self, name: str) -> bool:
        """Whether ``name`` matches the name pattern."""
        return self.name is None or fnmatch.fnmatchcase(name, self.name)

    def configuration_ok(self, configuration: Mapping[str, Any]) -> bool:
        """Whether a backend configuration passes the qubit, shot and simulator conditions."""
        if bool(configuration.get("simulator", False)) != self.is_simulator:
            return False
        if self.num_qubits is not None and _int(configuration.get("n_qubits")) < self.num_qubits:
            return False
        return self.max_shots is None or _int(configuration.get("max_shots")) >= self.max_shots


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def parse_filters(filters: str | None) -> ResourceFilter:
    """Parse a filter string (see the module docstring).

    Raises:
        InvalidFilterError: unknown key, malformed pair, repeated key or bad value.
    """
    values: dict[str, str] = {}
    for segment in (filters or "").split("&"):
        segment = segment.strip()
        if not segment:
            continue
        key, sep, value = (part.strip() for part in segment.partition("="))
        if not sep or not key or not value:
            raise InvalidFilterError(
                f"invalid filter: {segment!r} is not key=value; write e.g. "
                f"'num_qubits=100&status=online' (valid keys: {', '.join(FILTER_KEYS)})"
            )
        if key not in FILTER_KEYS:
            raise InvalidFilterError(
                f"invalid filter: unknown key {key!r} in {segment!r}; valid keys are "
                f"{', '.join(FILTER_KEYS)}"
            )
        if key in values:
            raise InvalidFilterError(f"invalid filter: key {key!r} is given twice")
        values[key] = value
    return ResourceFilter(
        num_qubits=_count(values, "num_qubits"),
        max_shots=_count(values, "max_shots"),
        name=values.get("name"),
        online_only=_status(values),
        is_simulator=_boolean(values),
    )


def _count(values: Mapping[str, str], key: str) -> int | None:
    raw = values.get(key)
    if raw is None:
        return None
    if not raw.isdigit():
        raise InvalidFilterError(f"invalid filter: {key}={raw!r}; {key} must be {FILTER_KEYS[key]}")
    return int(raw)


def _status(values: Mapping[str, str]) -> bool:
    raw = values.get("status")
    if raw is None:
        return False
    if raw.lower() != "online":
        raise InvalidFilterError(
            f"invalid filter: status={raw!r}; the only accepted value is online"
        )
    return True


def _boolean(values: Mapping[str, str]) -> bool:
    raw = values.get("is_simulator", "false").lower()
    if raw not in ("true", "false"):
        raise InvalidFilterError(
            f"invalid filter: is_simulator={values['is_simulator']!r}; use true or false"
        )
    return raw == "true"


@dataclass(frozen=True)
class _Candidate:
    name: str
    load: int


class ResourceProvider:
    """Discovers the resources of one account (``environment``) of ``resource_type``.

    Construction checks the settings (no network I/O).

    Raises:
        UnsupportedResourceTypeError: the type has no discovery.
        ConfigError: a required key is missing from ``environment``.
    """

    def __init__(self, resource_type: ResourceType | str, environment: Mapping[str, str]) -> None:
        kind = ResourceType.coerce(resource_type)
        if kind not in _PREFIXES:
            supported = ", ".join(t.type_string for t in _PREFIXES)
            raise UnsupportedResourceTypeError(
                "unsupported resource type for dynamic resource discovery: "
                f"{kind.type_string}; discovery supports {supported}"
            )
        self.resource_type = kind
        self.environment = dict(environment)
        self._prefix = _PREFIXES[kind]
        settings = Settings("discovery", self.environment, environ={})
        for key in _REQUIRED:
            if settings.get(self._prefix + key) is None:
                raise ConfigError(
                    f"missing {self._prefix + key!r} in environment map of the "
                    f"{kind.type_string} resource provider; add it to the provider's "
                    '"environment" in qrmi_config.json'
                )
        self._settings = settings

    def resources(self, filters: str | None = None) -> list[QuantumResource]:
        """The matching backends as resources, least busy first.

        Raises:
            InvalidFilterError: the filter string is malformed.
            AuthenticationFailedError / ServiceError: the service refused or failed.
        """
        wanted = parse_filters(filters)
        http = self._client()
        try:
            if self.resource_type == ResourceType.IBMQuantumSystem:
                candidates = self._quantum_system(http, wanted)
            else:
                candidates = self._compute_service(http, wanted)
        finally:
            http.close()
        ordered = sorted(candidates, key=lambda c: c.load)  # stable: ties keep service order
        return [
            QuantumResource.from_config(c.name, self.resource_type, self.environment)
            for c in ordered
        ]

    def least_busy(self, filters: str | None = None) -> QuantumResource | None:
        """The first of :meth:`resources`, or ``None`` when nothing matches."""
        found = self.resources(filters)
        return found[0] if found else None

    # ----- per service ---------------------------------------------------------------------

    def _client(self) -> HttpClient:
        from qrmi.backends._ibm_common import IamToken, ibm_error_message
        from qrmi.http import HttpClient

        get = self._settings.require
        headers = {"Accept": "application/json", "Service-CRN": get(self._prefix + "SERVICE_CRN")}
        if self.resource_type != ResourceType.IBMQuantumSystem:
            from qrmi.backends.ibm_compute_service import API_VERSION

            headers["IBM-API-Version"] = (
                self._settings.get(self._prefix + "API_VERSION") or API_VERSION
            )
        return HttpClient(
            get(self._prefix + "ENDPOINT"),
            service=f"{self.resource_type.type_string} discovery",
            headers=headers,
            auth=IamToken(get(self._prefix + "IAM_ENDPOINT"), get(self._prefix + "IAM_APIKEY")),
            error_message=ibm_error_message,
        )

    def _compute_service(self, http: HttpClient, wanted: ResourceFilter) -> list[_Candidate]:
        devices = _list(http.get("backends").json(), "devices")
        candidates = []
        for device in devices:
            name = device.get("name")
            if not isinstance(name, str) or not wanted.name_ok(name):
                continue
            if bool(device.get("is_simulator", False)) != wanted.is_simulator:
                continue
            status = device.get("status")
            word = status.get("name") if isinstance(status, dict) else status
            if wanted.online_only and str(word).lower() not in ("online", "active"):
                continue
            load = device.get("queue_length")
            candidates.append(_Candidate(name, load if isinstance(load, int) else 1 << 30))
        return self._with_configuration(http, "backends", candidates, wanted)

    def _quantum_system(self, http: HttpClient, wanted: ResourceFilter) -> list[_Candidate]:
        backends = _list(http.get("v1/backends").json(), "backends")
        names = [
            b["name"]
            for b in backends
            if isinstance(b.get("name"), str)
            and wanted.name_ok(b["name"])
            and (not wanted.online_only or str(b.get("status", "")).lower() == "online")
        ]
        load = _jobs_per_backend(http)
        candidates = [_Candidate(name, load.get(name, 0)) for name in names]
        return self._with_configuration(http, "v1/backends", candidates, wanted)

    def _with_configuration(
        self, http: HttpClient, path: str, candidates: list[_Candidate], wanted: ResourceFilter
    ) -> list[_Candidate]:
        """Candidates whose configuration passes the filters (fetched concurrently)."""

        def fetch(candidate: _Candidate) -> dict[str, Any] | None:
            return _configuration(http, f"{path}/{candidate.name}/configuration")

        with ThreadPoolExecutor(max_workers=MAX_CONCURRENT_REQUESTS) as pool:
            configurations = list(pool.map(fetch, candidates))
        return [
            candidate
            for candidate, configuration in zip(candidates, configurations, strict=True)
            if configuration is not None and wanted.configuration_ok(configuration)
        ]


def _list(body: Any, key: str) -> list[dict[str, Any]]:
    items = body.get(key) if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise ServiceError(f"the discovery answer has no {key!r} list; check the endpoint setting")
    return [item for item in items if isinstance(item, dict)]


def _configuration(http: HttpClient, path: str) -> dict[str, Any] | None:
    """A backend's configuration, or ``None`` (skipped with a warning) when unavailable."""
    try:
        body = http.get(path).json()
    except (AuthenticationFailedError, ServiceUnavailableError):
        raise
    except (QrmiError, ValueError) as exc:
        logger.warning("skipping backend: %s", exc)
        return None
    if not isinstance(body, dict) or not isinstance(body.get("n_qubits"), int):
        logger.warning("skipping backend: %s is not a backend configuration", path)
        return None
    return body


def _jobs_per_backend(http: HttpClient) -> dict[str, int]:
    """Running or queued jobs of the account per backend (the QS load measure)."""
    try:
        jobs = _list(http.get("v1/jobs").json(), "jobs")
    except (AuthenticationFailedError, ServiceUnavailableError):
        raise
    except (QrmiError, ValueError) as exc:
        logger.warning("job list unavailable; keeping the service's order: %s", exc)
        return {}
    load: dict[str, int] = {}
    for job in jobs:
        if job.get("status") in ("Queued", "Running") and isinstance(job.get("backend"), str):
            load[job["backend"]] = load.get(job["backend"], 0) + 1
    return load
