"""The primitives' OpenQASM 3 export: Qiskit's native exporter where it writes what
``qasm3.dumps`` writes, ``qasm3.dumps`` for everything else."""

from __future__ import annotations

import random
import re

import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, qasm3, transpile
from qiskit.circuit import Clbit, Gate, Parameter, Qubit
from qiskit.circuit.library import CXGate, UnitaryGate, get_standard_gate_name_mapping
from qiskit_ibm_runtime.fake_provider import FakeSherbrooke, FakeTorino

from qrmi.primitives._common import _native_qasm3, circuit_to_qasm3


def python_export(circuit: QuantumCircuit) -> str:
    """What circuit_to_qasm3 wrote before it used the native exporter."""
    return qasm3.dumps(
        circuit,
        disable_constants=True,
        allow_aliasing=True,
        experimental=qasm3.ExperimentalFeatures.SWITCH_CASE_V1,
    )


_NUMBER = re.compile(r"(?<![\w$])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def same_program(ours: str, theirs: str) -> bool:
    """Equal texts, numbers compared by value (the native exporter writes ``0`` for ``0.0``
    and ``0.000000001`` for ``1e-09``)."""
    if _NUMBER.split(ours) != _NUMBER.split(theirs):
        return False
    return [float(n) for n in _NUMBER.findall(ours)] == [float(n) for n in _NUMBER.findall(theirs)]


def layered(qubits: int, layers: int, seed: int) -> QuantumCircuit:
    rng = random.Random(seed)
    circuit = QuantumCircuit(qubits)
    for _ in range(layers):
        for qubit in range(qubits):
            circuit.ry(rng.uniform(-3.1, 3.1), qubit)
        for qubit in range(qubits - 1):
            circuit.cx(qubit, qubit + 1)
    circuit.measure_all()
    return circuit


def isa_circuits() -> dict[str, QuantumCircuit]:
    out = {}
    for device in (FakeSherbrooke(), FakeTorino()):
        for seed in range(3):
            logical = layered(3 + 4 * seed, 2 + seed, seed)
            out[f"{device.name} seed {seed}"] = transpile(
                logical, device, optimization_level=seed, seed_transpiler=seed
            )
    return out


def gate_pair(name: str) -> QuantumCircuit:
    """The standard gate ``name`` twice, with different parameters."""
    gate = get_standard_gate_name_mapping()[name]
    circuit = QuantumCircuit(gate.num_qubits)
    for k in range(2):
        params = [0.1 * (k + 1) + 0.01 * i for i in range(len(gate.params))]
        circuit.append(gate.base_class(*params), range(gate.num_qubits))
    circuit.measure_all()
    return circuit


def standard_gate_names() -> list[str]:
    return sorted(
        name
        for name, gate in get_standard_gate_name_mapping().items()
        if isinstance(gate, Gate) and name != "global_phase"
    )


class Relabelled(Gate):
    """A custom gate that reuses a standard gate's name."""

    def __init__(self) -> None:
        super().__init__("h", 1, [])

    def _define(self) -> None:
        definition = QuantumCircuit(1)
        definition.x(0)
        self.definition = definition


def python_only_circuits() -> dict[str, QuantumCircuit]:
    """Circuits the native exporter writes differently or not at all."""
    theta = Parameter("theta")
    parameter = QuantumCircuit(1)
    parameter.rx(theta, 0)
    parameter.measure_all()
    relabelled = QuantumCircuit(1)
    relabelled.append(Relabelled(), [0])
    relabelled.measure_all()
    branch = QuantumCircuit(2, 1)
    branch.measure(0, 0)
    with branch.if_test((branch.clbits[0], 1)):
        branch.x(1)
    unitary = QuantumCircuit(1)
    unitary.append(UnitaryGate([[0, 1], [1, 0]]), [0])
    unitary.measure_all()
    open_control = QuantumCircuit(2)
    open_control.append(CXGate(ctrl_state=0), [0, 1])
    open_control.measure_all()
    loose = QuantumCircuit([Qubit(), Qubit()], [Clbit()])
    loose.h(0)
    loose.measure(0, 0)
    aliased = QuantumCircuit(QuantumRegister(2, "q"), ClassicalRegister(2, "c"))
    aliased.add_register(ClassicalRegister(bits=aliased.clbits[:1], name="alias"))
    aliased.measure(0, 0)
    same_name = QuantumCircuit(QuantumRegister(1, "a"), ClassicalRegister(1, "a"))
    same_name.measure(0, 0)
    circuits = {
        "parameter": parameter,
        "custom gate named h": relabelled,
        "if_test": branch,
        "unitary": unitary,
        "open control": open_control,
        "loose bits": loose,
        "aliased register": aliased,
        "register names shared": same_name,
        "rzz twice": gate_pair("rzz"),
        "rxx twice": gate_pair("rxx"),
    }
    for name in ("x", "ecr", "input", "pi", "U", "end", "_private"):
        named = QuantumCircuit(QuantumRegister(1, "q"), ClassicalRegister(1, name))
        named.h(0)
        named.measure(0, 0)
        circuits[f"register named {name}"] = named
    return circuits


@pytest.mark.parametrize("name", sorted(isa_circuits()))
def test_isa_circuits_are_written_natively_as_qasm3_dumps_writes_them(name: str) -> None:
    circuit = isa_circuits()[name]

    assert _native_qasm3(circuit) is not None
    assert same_program(circuit_to_qasm3(circuit, 0, "test"), python_export(circuit))


@pytest.mark.parametrize("name", standard_gate_names())
def test_each_standard_gate_is_written_as_qasm3_dumps_writes_it(name: str) -> None:
    circuit = gate_pair(name)

    assert same_program(circuit_to_qasm3(circuit, 0, "test"), python_export(circuit))


@pytest.mark.parametrize("name", sorted(python_only_circuits()))
def test_what_the_native_exporter_gets_wrong_goes_to_qasm3_dumps(name: str) -> None:
    circuit = python_only_circuits()[name]

    assert _native_qasm3(circuit) is None
    assert circuit_to_qasm3(circuit, 0, "test") == python_export(circuit)


def test_numbers_written_without_exponent_read_back_the_same() -> None:
    circuit = QuantumCircuit(2)
    circuit.rz(1e-9, 0)
    circuit.rz(2.5e20, 1)
    circuit.delay(1e-6, 0, "s")
    circuit.measure_all()

    text = circuit_to_qasm3(circuit, 0, "test")

    assert "0.000000001" in text
    read = qasm3.loads(text)
    expected = qasm3.loads(python_export(circuit))
    assert [(item.name, item.params) for item in read.data] == [
        (item.name, item.params) for item in expected.data
    ]
