"""Value types shared by callers and backends: resource types, payloads, statuses, results."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from qrmi.errors import UnsupportedResourceTypeError

__all__ = [
    "Payload",
    "ResourceCapacity",
    "ResourceStatus",
    "ResourceStatusCode",
    "ResourceType",
    "Target",
    "TaskResult",
    "TaskStatus",
    "TaskUsage",
]


class _ReferenceEnum(enum.IntEnum):
    """An ``IntEnum`` whose ``str``, ``repr`` and ``format`` are ``Class.Member``, like the
    reference's enums (``str(TaskStatus.Queued) == repr(...) == "TaskStatus.Queued"``)."""

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __repr__(self) -> str:
        return str(self)

    def __format__(self, format_spec: str) -> str:
        try:
            return format(str(self), format_spec)
        except ValueError:  # a numeric spec such as ``d``: format the value
            return int.__format__(self, format_spec)


class ResourceType(_ReferenceEnum):
    """The kind of a quantum resource; each maps to one backend and one type string.

    Integer values and member names are the reference's, so code comparing them keeps working.
    """

    IBMQuantumSystem = 0
    IBMQiskitRuntimeService = 1
    IBMQuantumComputeService = 2
    PasqalCloud = 3
    PasqalLocal = 4
    AliceBobFelis = 5
    IQMServer = 6
    OQTOPUS = 7
    LocalEmulator = 100

    @property
    def type_string(self) -> str:
        """The spelling used in ``qrmi_config.json`` and ``QRMI_JOB_QPU_TYPES``."""
        return _TYPE_STRINGS[self]

    @classmethod
    def from_string(cls, text: str) -> ResourceType:
        """Parse a type string such as ``"ibm-quantum-system"``.

        Raises:
            UnsupportedResourceTypeError: ``text`` is not a known type string.
        """
        for member, spelling in _TYPE_STRINGS.items():
            if spelling == text.strip():
                return member
        valid = ", ".join(sorted(_TYPE_STRINGS.values()))
        raise UnsupportedResourceTypeError(
            f"unknown resource type {text!r}; valid type strings are: {valid}"
        )

    @classmethod
    def coerce(cls, value: ResourceType | str | int) -> ResourceType:
        """Accept a member, its type string or its integer value."""
        if isinstance(value, ResourceType):
            return value
        if isinstance(value, str):
            return cls.from_string(value)
        try:
            return cls(value)
        except ValueError:
            raise UnsupportedResourceTypeError(f"unknown resource type value {value!r}") from None


_TYPE_STRINGS: dict[ResourceType, str] = {
    ResourceType.IBMQuantumSystem: "ibm-quantum-system",
    ResourceType.IBMQiskitRuntimeService: "qiskit-runtime-service",
    ResourceType.IBMQuantumComputeService: "ibm-quantum-compute-service",
    ResourceType.PasqalCloud: "pasqal-cloud",
    ResourceType.PasqalLocal: "pasqal-local",
    ResourceType.AliceBobFelis: "alice-bob-felis",
    ResourceType.IQMServer: "iqm-server",
    ResourceType.OQTOPUS: "oqtopus",
    ResourceType.LocalEmulator: "local-emulator",
}


class TaskStatus(_ReferenceEnum):
    """Status of a task. ``Completed``, ``Failed`` and ``Cancelled`` are final."""

    Queued = 0
    Running = 1
    Completed = 2
    Failed = 3
    Cancelled = 4

    @property
    def is_final(self) -> bool:
        """True once the task can no longer change state."""
        return self in (TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Cancelled)


class ResourceStatusCode(_ReferenceEnum):
    """Coarse availability of a resource."""

    Online = 0
    Offline = 1
    Paused = 2


@dataclass(frozen=True)
class ResourceCapacity:
    """Execution slots (lanes) of a resource."""

    available_slots: int
    max_slots: int


