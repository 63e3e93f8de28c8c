"""Helpers shared by the sampler and the estimator: options, resources, OpenQASM 3, submission."""

from __future__ import annotations

import dataclasses
import functools
import json
import keyword
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from qrmi.errors import InvalidInputError
from qrmi.models import Payload
from qrmi.primitives.runtime_job_v2 import RuntimeJobV2
from qrmi.protocol import QuantumResourceProtocol

__all__ = [
    "QrmiPrimitive",
    "as_resource",
    "circuit_to_qasm3",
    "parse_options",
    "pub_list",
    "submit",
]

OptionsT = TypeVar("OptionsT")


class _PrimitiveOptions(Protocol):
    run_options: dict[str, Any]


PrimitiveOptionsT = TypeVar("PrimitiveOptionsT", bound=_PrimitiveOptions)

#: The calls the primitives make on a resource; anything offering them is accepted.
_TASK_CALLS = ("task_start", "task_status", "task_result", "task_stop", "task_logs")


def as_resource(qrmi: Any, owner: str) -> QuantumResourceProtocol:
    """Check that ``qrmi`` can run tasks; a ``QRMIBackend`` is unwrapped to its resource.

    Raises:
        InvalidInputError: ``qrmi`` lacks the QRMI task calls.
    """
    inner = getattr(qrmi, "qrmi", None)
    if inner is not None and not callable(inner):
        qrmi = inner
    missing = [name for name in _TASK_CALLS if not callable(getattr(qrmi, name, None))]
    if missing:
        raise InvalidInputError(
            f"{owner}: 'qrmi' must be a QRMI quantum resource (qrmi.QuantumResource or an object "
            f"with the same calls); got {type(qrmi).__name__}, which lacks {', '.join(missing)}. "
            "Get one with QRMIService().resources()[0]."
        )
    resource: QuantumResourceProtocol = qrmi
    return resource


def parse_options(cls: type[OptionsT], options: Any, owner: str) -> OptionsT:
    """Build the options dataclass ``cls`` from ``None``, a mapping or an instance.

    Raises:
        InvalidInputError: ``options`` is of the wrong type or has unknown keys.
    """
    if options is None:
        return cls()
    if isinstance(options, cls):
        copy: OptionsT = dataclasses.replace(options)  # type: ignore[type-var]
        return copy
    if not isinstance(options, Mapping):
        raise InvalidInputError(
            f"{owner}: 'options' must be a dict or {cls.__name__}; got {type(options).__name__}"
        )
    valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InvalidInputError(
            f"{owner}: unknown option(s) {', '.join(map(repr, unknown))}; valid options are "
            f"{', '.join(valid)}"
        )
    return cls(**options)


def check_run_options(run_options: Any, owner: str) -> None:
    """``run_options`` is sent to the service as the input's ``options``: it must be JSON."""
    if not isinstance(run_options, Mapping):
        raise InvalidInputError(
            f"{owner}: option 'run_options' must be a dict; got {type(run_options).__name__}"
        )
    try:
        json.dumps(run_options)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{owner}: option 'run_options' must be JSON-serialisable: {exc}"
        ) from None


def pub_list(pubs: Any, owner: str) -> list[Any]:
    """The pubs as a non-empty list.

    Raises:
        InvalidInputError: ``pubs`` is a lone circuit, not iterable, or empty.
    """
    from qiskit.circuit import QuantumCircuit

    if isinstance(pubs, QuantumCircuit) or not isinstance(pubs, Iterable):
        raise InvalidInputError(
            f"{owner}.run: 'pubs' must be a list of circuits or pubs; got "
            f"{type(pubs).__name__}. Wrap a single circuit in a list: run([circuit])"
        )
    items = list(pubs)
    if not items:
        raise InvalidInputError(f"{owner}.run: 'pubs' is empty; pass at least one circuit")
    return items


def coerce_error(owner: str, index: int, exc: Exception) -> InvalidInputError:
    """A typed error for a pub Qiskit refused to coerce."""
    return InvalidInputError(f"{owner}.run: pubs[{index}] is invalid: {exc}")


