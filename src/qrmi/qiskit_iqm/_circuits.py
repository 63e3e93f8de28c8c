"""Qiskit <-> IQM Server: the device target, circuit serialization and measurement results.

IQM's native operations: ``prx`` (a Qiskit ``RGate``; angles in full turns), ``cz``
(``CZGate``), ``measure`` (one IQM instruction per measured qubit, keyed
``<creg name>_<creg size>_<creg index>_<clbit index>``) and ``barrier``. The wire shapes are IQM
Server's run request (``{"circuits": [{"name", "instructions": [{"name", "locus", "args"}],
"metadata"}], "calibration_set_id", "shots", ...}``) and its ``measurements`` artifact (per
circuit, key -> per-shot list of bits).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DeviceArchitecture",
    "build_target",
    "format_circuit_results",
    "serialize_circuit",
]

TRANSPILE_HINT = "transpile the circuit for this backend first: qiskit.transpile(circuit, backend)"


class DeviceArchitecture:
    """The qubits and calibrated loci of a dynamic quantum architecture (DQA) document."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        qubits = document.get("qubits")
        gates = document.get("gates")
        if not isinstance(qubits, list) or not qubits or not isinstance(gates, Mapping):
            raise ValueError(
                "the IQM target has no dynamic_quantum_architecture with 'qubits' and 'gates'; "
                "is the resource an iqm-server resource?"
            )
        self.calibration_set_id = str(document.get("calibration_set_id", ""))
        self.qubits: list[str] = [str(q) for q in qubits]
        self.gates: dict[str, list[tuple[str, ...]]] = {
            str(name): _loci(spec) for name, spec in gates.items()
        }

    @property
    def index_of(self) -> dict[str, int]:
        """Qubit name -> Qiskit qubit index (the DQA's order)."""
        return {name: index for index, name in enumerate(self.qubits)}


def _loci(spec: Any) -> list[tuple[str, ...]]:
    """Every locus of every implementation of a gate, without repeats, in order."""
    seen: dict[tuple[str, ...], None] = {}
    implementations = spec.get("implementations", {}) if isinstance(spec, Mapping) else {}
    for implementation in implementations.values():
        for locus in implementation.get("loci", []) if isinstance(implementation, Mapping) else []:
            seen[tuple(str(q) for q in locus)] = None
    return list(seen)


def build_target(
    architecture: DeviceArchitecture, errors: Mapping[str, float] | None = None
) -> Any:
    """A Qiskit ``Target`` with ``r``, ``id``, ``cz`` and ``measure`` on the calibrated loci.

    ``errors`` (from quality metrics, ``"<gate>:<QB1>[,<QB2>]"`` -> error) sets instruction
    errors so that the transpiler prefers better qubits.
    """
    from qiskit.circuit import Measure, Parameter
    from qiskit.circuit.library import CZGate, IGate, RGate
    from qiskit.transpiler import InstructionProperties, Target

    index = architecture.index_of
    target = Target(num_qubits=len(architecture.qubits))
    native = {
        "prx": RGate(Parameter("θ"), Parameter("φ")),
        "cz": CZGate(),
        "measure": Measure(),
    }
    for iqm_name, gate in native.items():
        loci = architecture.gates.get(iqm_name, [])
        if not loci:
            continue
        properties = {
            tuple(index[q] for q in locus): InstructionProperties(
                error=(errors or {}).get(f"{iqm_name}:{','.join(locus)}")
            )
            for locus in loci
            if all(q in index for q in locus)
        }
        target.add_instruction(gate, properties)
    single = architecture.gates.get("prx", [])
    target.add_instruction(IGate(), {(index[q],): None for (q,) in single if q in index})
    return target


def serialize_circuit(circuit: Any, qubit_names: Mapping[int, str]) -> dict[str, Any]:
    """A Qiskit circuit of native gates as an IQM circuit (``{"name", "instructions",
    "metadata"}``).

    Raises:
        ValueError: an operation IQM does not run natively, or an unbound parameter.
    """
    instructions = []
    for item in circuit.data:
        operation = item.operation
        locus = [qubit_names[circuit.find_bit(q).index] for q in item.qubits]
        if operation.name == "id":
            continue
        if operation.name == "measure":
            key = measurement_key(circuit, item.clbits[0])
            instructions.append({"name": "measure", "locus": locus, "args": {"key": key}})
        elif operation.name == "r":
            instructions.append({"name": "prx", "locus": locus, "args": _prx_args(operation)})
        elif operation.name in ("cz", "barrier"):
            instructions.append({"name": operation.name, "locus": locus, "args": {}})
        else:
            raise ValueError(
                f"circuit {circuit.name!r} has operation {operation.name!r}, which IQM does not "
                f"run natively (it runs r, cz, measure and barrier); {TRANSPILE_HINT}"
            )
    return {"name": circuit.name, "instructions": instructions, "metadata": _metadata(circuit)}


def measurement_key(circuit: Any, clbit: Any) -> str:
    """``<creg name>_<creg size>_<creg index>_<clbit index>`` of a classical bit."""
    location = circuit.find_bit(clbit)
    if not location.registers:
        raise ValueError(f"circuit {circuit.name!r} measures into a bit outside any register")
    register, clbit_index = location.registers[0]
    register_index = list(circuit.cregs).index(register)
    return f"{register.name}_{register.size}_{register_index}_{clbit_index}"


def _prx_args(operation: Any) -> dict[str, float]:
    try:
        theta, phi = (float(p) for p in operation.params)
    except TypeError:
        raise ValueError(
            f"an r gate has unbound parameters {operation.params}; bind them with "
            "circuit.assign_parameters(...) before running"
        ) from None
    return {"angle_t": theta / (2 * math.pi), "phase_t": phi / (2 * math.pi)}


def _metadata(circuit: Any) -> dict[str, Any] | None:
    import json

    try:
        json.dumps(circuit.metadata)
    except (TypeError, ValueError):
        return None
    return dict(circuit.metadata or {})


def format_circuit_results(
    measurements: Mapping[str, Any], shots: int
) -> tuple[list[str], dict[str, int]]:
    """One circuit's ``measurements`` artifact as Qiskit memory and counts.

    Each shot is the classical registers, last register first and separated by spaces, each
    with its bit 0 rightmost (Qiskit's convention).
    """
    registers: dict[int, dict[int, list[int]]] = {}
    sizes: dict[int, int] = {}
    for key, per_shot in measurements.items():
        _, size, register, clbit = str(key).rsplit("_", 3)
        sizes[int(register)] = int(size)
        registers.setdefault(int(register), {})[int(clbit)] = [int(bits[0]) for bits in per_shot]
    taken = min([shots, *(len(v) for reg in registers.values() for v in reg.values())])
    memory = [_shot_text(registers, sizes, s) for s in range(taken)]
    return memory, dict(Counter(memory))


def _shot_text(
    registers: Mapping[int, Mapping[int, list[int]]], sizes: Mapping[int, int], shot: int
) -> str:
    fields = []
    for register in sorted(registers, reverse=True):
        bits = registers[register]
        fields.append(
            "".join(
                str(bits[c][shot]) if c in bits else "0" for c in reversed(range(sizes[register]))
            )
        )
    return " ".join(fields)
