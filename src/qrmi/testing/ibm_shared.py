"""What the two IBM API fakes share: error bodies, request checks, devices, execution.

IBM's APIs answer errors with ``{"status_code", "title", "trace", "errors": [{"code",
"message", "more_info", "location"}]}``. Every request must carry ``Authorization: Bearer
<IAM token>`` (401 otherwise) and ``Service-CRN`` naming the instance (400 when missing, 403 when
it is another instance).
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar, Self

from qrmi.testing.auth import TokenIssuer
from qrmi.testing.ibm_iam import IamFake
from qrmi.testing.server import FakeServer

__all__ = [
    "DEFAULT_APIKEY",
    "DEFAULT_CRN",
    "FakeDevice",
    "IbmFakeServer",
    "check_request",
    "devices_from",
    "devices_named",
    "execute_primitive",
    "ibm_error",
    "isa_violation",
    "json_body",
    "requested_seconds",
    "unknown_backend",
    "utc_now",
]

DEFAULT_APIKEY = "fake-ibm-apikey-0123456789"
DEFAULT_CRN = "crn:v1:bluemix:public:quantum-computing:us-east:a/fake0000::"
MORE_INFO = "https://quantum.cloud.ibm.com/docs/errors"


def ibm_error(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
) -> Any:
    """An IBM-shaped error response."""
    from fastapi.responses import JSONResponse

    body = {
        "status_code": status,
        "title": HTTPStatus(status).phrase,
        "trace": str(uuid.uuid4()),
        "correlation_id": uuid.uuid4().hex[:16],
        "errors": [{"code": code, "message": message, "more_info": MORE_INFO, "location": None}],
    }
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def unknown_backend(name: object) -> Any:
    """The 404 for a backend the fake does not serve."""
    return ibm_error(404, "1216", f"Backend {name} not found.")


def check_request(request: Any, issuer: TokenIssuer, crn: str) -> Any | None:
    """The error response for a request lacking a valid token or the right CRN, else ``None``."""
    if issuer.validate_header(request.headers.get("authorization")) is None:
        return ibm_error(401, "1001", "Unauthorized: a valid IAM bearer token is required.")
    given = request.headers.get("service-crn")
    if not given:
        return ibm_error(400, "1002", "The Service-CRN header is required.")
    if given != crn:
        return ibm_error(403, "1003", "You do not have access to this service instance.")
    return None


async def json_body(request: Any) -> tuple[dict[str, Any] | None, Any | None]:
    """``(body, None)`` for a JSON-object body, ``(None, error response)`` otherwise."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        return None, ibm_error(415, "1004", "Content-Type must be application/json.")
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None, ibm_error(400, "1005", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return None, ibm_error(400, "1005", "The request body must be a JSON object.")
    return body, None


def utc_now() -> str:
    """The current UTC time in IBM's ISO-8601 form, to the millisecond (as IBM's: jobs
    created within one second keep their order)."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


@dataclass
class FakeDevice:
    """One backend a fake serves: its name, the emulator snapshot it runs as, its state."""

    name: str
    snapshot: str = "fake_perth"
    status: str = "online"
    message: str = "available"
    is_simulator: bool = False
    version: str = "1.0.0"
    _description: tuple[dict[str, Any], dict[str, Any]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: ISA verdicts by OpenQASM text (see :func:`isa_violation`).
    _verdicts: dict[str, str | None] = field(default_factory=dict, repr=False)

    def description(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(configuration, properties)`` of the snapshot, renamed to :attr:`name`."""
        with self._lock:
            if self._description is None:
                from qrmi.backends.local_emulator.engine import device_snapshot

                configuration, properties = device_snapshot(self.snapshot)
                configuration = copy.deepcopy(configuration)
                properties = copy.deepcopy(properties)
                configuration["backend_name"] = self.name
                configuration["simulator"] = self.is_simulator
                properties["backend_name"] = self.name
                self._description = (configuration, properties)
            return self._description

    @property
    def num_qubits(self) -> int:
        """Qubits of the device."""
        return int(self.description()[0].get("n_qubits", 0))


def execute_primitive(program_id: str, params: Mapping[str, Any], device: FakeDevice) -> str:
    """Run a primitive job on the emulator engine as ``device``; the result JSON text."""
    from qrmi.backends.local_emulator.engine import run_primitive

    return run_primitive(program_id, params, device=device.snapshot)


#: Instructions a device runs beyond its ``basis_gates`` when its configuration does not list
#: ``supported_instructions``.
_ALWAYS_SUPPORTED = frozenset({"measure", "barrier", "delay", "reset"})
#: Control flow whose bodies are checked instruction by instruction.
_CONTROL_FLOW = frozenset({"if_else", "for_loop", "while_loop", "switch_case", "box"})


def isa_violation(params: Mapping[str, Any], device: FakeDevice) -> str | None:
    """Why the circuits of a primitive job are not ISA circuits of ``device``, or ``None``.

    IBM's services run only circuits written in the device's instruction set (its basis gates,
    on coupled qubits, within its qubit count) and fail other jobs. A circuit the fake cannot
    parse is not judged here: the engine reports it.
    """
    pubs = params.get("pubs")
    for index, pub in enumerate(pubs if isinstance(pubs, list) else ()):
        problem = _circuit_violation(pub[0] if isinstance(pub, list) and pub else pub, device)
        if problem is not None:
            return f"pub {index}: {problem}"
    return None


#: How many ISA verdicts a device keeps (by OpenQASM text) before it forgets them all.
_VERDICTS_KEPT = 256


def _circuit_violation(circuit_input: Any, device: FakeDevice) -> str | None:
    """Why one pub's circuit is not an ISA circuit of ``device``, or ``None``.

    The verdict on an OpenQASM text is kept: parsing it costs about 2 ms of CPU, which clients
    that submit the same circuit again and again (the throughput benchmark) would otherwise
    pay on every job."""
    text = circuit_input if isinstance(circuit_input, str) else None
    if text is not None:
        with device._lock:
            if text in device._verdicts:
                return device._verdicts[text]
    problem = _judged(_parsed_circuit(circuit_input), device)
    if text is not None:
        with device._lock:
            if len(device._verdicts) >= _VERDICTS_KEPT:
                device._verdicts.clear()
            device._verdicts[text] = problem
    return problem


def _judged(circuit: Any | None, device: FakeDevice) -> str | None:
    if circuit is None:
        return None
    configuration = device.description()[0]
    supported = set(configuration.get("basis_gates") or ()) | set(
        configuration.get("supported_instructions") or _ALWAYS_SUPPORTED
    )
    supported |= {"barrier"}
    edges = {tuple(edge) for edge in configuration.get("coupling_map") or ()}
    size = int(configuration.get("n_qubits", 0))
    if circuit.num_qubits > size:
        return f"the circuit has {circuit.num_qubits} qubits; {device.name} has {size}."
    qubits = list(range(circuit.num_qubits))
    return _non_isa_instruction(circuit, qubits, supported, edges)


def _parsed_circuit(value: Any) -> Any | None:
    """A QuantumCircuit from OpenQASM 3 text or a RuntimeEncoder QPY object; None if neither."""
    try:
        if isinstance(value, str):
            return _imported("qiskit.qasm3").loads(value)
        if isinstance(value, dict):
            decoder = _imported("qiskit_ibm_runtime").RuntimeDecoder
            return json.loads(json.dumps(value), cls=decoder)
    except Exception:  # any parse failure is the engine's to report
        return None
    return None


def _imported(name: str) -> Any:
    """Module ``name``, imported from a thread that never exits (job threads are short-lived;
    see :mod:`qrmi._lasting_import`)."""
    from qrmi._lasting_import import lasting_import

    return lasting_import(name)


def _non_isa_instruction(
    circuit: Any, qubits: list[int], supported: set[str], edges: set[tuple[int, ...]]
) -> str | None:
    """The first instruction of ``circuit`` the device cannot run; ``qubits`` maps the
    circuit's qubits to device qubits."""
    for instruction in getattr(circuit, "data", ()):
        name = instruction.operation.name
        where = tuple(qubits[circuit.find_bit(q).index] for q in instruction.qubits)
        if name not in supported:
            return f"the instruction {name} on qubits {where} is not supported by the target."
        if name in _CONTROL_FLOW:
            for block in instruction.operation.blocks:
                problem = _non_isa_instruction(block, list(where), supported, edges)
                if problem is not None:
                    return problem
        elif len(where) == 2 and name not in _ALWAYS_SUPPORTED and where not in edges:
            return f"the instruction {name} on qubits {where} is not supported by the target."
    return None


def requested_seconds(params: Mapping[str, Any], default: float) -> float:
    """How long a job occupies the fake QPU: ``options.emulator.min_duration_seconds`` (the
    local emulator's option, capped at an hour) or ``default``."""
    options = params.get("options")
    emulator = options.get("emulator") if isinstance(options, Mapping) else None
    value = emulator.get("min_duration_seconds") if isinstance(emulator, Mapping) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return max(default, min(float(value), 3600.0))
    return default


def devices_from(
    spec: Mapping[str, str] | None, default: Mapping[str, str]
) -> dict[str, FakeDevice]:
    """``{name: FakeDevice}`` from ``{name: snapshot}`` (``default`` when ``spec`` is None)."""
    return {name: FakeDevice(name, snapshot) for name, snapshot in (spec or default).items()}


def devices_named(snapshots: Iterable[str] | None) -> dict[str, str] | None:
    """``{"ibm_perth": "fake_perth", ...}`` for ``qrmi fake serve``'s snapshot names (None: the
    fake's default devices)."""
    return {name.replace("fake_", "ibm_"): name for name in snapshots} if snapshots else None


class IbmFakeServer(FakeServer):
    """What both IBM fakes are: an API with its own IAM beside it, serving backends
    (``devices``), each a resource of type :attr:`RESOURCE_TYPE`.

    ``app_for(issuer, crn)`` builds the API app that trusts the IAM fake's tokens; ``http`` is
    the API server's HTTP implementation (:class:`~qrmi.testing.FakeServer`).
    """

    RESOURCE_TYPE: ClassVar[str]

    def __init__(
        self,
        app_for: Callable[[TokenIssuer, str], Any],
        devices: dict[str, FakeDevice],
        *,
        apikey: str,
        crn: str,
        token_lifetime: float,
        host: str,
        port: int,
        name: str,
        http: str = "h11",
    ) -> None:
        self.apikey = apikey
        self.crn = crn
        self.devices = devices
        self.iam = IamFake([apikey], token_lifetime=token_lifetime, host=host)
        super().__init__(app_for(self.iam.issuer, crn), host=host, port=port, name=name, http=http)

    def start(self) -> Self:
        """Start IAM and the API."""
        self.iam.start()
        super().start()
        return self

    def stop(self) -> None:
        """Stop the API and IAM."""
        super().stop()
        self.iam.stop()

    @property
    def settings(self) -> dict[str, str]:
        """The resource ``environment`` for ``qrmi_config.json``."""
        raise NotImplementedError

    @property
    def resource_names(self) -> list[str]:
        """The backends served, each a resource of type :attr:`resource_type`."""
        return list(self.devices)

    @property
    def resource_type(self) -> str:
        """The type string of the resources this fake serves."""
        return self.RESOURCE_TYPE

    def resource_config(self, name: str | None = None) -> dict[str, Any]:
        """A ``qrmi_config.json`` resource entry for backend ``name`` (default: the first)."""
        return {
            "name": name or self.resource_names[0],
            "type": self.resource_type,
            "environment": self.settings,
        }

    def expire_tokens(self) -> None:
        """Invalidate every IAM token (clients must refresh)."""
        self.iam.expire_all()

    def set_status(self, backend: str, status: str, message: str = "") -> None:
        """Set a backend's status word (``online``, ``paused``, ``offline``)."""
        device = self.devices[backend]
        device.status, device.message = status, message or status