def check_classical_registers(circuit: Any, index: int, owner: str) -> None:
    """Registers become result field names: they must be non-empty Python identifiers."""
    if not circuit.cregs:
        warnings.warn(
            f"{owner}.run: pubs[{index}]'s circuit has no classical register, so its result "
            "will be empty; add measurements (circuit.measure_all())",
            UserWarning,
            stacklevel=4,
        )
    for register in circuit.cregs:
        if register.size == 0:
            raise InvalidInputError(
                f"{owner}.run: pubs[{index}] has an empty classical register {register.name!r}; "
                "remove it or give it at least one bit"
            )
        if not register.name.isidentifier() or keyword.iskeyword(register.name):
            raise InvalidInputError(
                f"{owner}.run: pubs[{index}] has classical register {register.name!r}, which is "
                "not usable as a result field name; rename it to a Python identifier that is not "
                "a keyword (e.g. 'meas', 'c0')"
            )


def circuit_to_qasm3(circuit: Any, index: int, owner: str) -> str:
    """OpenQASM 3 text of ``circuit``, exported the way IBM's services read it.

    Circuits of standard gates, measurements, barriers, resets and delays with plainly named
    registers (ISA circuits among them) go to Qiskit's native exporter, which writes the same
    program as ``qasm3.dumps`` 5 to 12 times faster (numbers spelt differently: ``0`` for
    ``0.0``, ``0.000000001`` for ``1e-09``); every other circuit goes to ``qasm3.dumps``.

    Raises:
        InvalidInputError: the circuit uses something OpenQASM 3 cannot express.
    """
    from qiskit import qasm3

    native = _native_qasm3(circuit)
    if native is not None:
        return native
    try:
        text: str = qasm3.dumps(
            circuit,
            disable_constants=True,
            allow_aliasing=True,
            experimental=qasm3.ExperimentalFeatures.SWITCH_CASE_V1,
        )
    except qasm3.QASM3ExporterError as exc:
        raise InvalidInputError(
            f"{owner}.run: pubs[{index}]'s circuit cannot be exported to OpenQASM 3 ({exc}); "
            "transpile it for the resource's target first (qrmi.primitives.ibm.get_target)"
        ) from exc
    return text


#: OpenQASM 3 keywords, types and built-in names, which a register may not shadow (the Python
#: exporter renames such a register; the native one does not). Also the duration units.
_OPENQASM_WORDS = frozenset(
    {
        "OPENQASM",
        "include",
        "defcalgrammar",
        "def",
        "cal",
        "defcal",
        "gate",
        "extern",
        "box",
        "let",
        "break",
        "continue",
        "if",
        "else",
        "end",
        "return",
        "for",
        "while",
        "in",
        "switch",
        "case",
        "default",
        "nop",
        "input",
        "output",
        "const",
        "readonly",
        "mutable",
        "qreg",
        "qubit",
        "creg",
        "bool",
        "bit",
        "int",
        "uint",
        "float",
        "angle",
        "complex",
        "array",
        "void",
        "duration",
        "stretch",
        "sizeof",
        "durationof",
        "gphase",
        "inv",
        "pow",
        "ctrl",
        "negctrl",
        "delay",
        "reset",
        "measure",
        "barrier",
        "true",
        "false",
        "pi",
        "tau",
        "euler",
        "im",
        "dt",
        "ns",
        "us",
        "ms",
        "s",
        "U",
        "CX",
    }
)
_PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: Instructions other than standard gates that the native exporter writes as qasm3.dumps does.
_NATIVE_DIRECTIVES = frozenset({"measure", "barrier", "reset", "delay"})


def _native_qasm3(circuit: Any) -> str | None:
    """``circuit`` exported by Qiskit's native exporter, or None when the circuit has anything
    it would write differently from ``qasm3.dumps`` or not at all (parameters, custom gates,
    control flow, variables, registers that alias or need renaming...)."""
    from qiskit import qasm3
    from qiskit.exceptions import ExperimentalWarning

    if not hasattr(qasm3, "dumps_experimental") or not _plain_for_native_export(circuit):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            text: str = qasm3.dumps_experimental(
                circuit, disable_constants=True, allow_aliasing=True
            )
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # its "not yet implemented" panics are BaseExceptions
        return None
    return text