@dataclass(frozen=True)
class ResourceStatus:
    """What a resource reports about itself; unknown fields are ``None``."""

    status: ResourceStatusCode
    status_reason: str | None = None
    healthy: bool | None = None
    busy: bool | None = None
    capacity: ResourceCapacity | None = None
    pending_job_count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, with the status as a lower-case word (``"online"``)."""
        data = asdict(self)
        data["status"] = self.status.name.lower()
        return data


@dataclass(frozen=True)
class TaskResult:
    """A task's serialized result; ``value`` is vendor-specific text (usually JSON)."""

    value: str

    def json(self) -> Any:
        """``value`` parsed as JSON."""
        return json.loads(self.value)


@dataclass(frozen=True)
class Target:
    """A resource's serialized device description (JSON text in ``value``)."""

    value: str

    def json(self) -> Any:
        """``value`` parsed as JSON."""
        return json.loads(self.value)


@dataclass(frozen=True)
class TaskUsage:
    """What a task cost, as the vendor reports it (pyqrmi extension; unknown fields ``None``).

    ``quantum_seconds`` is the vendor's billed QPU time (IBM's ``usage.quantum_seconds``,
    for instance); ``running_seconds`` the vendor-side time from the task's start to its end,
    for vendors that bill no QPU time of their own.
    """

    quantum_seconds: float | None = None
    running_seconds: float | None = None


class Payload:
    """Base of the payload variants; build them as ``Payload.QiskitPrimitive(...)`` etc.

    Each variant is a frozen dataclass; ``isinstance(p, Payload.QiskitPrimitive)`` selects one.
    """

    QiskitPrimitive: ClassVar[type[QiskitPrimitivePayload]]
    PasqalCloud: ClassVar[type[PasqalCloudPayload]]
    IQMServer: ClassVar[type[IQMServerPayload]]
    AliceBobFelis: ClassVar[type[AliceBobFelisPayload]]
    Oqtopus: ClassVar[type[OqtopusPayload]]

    @property
    def variant(self) -> str:
        """The variant name, e.g. ``"QiskitPrimitive"``."""
        return _VARIANT_NAMES[type(self)]


@dataclass(frozen=True)
class QiskitPrimitivePayload(Payload):
    """A Qiskit primitive job: ``input`` is the V2 primitive params as JSON text."""

    input: str
    program_id: str


@dataclass(frozen=True)
class PasqalCloudPayload(Payload):
    """A Pulser sequence (abstract representation JSON) or CUDA-Q sequence, ``job_runs`` shots."""

    sequence: str
    job_runs: int


@dataclass(frozen=True)
class IQMServerPayload(Payload):
    """An IQM Server run request (``iqmjson``) of ``job_type`` ``circuit``, ``run`` or ``sweep``."""

    iqmjson: str
    job_type: str = "circuit"
    use_timeslot: bool | None = None
    tag: str | None = None


@dataclass(frozen=True)
class AliceBobFelisPayload(Payload):
    """A QIR program (text) with Felis input parameters (JSON text)."""

    human_qir: str
    input_params: str


@dataclass(frozen=True)
class OqtopusPayload(Payload):
    """An OQTOPUS Cloud job: ``job_spec`` is the JSON text of the job's specification (the
    fields of the OQTOPUS User API job request: program, shots, job type, transpiler info ...)."""

    job_spec: str


Payload.QiskitPrimitive = QiskitPrimitivePayload
Payload.PasqalCloud = PasqalCloudPayload
Payload.IQMServer = IQMServerPayload
Payload.AliceBobFelis = AliceBobFelisPayload
Payload.Oqtopus = OqtopusPayload

_VARIANT_NAMES: dict[type[Payload], str] = {
    QiskitPrimitivePayload: "QiskitPrimitive",
    PasqalCloudPayload: "PasqalCloud",
    IQMServerPayload: "IQMServer",
    AliceBobFelisPayload: "AliceBobFelis",
    OqtopusPayload: "Oqtopus",
}
