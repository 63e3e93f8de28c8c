"""Cheap structural checks of primitive V2 input, without importing qiskit.

Used at ``task_start`` (so that a malformed payload is refused at once) and again by the engine
before any simulation. What needs qiskit (parsing OpenQASM, broadcasting parameter values
against observables) is checked by the engine; those errors reach the caller as a ``Failed``
task whose logs carry the reason.

Size limits (:class:`Limits`, :func:`check_limits`) are checked on the OpenQASM *text*, before
any parser sees it: a 170-byte ``qubit[2000000000] q;`` or a ``for`` loop over 10^8 iterations
costs a regular expression here, not the host's memory or a lane for hours. Register sizes and
loop bounds must therefore be integer literals (``qiskit.qasm3.dumps`` writes them so).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from qrmi.errors import InvalidInputError, UnsupportedPayloadError

__all__ = [
    "PROGRAM_IDS",
    "Limits",
    "check_input_size",
    "check_limits",
    "check_params",
    "check_program_id",
    "parse_input",
]

#: The primitives the emulator runs, as IBM's ``program_id`` names them.
PROGRAM_IDS = ("estimator", "sampler")

# (fewest, most) entries of a pub: [circuit, params?, shots?] and
# [circuit, observables, params?, precision?].
_PUB_LENGTHS = {"sampler": (1, 3), "estimator": (2, 4)}
_PUB_FORMS = {
    "sampler": "[circuit, parameter_values?, shots?]",
    "estimator": "[circuit, observables, parameter_values?, precision?]",
}


def check_program_id(program_id: str) -> None:
    """Raises UnsupportedPayloadError unless ``program_id`` is ``sampler`` or ``estimator``."""
    if program_id not in PROGRAM_IDS:
        raise UnsupportedPayloadError(
            f"unknown program ID: {program_id!r}; the local emulator runs "
            + " and ".join(repr(p) for p in PROGRAM_IDS)
        )


def parse_input(text: str) -> dict[str, Any]:
    """Parse a ``QiskitPrimitive`` payload's ``input`` text into a JSON object.

    Raises:
        InvalidInputError: not JSON, or not an object.
    """
    try:
        params = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        detail = (
            f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else str(exc)
        )
        raise InvalidInputError(
            f"primitive input is not valid JSON ({detail}); pass the JSON text of "
            '{"pubs": [...], "version": 2}'
        ) from None
    if not isinstance(params, dict):
        raise InvalidInputError(
            f"primitive input must be a JSON object, got {type(params).__name__}; pass "
            '{"pubs": [...], "version": 2}'
        )
    return params


def check_params(program_id: str, params: Any) -> None:
    """Check the shape of primitive V2 input (pubs, version, shots, precision).

    Raises:
        UnsupportedPayloadError: unknown ``program_id``.
        InvalidInputError: the input does not have the primitive V2 shape; the message names
            the offending pub and what it should look like.
    """
    check_program_id(program_id)
    if not isinstance(params, Mapping):
        raise InvalidInputError(
            f"primitive input must be a JSON object, got {type(params).__name__}"
        )
    version = params.get("version", 2)
    if version != 2:
        raise InvalidInputError(
            f"primitive input has version {version!r}; the emulator runs V2 primitives only "
            '(SamplerV2 / EstimatorV2): set "version": 2'
        )
    pubs = params.get("pubs")
    if not isinstance(pubs, list) or not pubs:
        raise InvalidInputError(
            f'{program_id} input needs a non-empty "pubs" list of {_PUB_FORMS[program_id]}'
        )
    for index, pub in enumerate(pubs):
        _check_pub(program_id, index, pub)
    _check_shots(params.get("shots"), '"shots"')
    _check_precision(params.get("precision"), '"precision"')


def _check_pub(program_id: str, index: int, pub: Any) -> None:
    form = _PUB_FORMS[program_id]
    fewest, most = _PUB_LENGTHS[program_id]
    if not isinstance(pub, Sequence) or isinstance(pub, str | bytes):
        raise InvalidInputError(f"pub {index}: must be a list {form}, got {type(pub).__name__}")
    if not fewest <= len(pub) <= most:
        missing = " (the observables are missing)" if program_id == "estimator" else ""
        raise InvalidInputError(
            f"pub {index}: has {len(pub)} entries{missing}; a {program_id} pub is {form}"
        )
    circuit = pub[0]
    is_qpy = isinstance(circuit, Mapping) and circuit.get("__type__") == "QuantumCircuit"
    if not (isinstance(circuit, str) or is_qpy or _is_circuit_object(circuit)):
        raise InvalidInputError(
            f"pub {index}: the circuit must be OpenQASM 3 text (qiskit.qasm3.dumps) or a "
            f"QPY-encoded circuit, got {type(circuit).__name__}"
        )
    if program_id == "sampler" and len(pub) == 3:
        _check_shots(pub[2], f"pub {index}: shots")
    if program_id == "estimator":
        if pub[1] is None:
            raise InvalidInputError(
                f"pub {index}: the observables are missing; give a Pauli string such as "
                '"ZZ", a {"ZZ": 1.0} mapping, or a list of them'
            )
        if len(pub) == 4:
            _check_precision(pub[3], f"pub {index}: precision")


def _is_circuit_object(value: Any) -> bool:
    # Already-decoded input (a QuantumCircuit) when the engine is called in-process.
    return type(value).__name__ == "QuantumCircuit"


def _check_shots(value: Any, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(f"{what} must be a positive integer, got {value!r}")


def _check_precision(value: Any, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidInputError(f"{what} must be a non-negative number, got {value!r}")


# ----- size limits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What one emulator task may use; each field has a ``QRMI_LOCAL_*`` setting (see backend).

    Captured per task at ``task_start``; the engine and the worker enforce them.
    """

    #: Largest payload input, in bytes of UTF-8 (``QRMI_LOCAL_MAX_INPUT_BYTES``).
    max_input_bytes: int = 16 * 1024 * 1024
    #: Most classical bits a circuit may declare (``QRMI_LOCAL_MAX_CLBITS``).
    max_clbits: int = 4096
    #: Most iterations of the innermost body of nested ``for`` loops
    #: (``QRMI_LOCAL_MAX_LOOP_ITERATIONS``).
    max_loop_iterations: int = 100_000
    #: Wall-clock budget of one simulation (``QRMI_LOCAL_TASK_TIMEOUT_SECONDS``).
    timeout_seconds: float = 300.0
    #: Memory budget of one simulation, in MiB (``QRMI_LOCAL_TASK_MEMORY_MB``).
    memory_mb: int = 4096
    #: Bond dimension cap of an approximate matrix product state
    #: (``QRMI_LOCAL_MPS_MAX_BOND_DIMENSION``).
    mps_max_bond_dimension: int = 16

    def to_json(self) -> str:
        """The limits as a JSON object (stored with the task)."""
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str | None) -> Limits:
        """Limits stored by :meth:`to_json`; defaults for missing or unknown fields."""
        if not text:
            return Limits()
        try:
            raw = json.loads(text)
        except ValueError:
            return Limits()
        if not isinstance(raw, dict):
            return Limits()
        defaults = Limits()
        values: dict[str, Any] = {}
        for field in fields(Limits):
            value = raw.get(field.name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[field.name] = type(getattr(defaults, field.name))(value)
        return Limits(**values)


def check_input_size(text: str, limits: Limits) -> None:
    """Refuse an input larger than ``limits.max_input_bytes`` before parsing it.

    Raises:
        InvalidInputError: the input is too large; the message gives both sizes.
    """
    if len(text) * 4 <= limits.max_input_bytes:  # UTF-8 needs at most 4 bytes a character
        return
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_input_bytes:
        raise InvalidInputError(
            f"primitive input is {size} bytes, more than the local emulator's limit of "
            f"{limits.max_input_bytes} (QRMI_LOCAL_MAX_INPUT_BYTES); split the job into several "
            "tasks"
        )


def check_limits(
    params: Mapping[str, Any], limits: Limits, *, device: str, device_qubits: int
) -> None:
    """Check every OpenQASM circuit of shape-checked input against the size limits.

    Qubit and bit declarations and ``for`` loop bounds are read from the text with regular
    expressions; QPY circuits are bounded by the task's memory budget instead.

    Raises:
        InvalidInputError: a circuit declares more qubits than ``device_qubits`` (or names a
            physical qubit ``$n`` beyond them), more bits than
            ``limits.max_clbits``, a non-literal register size or loop bound, or loops that
            iterate more than ``limits.max_loop_iterations`` times; the message names the pub.
    """
    for index, pub in enumerate(params.get("pubs") or []):
        circuit = pub[0] if isinstance(pub, Sequence) and pub else None
        if isinstance(circuit, str):
            _check_circuit_text(index, circuit, limits, (device, device_qubits))


_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
# qubit[N] q;  qubit q;  qreg q[N];  (N captured, or None for a single qubit)
_QUBITS = re.compile(
    r"\bqubit\s*(?:\[([^\]]*)\])?\s+[A-Za-z_]\w*\s*;|\bqreg\s+[A-Za-z_]\w*\s*\[([^\]]*)\]"
)
_BITS = re.compile(
    r"\bbit\s*(?:\[([^\]]*)\])?\s+[A-Za-z_]\w*\s*[;=]|\bcreg\s+[A-Za-z_]\w*\s*\[([^\]]*)\]"
)
_PHYSICAL = re.compile(r"\$(\d+)")
_BLOCK = re.compile(r"\bfor\b([^{;]*)\{|\{|\}")
_RANGE = re.compile(r"\bin\s*\[([^\]]*)\]\s*$")
# for int i in {1, 5, 9} { ... }: rewritten as a range of as many iterations before the scan.
_SET_LOOP = re.compile(r"(\bfor\b[^{;]*\bin)\s*\{([^}]*)\}")
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")


def _check_circuit_text(index: int, text: str, limits: Limits, device: tuple[str, int]) -> None:
    code = _COMMENTS.sub(" ", text)
    qubits = sum(_declared(index, size, "qubit register") for size in _sizes(_QUBITS, code))
    physical = max((int(n) + 1 for n in _PHYSICAL.findall(code)), default=0)
    if max(qubits, physical) > device[1]:
        raise InvalidInputError(
            f"pub {index}: the circuit has {max(qubits, physical)} qubits but device {device[0]} "
            f"has {device[1]}; use fewer qubits or choose a larger device (QRMI_LOCAL_DEVICE, "
            "e.g. fake_sherbrooke with 127 qubits)"
        )
    bits = sum(_declared(index, size, "bit register") for size in _sizes(_BITS, code))
    if bits > limits.max_clbits:
        raise InvalidInputError(
            f"pub {index}: the circuit declares {bits} classical bits, more than the local "
            f"emulator's limit of {limits.max_clbits} (QRMI_LOCAL_MAX_CLBITS); measure fewer bits"
        )
    _check_loops(index, code, limits)


def _sizes(pattern: re.Pattern[str], code: str) -> Iterator[str | None]:
    for match in pattern.finditer(code):
        yield next((group for group in match.groups() if group is not None), None)


def _declared(index: int, size: str | None, what: str) -> int:
    if size is None:
        return 1
    if not _INTEGER.fullmatch(size):
        raise InvalidInputError(
            f"pub {index}: the size of a {what} must be an integer literal, got [{size.strip()}]; "
            "export the circuit with qiskit.qasm3.dumps(circuit)"
        )
    return int(size)


def _check_loops(index: int, code: str, limits: Limits) -> None:
    """Multiply the iteration counts of nested ``for`` loops and refuse too many."""
    multipliers: list[int] = []
    total = 1
    code = _SET_LOOP.sub(lambda m: f"{m.group(1)} [1:{m.group(2).count(',') + 1}]", code)
    for match in _BLOCK.finditer(code):
        if match.group(0) == "}":
            if multipliers:
                total //= multipliers.pop()
            continue
        count = _iterations(index, match.group(1)) if match.group(1) is not None else 1
        multipliers.append(max(count, 1))
        total *= multipliers[-1]
        if total > limits.max_loop_iterations:
            raise InvalidInputError(
                f"pub {index}: its for loops run {total} iterations, more than the local "
                f"emulator's limit of {limits.max_loop_iterations} "
                "(QRMI_LOCAL_MAX_LOOP_ITERATIONS); use fewer iterations"
            )


def _iterations(index: int, header: str) -> int:
    """Iterations of a ``for <type> <name> in [a:b]`` or ``[a:step:b]`` header."""
    found = _RANGE.search(header)
    parts = found.group(1).split(":") if found else []
    if len(parts) not in (2, 3) or not all(_INTEGER.fullmatch(p) for p in parts):
        raise InvalidInputError(
            f"pub {index}: a for loop must iterate over a range of integer literals "
            f"[start:stop] or [start:step:stop], got {' '.join(header.split())!r}"
        )
    start, stop = int(parts[0]), int(parts[-1])
    step = int(parts[1]) if len(parts) == 3 else 1
    if step == 0:
        raise InvalidInputError(f"pub {index}: a for loop's step must not be 0")
    return max(0, (stop - start) // step + 1)
