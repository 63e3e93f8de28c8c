"""SamplerV2 on the local emulator agrees with Qiskit's StatevectorSampler."""

from __future__ import annotations

import math

import numpy as np
from qiskit.circuit import (
    ClassicalRegister,
    Parameter,
    ParameterVector,
    QuantumCircuit,
    QuantumRegister,
)
from qiskit.primitives import PrimitiveResult, StatevectorSampler
from qiskit.transpiler import generate_preset_pass_manager

from qrmi import QuantumResource, TaskStatus
from qrmi.primitives.ibm import SamplerV2, get_target

TIMEOUT = 120


def assert_same_distribution(ours: dict[str, int], reference: dict[str, int]) -> None:
    """Two samples of one distribution: every outcome's frequencies agree within 5 sigma."""
    n_ours, n_ref = sum(ours.values()), sum(reference.values())
    for outcome in set(ours) | set(reference):
        a, b = ours.get(outcome, 0), reference.get(outcome, 0)
        pooled = (a + b) / (n_ours + n_ref)
        sigma = math.sqrt(pooled * (1 - pooled) * (1 / n_ours + 1 / n_ref))
        assert abs(a / n_ours - b / n_ref) <= 5 * sigma + 1e-12, (outcome, ours, reference)


def reference_counts(pubs: list[object], shots: int) -> PrimitiveResult:
    return StatevectorSampler(seed=7).run(pubs, shots=shots).result()


def ghz(n: int) -> QuantumCircuit:
    qc = QuantumCircuit(n)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure_all()
    return qc


def test_bell_counts(emulator: QuantumResource) -> None:
    result = SamplerV2(emulator).run([ghz(2)], shots=2000).result(timeout=TIMEOUT)
    counts = result[0].data.meas.get_counts()
    assert sum(counts.values()) == 2000
    assert set(counts) == {"00", "11"}
    assert_same_distribution(counts, reference_counts([ghz(2)], 2000)[0].data.meas.get_counts())


def test_ghz_and_multiple_pubs_with_their_own_shots(emulator: QuantumResource) -> None:
    pubs = [ghz(3), (ghz(4), None, 300), ghz(5)]
    result = SamplerV2(emulator, options={"default_shots": 800}).run(pubs).result(TIMEOUT)
    assert len(result) == 3
    assert [r.data.meas.num_shots for r in result] == [800, 300, 800]
    reference = reference_counts(pubs, 800)
    for ours, ref in zip(result, reference, strict=True):
        assert_same_distribution(ours.data.meas.get_counts(), ref.data.meas.get_counts())
    assert set(result[2].data.meas.get_counts()) == {"00000", "11111"}


def test_parameterised_circuit_with_an_array_of_values(emulator: QuantumResource) -> None:
    theta = Parameter("theta")
    qc = QuantumCircuit(2)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    qc.measure_all()
    values = np.array([[0.0], [math.pi / 3], [math.pi / 2], [math.pi]])
    result = SamplerV2(emulator).run([(qc, values)], shots=1500).result(TIMEOUT)
    bits = result[0].data.meas
    assert bits.shape == (4,)
    reference = reference_counts([(qc, values)], 1500)[0].data.meas
    for index in range(4):
        assert_same_distribution(bits.get_counts(index), reference.get_counts(index))
    assert bits.get_counts(0) == {"00": 1500}
    assert bits.get_counts(3) == {"11": 1500}


def test_parameter_vector_values_keep_their_order(emulator: QuantumResource) -> None:
    # 12 elements: names sort differently as text (_v_10_ before _v_2_) than as a vector.
    v = ParameterVector("v", 12)
    qc = QuantumCircuit(6)
    for i, p in enumerate(v):
        qc.rx(p, i % 6)
    qc.measure_all()
    values = [math.pi if i in (1, 10) else 0.0 for i in range(12)]  # flips qubits 1 and 4
    result = SamplerV2(emulator).run([(qc, values)], shots=50).result(TIMEOUT)
    assert result[0].data.meas.get_counts() == {"010010": 50}


def test_results_keep_the_classical_register_names(emulator: QuantumResource) -> None:
    q = QuantumRegister(3, "q")
    alpha, beta = ClassicalRegister(2, "alpha"), ClassicalRegister(1, "beta")
    qc = QuantumCircuit(q, alpha, beta)
    qc.x(0)
    qc.h(2)
    qc.measure(0, alpha[0])
    qc.measure(1, alpha[1])
    qc.measure(2, beta[0])
    result = SamplerV2(emulator).run([qc], shots=1000).result(TIMEOUT)
    data = result[0].data
    assert sorted(data.keys()) == ["alpha", "beta"]
    assert data.alpha.get_counts() == {"01": 1000}
    reference = reference_counts([qc], 1000)[0].data
    assert_same_distribution(data.beta.get_counts(), reference.beta.get_counts())


def test_mid_circuit_measurement_and_feed_forward(emulator: QuantumResource) -> None:
    q, c = QuantumRegister(2, "q"), ClassicalRegister(2, "c")
    qc = QuantumCircuit(q, c)
    qc.h(0)
    qc.measure(0, c[0])
    with qc.if_test((c[0], 1)):
        qc.x(1)
    qc.measure(1, c[1])
    result = SamplerV2(emulator).run([qc], shots=1000).result(TIMEOUT)
    counts = result[0].data.c.get_counts()
    assert set(counts) == {"00", "11"}
    # StatevectorSampler cannot run control flow; the exact distribution is 50/50.
    assert abs(counts["11"] - 500) <= 5 * math.sqrt(1000 * 0.25)


def test_transpiled_circuit_on_the_emulated_device(emulator: QuantumResource) -> None:
    isa = generate_preset_pass_manager(optimization_level=1, target=get_target(emulator)).run(
        ghz(3)
    )
    result = SamplerV2(emulator).run([isa], shots=1000).result(TIMEOUT)
    counts = result[0].data.meas.get_counts()
    assert set(counts) == {"000", "111"}
    assert_same_distribution(counts, reference_counts([ghz(3)], 1000)[0].data.meas.get_counts())


def test_a_short_task_is_returned_correctly(emulator: QuantumResource) -> None:
    """Time-to-result is measured in benchmarks/time_to_result.py; here only correctness."""
    job = SamplerV2(emulator).run([ghz(2)], shots=10)
    counts = job.result(timeout=TIMEOUT)[0].data.meas.get_counts()
    assert sum(counts.values()) == 10 and set(counts) <= {"00", "11"}
    assert emulator.task_status(job.job_id()) == TaskStatus.Completed
    assert job.done()


def test_more_than_100_qubits_transpile_and_sample(make_emulator: object) -> None:
    big = make_emulator("big", QRMI_LOCAL_DEVICE="fake_sherbrooke")  # type: ignore[operator]
    target = get_target(big)
    assert target.num_qubits == 127
    circuit = ghz(5)
    isa = generate_preset_pass_manager(optimization_level=1, target=target).run(circuit)
    assert isa.num_qubits == 127
    result = SamplerV2(big).run([isa], shots=500).result(timeout=TIMEOUT)
    counts = result[0].data.meas.get_counts()
    assert set(counts) == {"00000", "11111"}
    assert_same_distribution(counts, reference_counts([circuit], 500)[0].data.meas.get_counts())
