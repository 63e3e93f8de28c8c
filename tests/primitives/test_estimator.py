"""EstimatorV2 on the local emulator agrees with Qiskit's StatevectorEstimator."""

from __future__ import annotations

import math

import numpy as np
from qiskit.circuit import Parameter, QuantumCircuit
from qiskit.primitives import StatevectorEstimator
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

from qrmi import QuantumResource
from qrmi.primitives.ibm import EstimatorV2, get_target

TIMEOUT = 120


def exact(pubs: list[object]) -> list[np.ndarray]:
    """Noise-free expectation values from Qiskit's reference estimator."""
    return [r.data.evs for r in StatevectorEstimator().run(pubs, precision=0.0).result()]


def assert_close(ours: np.ndarray, reference: np.ndarray, precision: float) -> None:
    assert np.shape(ours) == np.shape(reference)
    assert np.all(np.abs(np.asarray(ours) - reference) <= 5 * precision + 1e-9), (ours, reference)


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    return qc


def test_bell_observables_list(emulator: QuantumResource) -> None:
    pub = (bell(), ["ZZ", "XX", "YY", "ZI", SparsePauliOp(["ZZ", "XX"], [0.5, 0.5])])
    result = EstimatorV2(emulator).run([pub]).result(timeout=TIMEOUT)
    evs = result[0].data.evs
    assert_close(evs, exact([pub])[0], 0.015625)
    assert np.allclose(evs, [1, 1, -1, 0, 1], atol=5 * 0.015625)
    assert result[0].data.stds.shape == (5,)


def test_parameters_and_observables_broadcast(emulator: QuantumResource) -> None:
    theta = Parameter("theta")
    qc = QuantumCircuit(2)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    observables = [["ZZ"], ["XX"], ["IZ"]]  # shape (3, 1)
    values = [[0.0], [math.pi / 4], [math.pi / 2], [math.pi]]  # shape (4,)
    pub = (qc, observables, values)
    result = EstimatorV2(emulator).run([pub], precision=0.01).result(timeout=TIMEOUT)
    assert result[0].data.evs.shape == (3, 4)
    assert_close(result[0].data.evs, exact([pub])[0], 0.01)


def test_multiple_pubs_with_their_own_precision(emulator: QuantumResource) -> None:
    ghz = QuantumCircuit(3)
    ghz.h(0)
    ghz.cx(0, 1)
    ghz.cx(1, 2)
    pubs = [(bell(), "ZZ"), (ghz, ["ZZZ", "XXX", "ZZI"], None, 0.05)]
    result = EstimatorV2(emulator).run(pubs, precision=0.02).result(timeout=TIMEOUT)
    assert len(result) == 2
    references = exact(pubs)
    assert_close(result[0].data.evs, references[0], 0.02)
    assert_close(result[1].data.evs, references[1], 0.05)
    assert result[0].metadata["target_precision"] == 0.02
    assert result[1].metadata["target_precision"] == 0.05


def test_observables_array_on_a_transpiled_circuit(emulator: QuantumResource) -> None:
    circuit = bell()
    isa = generate_preset_pass_manager(optimization_level=1, target=get_target(emulator)).run(
        circuit
    )
    labels = np.array([["ZZ", "XX"], ["YY", "IZ"]])
    mapped = np.vectorize(lambda s: SparsePauliOp(s).apply_layout(isa.layout), otypes=[object])(
        labels
    )
    result = EstimatorV2(emulator).run([(isa, mapped)]).result(timeout=TIMEOUT)
    assert result[0].data.evs.shape == (2, 2)
    assert_close(result[0].data.evs, exact([(circuit, labels.tolist())])[0], 0.015625)
