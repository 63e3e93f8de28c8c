"""The reference's two 127-qubit primitive workloads on an emulated 127-qubit device.

Equivalent circuits, written here: a hardware-efficient ansatz (RY/RZ layers with a linear CX
chain) over all 127 qubits sampled 10 000 times, and a two-layer QAOA ansatz over every edge of
the device's coupling map with a ZZ observable on every edge. Both are transpiled for the
device's target, as a program for a real QPU would be, and run through ``qrmi.primitives``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

from qrmi.primitives.ibm import EstimatorV2, SamplerV2, get_target
from qrmi.resource import QuantumResource

MakeResource = Callable[..., QuantumResource]
pytestmark = pytest.mark.slow


def layered_ansatz(width: int, layers: int = 3) -> QuantumCircuit:
    angles = ParameterVector("a", 2 * width * (layers + 1))
    circuit = QuantumCircuit(width)
    values = iter(angles)
    for layer in range(layers + 1):
        for qubit in range(width):
            circuit.ry(next(values), qubit)
            circuit.rz(next(values), qubit)
        if layer < layers:
            for qubit in range(width - 1):
                circuit.cx(qubit, qubit + 1)
    circuit.measure_all()
    return circuit


def edge_qaoa(edges: list[tuple[int, int]], width: int, reps: int = 2) -> QuantumCircuit:
    gammas = ParameterVector("g", reps)
    betas = ParameterVector("b", reps)
    circuit = QuantumCircuit(width)
    circuit.h(range(width))
    for rep in range(reps):
        for a, b in edges:
            circuit.rzz(gammas[rep], a, b)
        for qubit in range(width):
            circuit.rx(2 * betas[rep], qubit)
    return circuit


@pytest.mark.parametrize("device", ["fake_sherbrooke"])
def test_sampler_on_127_qubits_with_10k_shots(make_resource: MakeResource, device: str) -> None:
    resource = make_resource(QRMI_LOCAL_DEVICE=device)
    target = get_target(resource)
    ansatz = layered_ansatz(127)
    isa = generate_preset_pass_manager(optimization_level=1, target=target).run(ansatz)
    values = np.random.default_rng(5).random(ansatz.num_parameters)

    job = SamplerV2(resource, options={"default_shots": 10_000}).run([(isa, values)])
    result = job.result(timeout=600)

    counts = result[0].data.meas.get_counts()
    assert sum(counts.values()) == 10_000
    assert all(len(bits) == 127 for bits in counts)
    simulator = result[0].metadata["simulator"]
    assert simulator["method"] == "matrix_product_state"
    assert "matrix product state" in resource.task_logs(job.job_id())


def test_qaoa_estimator_over_every_edge_of_a_127_qubit_device(make_resource: MakeResource) -> None:
    resource = make_resource(QRMI_LOCAL_DEVICE="fake_brisbane")
    target = get_target(resource)
    edges = sorted({tuple(sorted(edge)) for edge in target.build_coupling_map().get_edges()})
    observable = SparsePauliOp.from_sparse_list(
        [("ZZ", [a, b], 0.5) for a, b in edges], num_qubits=target.num_qubits
    )
    ansatz = edge_qaoa(edges, target.num_qubits)
    isa = generate_preset_pass_manager(optimization_level=1, target=target).run(ansatz)

    job = EstimatorV2(resource).run(
        [(isa, observable.apply_layout(isa.layout), [0.1, 0.2, 0.3, 0.4])]
    )
    result = job.result(timeout=600)

    value = float(result[0].data.evs)
    assert -0.5 * len(edges) <= value <= 0.5 * len(edges)
    simulator = result[0].metadata["simulator"]
    assert simulator["method"] == "matrix_product_state"
    if simulator["approximate"]:
        assert simulator["truncations"] > 0
        assert result.metadata["emulator"]["approximate"] is True
        assert "APPROXIMATE" in resource.task_logs(job.job_id())
