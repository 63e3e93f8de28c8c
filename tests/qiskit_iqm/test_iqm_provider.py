"""qrmi.qiskit_iqm runs the reference's IQM example (IQMProvider, transpile, run, counts)
against the IQM Server fake, without IQM's client libraries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, transpile

from qrmi.errors import ResourceNotFoundError
from qrmi.models import TaskStatus
from qrmi.qiskit_iqm import IQMJobCustom, IQMProvider, QRMIBackend
from qrmi.testing.iqm_server import IQMServerFake

JOBS = "/api/v1/jobs/*"


@pytest.fixture(scope="module")
def fake() -> Iterator[IQMServerFake]:
    with IQMServerFake(seed=7) as server:
        yield server


@pytest.fixture
def job_env(fake: IQMServerFake, monkeypatch: pytest.MonkeyPatch) -> str:
    """What the Slurm plugin exports for ``--qpu=garnet_mock`` (plus an IBM resource)."""
    name = fake.resource_name
    for key, value in fake.settings().items():
        monkeypatch.setenv(f"{name}_{key}", value)
    monkeypatch.setenv("QRMI_JOB_QPU_RESOURCES", f"ibm_fez,{name}")
    monkeypatch.setenv("QRMI_JOB_QPU_TYPES", "ibm-quantum-system,iqm-server")
    return name


def ghz(num_qubits: int) -> QuantumCircuit:
    circuit = QuantumCircuit(num_qubits)
    circuit.h(0)
    for qubit in range(1, num_qubits):
        circuit.cx(0, qubit)
    circuit.barrier()
    circuit.measure_all()
    return circuit


def last_run_request(fake: IQMServerFake) -> Any:
    return [r for r in fake.requests(JOBS, method="POST") if r.path.endswith("/circuit")][-1]


def test_the_reference_example_runs(fake: IQMServerFake, job_env: str) -> None:
    backend = IQMProvider().get_backend()
    isa = transpile(ghz(min(backend.num_qubits, 5)), backend)

    job = backend.run(isa, shots=1000)
    counts = job.result().get_counts()

    assert isinstance(backend, QRMIBackend) and isinstance(job, IQMJobCustom)
    assert backend.num_qubits == 5 and "5 qubits" in repr(backend)
    assert set(counts) <= {"00000", "11111"} and sum(counts.values()) == 1000
    request = last_run_request(fake)
    assert request.params.get("use_timeslot") == "false"
    body = request.json()
    assert body["shots"] == 1000 and body["calibration_set_id"] == fake.calibration_set_id
    names = {i["name"] for c in body["circuits"] for i in c["instructions"]}
    assert names <= {"prx", "cz", "measure", "barrier"}


def test_registers_are_printed_last_first_with_bit_zero_rightmost(
    fake: IQMServerFake, job_env: str
) -> None:
    backend = IQMProvider().get_backend()
    qubits, first, second = QuantumRegister(3), ClassicalRegister(1, "a"), ClassicalRegister(2, "b")
    circuit = QuantumCircuit(qubits, first, second)
    circuit.x(qubits[0])
    circuit.x(qubits[2])
    circuit.measure(qubits[0], first[0])
    circuit.measure(qubits[1], second[0])
    circuit.measure(qubits[2], second[1])

    result = backend.run(transpile(circuit, backend, optimization_level=0), shots=20).result()

    assert result.get_counts() == {"10 1": 20}
    assert result.get_memory() == ["10 1"] * 20


def test_a_name_the_job_does_not_hold_warns_and_uses_the_first(
    fake: IQMServerFake, job_env: str
) -> None:
    with pytest.warns(UserWarning, match="'sirius' is not available"):
        backend = IQMProvider().get_backend("sirius")
    assert backend.qrmi.resource_id() == job_env
    assert IQMProvider().get_backend("garnet:mock").qrmi.resource_id() == job_env


def test_a_calibration_set_selects_it_on_the_server(fake: IQMServerFake, job_env: str) -> None:
    backend = IQMProvider().get_backend(calibration_set_id=fake.calibration_set_id)  # type: ignore[arg-type]

    assert backend.qrmi.resource_id() == f"{job_env},{fake.calibration_set_id}"
    assert fake.requests(f"/api/v1/calibration-sets/*/{fake.calibration_set_id}*")


def test_metrics_become_instruction_errors(fake: IQMServerFake, job_env: str) -> None:
    plain = IQMProvider().get_backend()
    tuned = IQMProvider().get_backend(use_metrics=True)

    assert plain.target["measure"][(0,)].error is None
    assert tuned.target["measure"][(0,)].error == pytest.approx(0.03)
    assert tuned.target["r"][(0,)].error == pytest.approx(0.001)


def test_a_circuit_not_transpiled_is_refused_with_the_fix(
    fake: IQMServerFake, job_env: str
) -> None:
    backend = IQMProvider().get_backend()
    with pytest.raises(ValueError, match=r"'h'.*qiskit.transpile\(circuit, backend\)"):
        backend.run(ghz(2))


def test_cancel_stops_the_task(fake: IQMServerFake, job_env: str) -> None:
    backend = IQMProvider().get_backend()
    fake.jobs.hold()
    try:
        job = backend.run(transpile(ghz(2), backend), shots=10)
        assert job.cancel() is True
        result = job.result(timeout=30)
    finally:
        fake.jobs.resume()
    assert backend.qrmi.task_status(job.job_id()) == TaskStatus.Cancelled
    assert result.success is False and result.status == "CANCELLED"


def test_a_job_without_iqm_resources_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QRMI_JOB_QPU_RESOURCES", "ibm_fez")
    monkeypatch.setenv("QRMI_JOB_QPU_TYPES", "ibm-quantum-system")
    with pytest.raises(ResourceNotFoundError, match="no iqm-server resource"):
        IQMProvider().get_backend()
