"""The sampler's shots: drawn from the exact distribution of the final measurements when every
measurement ends its qubit's part of the circuit, by Aer shot by shot otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, qasm3, transpile
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import Statevector
from qiskit_ibm_runtime.decoders.result_decoder import ResultDecoder
from qiskit_ibm_runtime.fake_provider import FakeSherbrooke

from qrmi.backends.local_emulator import engine

SHOTS = 20_000


def sample(circuit: QuantumCircuit, values: Any = None, **kwargs: Any) -> Any:
    pub = [qasm3.dumps(circuit), values, kwargs.pop("shots", SHOTS)]
    text = engine.run_primitive("sampler", {"pubs": [pub], "version": 2}, **kwargs)
    return ResultDecoder.decode(text)[0]


def distance(counts: dict[str, int], expected: dict[str, float]) -> float:
    """Total variation distance between observed counts and expected probabilities."""
    shots = sum(counts.values())
    keys = set(counts) | set(expected)
    return sum(abs(counts.get(k, 0) / shots - expected.get(k, 0.0)) for k in keys) / 2


def test_bits_land_on_their_clbits_in_wide_registers() -> None:
    # 20 qubits, 5 set; measured into two registers in a scrambled order, with unread clbits.
    circuit = QuantumCircuit(QuantumRegister(20, "q"))
    low, high = ClassicalRegister(11, "low"), ClassicalRegister(12, "high")
    circuit.add_register(low)
    circuit.add_register(high)
    for qubit in (0, 3, 9, 17, 19):
        circuit.x(qubit)
    targets = [*low[:10], *high[:10]]
    order = np.random.default_rng(3).permutation(20)
    for qubit, target in zip(order, targets, strict=True):
        circuit.measure(int(qubit), target)
    expected_low = ["0"] * 11
    expected_high = ["0"] * 12
    for qubit, target in zip(order, targets, strict=True):
        if qubit in (0, 3, 9, 17, 19):
            bits, register = (expected_low, low) if target in low else (expected_high, high)
            bits[len(bits) - 1 - register.index(target)] = "1"

    result = sample(circuit, shots=100, device="fake_sherbrooke")

    assert result.metadata["simulator"]["sampling"] == "distribution"
    assert result.data.low.get_counts() == {"".join(expected_low): 100}
    assert result.data.high.get_counts() == {"".join(expected_high): 100}


def test_shots_follow_the_exact_distribution() -> None:
    circuit = QuantumCircuit(4)
    circuit.h(0)
    circuit.ry(1.1, 1)
    circuit.cx(1, 2)
    circuit.rx(0.4, 3)
    circuit.cz(0, 3)
    expected = Statevector(circuit).probabilities_dict()
    circuit.measure_all()

    result = sample(circuit, seed=5)

    assert result.metadata["simulator"]["sampling"] == "distribution"
    assert distance(result.data.meas.get_counts(), expected) < 0.02


def test_an_isa_circuit_on_a_127_qubit_device_is_sampled_from_its_distribution() -> None:
    logical = QuantumCircuit(12)
    logical.h(0)
    for qubit in range(11):
        logical.cx(qubit, qubit + 1)
    logical.measure_all()
    isa = transpile(logical, FakeSherbrooke(), optimization_level=1, seed_transpiler=1)

    result = sample(isa, device="fake_sherbrooke", seed=2)

    assert result.metadata["simulator"]["sampling"] == "distribution"
    counts = result.data.meas.get_counts()
    assert set(counts) == {"0" * 12, "1" * 12}
    assert abs(counts["0" * 12] / SHOTS - 0.5) < 0.02


def test_parameter_sets_are_sampled_each_from_its_own_distribution() -> None:
    theta = ParameterVector("t", 2)
    circuit = QuantumCircuit(2)
    circuit.ry(theta[0], 0)
    circuit.ry(theta[1], 1)
    circuit.cx(0, 1)
    values = np.random.default_rng(1).uniform(0, np.pi, (3, 2, 2))
    measured = circuit.copy()
    measured.measure_all()

    bits = sample(measured, values.tolist(), seed=9).data.meas

    assert bits.shape == (3, 2)
    assert bits.num_shots == SHOTS
    for index in np.ndindex(3, 2):
        expected = Statevector(circuit.assign_parameters(values[index])).probabilities_dict()
        assert distance(bits[index].get_counts(), expected) < 0.03


def test_gates_on_qubits_already_measured_change_nothing() -> None:
    circuit = QuantumCircuit(3)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure_all()
    circuit.rz(0.3, 0)
    circuit.cx(0, 1)

    result = sample(circuit, seed=4)

    assert result.metadata["simulator"]["sampling"] == "distribution"
    assert distance(result.data.meas.get_counts(), {"000": 0.5, "011": 0.5}) < 0.02


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        # the measured qubit then drives an unmeasured one: Aer runs it shot by shot
        (lambda c: (c.h(0), c.measure(0, 0), c.cx(0, 1), c.measure(1, 1)), {"00": 0.5, "11": 0.5}),
        # a qubit measured twice
        (lambda c: (c.h(0), c.measure(0, 0), c.measure(0, 1)), {"00": 0.5, "11": 0.5}),
        # a reset
        (lambda c: (c.x(0), c.measure(0, 0), c.reset(0), c.measure(0, 1)), {"01": 1.0}),
    ],
    ids=["feed-forward", "measured-twice", "reset"],
)
def test_circuits_measured_mid_way_are_sampled_by_aer(build: Any, expected: dict) -> None:
    circuit = QuantumCircuit(2, 2)
    build(circuit)

    result = sample(circuit, seed=6)

    assert result.metadata["simulator"]["sampling"] == "aer"
    assert distance(result.data.c.get_counts(), expected) < 0.02


def test_noise_leaves_sampling_to_aer() -> None:
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure_all()

    result = sample(circuit, shots=200, noise=True, seed=1)

    assert result.metadata["simulator"]["sampling"] == "aer"


def test_a_circuit_without_measurements_gives_zeros() -> None:
    circuit = QuantumCircuit(QuantumRegister(2, "q"), ClassicalRegister(3, "c"))
    circuit.h(0)

    result = sample(circuit, shots=50)

    assert result.metadata["simulator"]["sampling"] == "distribution"
    assert result.data.c.get_counts() == {"000": 50}
