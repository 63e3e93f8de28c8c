"""QRMIBackend.check_faulty refuses circuits on qubits or edges the properties mark faulty."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import qiskit_ibm_runtime
from qiskit.circuit import QuantumCircuit

from qrmi.primitives.ibm import get_backend

from .doubles import ScriptedResource

SNAPSHOTS = Path(qiskit_ibm_runtime.__file__).parent / "fake_provider" / "backends"


def manila(*, faulty_qubit: int | None = None, faulty_edge: list[int] | None = None) -> str:
    conf = json.loads((SNAPSHOTS / "manila" / "conf_manila.json").read_text())
    props = json.loads((SNAPSHOTS / "manila" / "props_manila.json").read_text())
    broken = {"date": props["last_update_date"], "name": "operational", "unit": "", "value": 0}
    if faulty_qubit is not None:
        props["qubits"][faulty_qubit].append(broken)
    if faulty_edge is not None:
        gate = next(g for g in props["gates"] if g["qubits"] == faulty_edge)
        gate["parameters"].append(broken)
    return json.dumps({"configuration": conf, "properties": props})


def bell(*qubits: int) -> QuantumCircuit:
    circuit = QuantumCircuit(5, name="bell")
    circuit.h(qubits[0])
    circuit.cx(*qubits)
    circuit.barrier()  # barriers span every qubit and are ignored
    return circuit


def backend(target_json: str) -> Any:
    return get_backend(ScriptedResource(name="manila", target_json=target_json))


def test_a_healthy_device_accepts_the_circuit() -> None:
    backend(manila()).check_faulty(bell(0, 1))


def test_a_circuit_on_a_faulty_qubit_is_refused() -> None:
    device = backend(manila(faulty_qubit=2))
    device.check_faulty(bell(0, 1))
    with pytest.raises(ValueError, match="bell.*faulty qubit 2"):
        device.check_faulty(bell(1, 2))


def test_a_circuit_on_a_faulty_edge_is_refused() -> None:
    device = backend(manila(faulty_edge=[1, 2]))
    device.check_faulty(bell(0, 1))
    with pytest.raises(ValueError, match=r"faulty edge \(1, 2\)"):
        device.check_faulty(bell(1, 2))


def test_without_properties_nothing_is_checked() -> None:
    conf = json.loads(manila())["configuration"]
    device = backend(json.dumps({"configuration": conf, "properties": None}))
    device.check_faulty(bell(1, 2))
