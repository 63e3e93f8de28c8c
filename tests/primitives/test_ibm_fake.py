"""The primitives through the ibm-quantum-system backend against the fake Direct Access server.

This is the path where the reference loses results: its RuntimeJobV2.__del__ stops the task, and
stopping on Direct Access DELETEs the job. Here a dropped job object leaves the job in place.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

from qrmi import QuantumResource
from qrmi.primitives import RuntimeJobV2
from qrmi.primitives.ibm import EstimatorV2, SamplerV2, get_backend

pytestmark = pytest.mark.slow  # starts three local servers (API, IAM, S3)

NAME = "ibm_perth"
TIMEOUT = 120


@pytest.fixture(scope="module")
def fake() -> Iterator[Any]:
    module = pytest.importorskip("qrmi.testing.ibm_quantum_system")
    server = module.QuantumSystemFake(devices={NAME: "fake_perth"}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ibm(fake: Any) -> QuantumResource:
    return QuantumResource.from_config(NAME, "ibm-quantum-system", fake.settings)


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


def test_sampler_on_the_transpiled_circuit(ibm: QuantumResource, fake: Any) -> None:
    backend = get_backend(ibm)
    assert backend.name == NAME and backend.num_qubits == 7
    isa = generate_preset_pass_manager(optimization_level=1, target=backend.target).run(bell())
    job = SamplerV2(ibm).run([isa], shots=128)
    task_id = job.job_id()
    counts = job.result(timeout=TIMEOUT)[0].data.meas.get_counts()
    assert sum(counts.values()) == 128 and set(counts) == {"00", "11"}
    del job
    gc.collect()
    assert f"results_{task_id}.json" in fake.s3.keys()  # noqa: SIM118 - S3 keys
    again = RuntimeJobV2(ibm, task_id).result(timeout=TIMEOUT)
    assert again[0].data.meas.get_counts() == counts


def test_estimator(ibm: QuantumResource) -> None:
    qc = bell().remove_final_measurements(inplace=False)
    isa = generate_preset_pass_manager(optimization_level=1, backend=get_backend(ibm)).run(qc)
    mapped = [SparsePauliOp(op).apply_layout(isa.layout) for op in ("ZZ", "XX")]
    evs = EstimatorV2(ibm).run([(isa, mapped)], precision=0.02).result(timeout=TIMEOUT)[0].data.evs
    assert abs(evs[0] - 1) <= 0.1 and abs(evs[1] - 1) <= 0.1