def _plain_for_native_export(circuit: Any) -> bool:
    if circuit.num_parameters or circuit.num_vars or getattr(circuit, "num_stretches", 0):
        return False
    # A circuit with a layout is written on physical qubits: its quantum registers never show.
    virtual = circuit.layout is None
    if not _plain_registers(circuit.cregs, circuit.num_clbits):
        return False
    if virtual and not _plain_registers(circuit.qregs, circuit.num_qubits):
        return False
    names = [register.name for register in [*circuit.cregs, *(circuit.qregs if virtual else ())]]
    if len(set(names)) != len(names) or not all(_plain_name(name) for name in names):
        return False
    if not set(circuit.count_ops()) <= _native_gate_names() | _NATIVE_DIRECTIVES:
        return False
    return all(_native_instruction(item) for item in circuit.data)


def _plain_registers(registers: Any, width: int) -> bool:
    """Each bit in exactly one register (no loose bits, no aliases)."""
    bits = {bit for register in registers for bit in register}
    return len(bits) == width == sum(len(register) for register in registers)


def _plain_name(name: str) -> bool:
    return (
        _PLAIN_NAME.fullmatch(name) is not None
        and name not in _OPENQASM_WORDS
        and name not in _gate_names()
    )


@functools.cache
def _gate_names() -> frozenset[str]:
    """Every gate name a program may define or include: a register must not shadow one."""
    from qiskit import qasm3
    from qiskit.circuit.library import get_standard_gate_name_mapping

    return frozenset(get_standard_gate_name_mapping()) | {
        gate.name for gate in qasm3.STDGATES_INC_GATES
    }


@functools.cache
def _native_gate_names() -> frozenset[str]:
    """The standard gates the native exporter writes as qasm3.dumps does: those of
    ``stdgates.inc``, and those without parameters (their definitions are constant); it drops
    or freezes the definitions of the others (``rzz``, ``rxx``...)."""
    from qiskit import qasm3
    from qiskit.circuit import Gate
    from qiskit.circuit.library import get_standard_gate_name_mapping

    included = {gate.name for gate in qasm3.STDGATES_INC_GATES}
    return frozenset(
        name
        for name, gate in get_standard_gate_name_mapping().items()
        if isinstance(gate, Gate)
        and name != "global_phase"
        and (name in included or not gate.params)
    )


def _native_instruction(item: Any) -> bool:
    """A standard gate, or Qiskit's own measure, barrier, reset or delay (not a custom
    instruction of that name); the standard-gate test needs no Python gate object."""
    if item.is_standard_gate():
        return True
    if item.name not in _NATIVE_DIRECTIVES:
        return False
    from qiskit.circuit import Barrier, Delay, Measure, Reset

    return item.operation.base_class in (Barrier, Delay, Measure, Reset)


def submit(
    qrmi: QuantumResourceProtocol, program_id: str, params: Mapping[str, Any]
) -> RuntimeJobV2:
    """Send the primitive input to the resource and return the job handle at once."""
    payload = Payload.QiskitPrimitive(input=json.dumps(params), program_id=program_id)
    return RuntimeJobV2(qrmi, qrmi.task_start(payload))


class QrmiPrimitive(Generic[PrimitiveOptionsT]):
    """What the sampler and the estimator share: the resource their tasks go to and their
    options, checked when the primitive is built.

    Raises:
        InvalidInputError: ``qrmi`` is not a resource, or the options are invalid.
    """

    def __init__(self, qrmi: Any, options_class: type[PrimitiveOptionsT], options: Any) -> None:
        owner = type(self).__name__
        self._qrmi = as_resource(qrmi, owner)
        self._options = parse_options(options_class, options, owner)
        self._check_default(self._options, owner)
        check_run_options(self._options.run_options, owner)

    def _check_default(self, options: PrimitiveOptionsT, owner: str) -> None:
        """Check the primitive's own default (shots, precision); raise InvalidInputError."""
        raise NotImplementedError

    @property
    def options(self) -> PrimitiveOptionsT:
        """The primitive's options."""
        return self._options

    @property
    def qrmi(self) -> Any:
        """The resource tasks are sent to."""
        return self._qrmi
