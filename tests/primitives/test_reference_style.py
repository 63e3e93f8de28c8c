"""Programs written in the reference's style run unchanged (inside a job and from a config)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

from qrmi.primitives import QRMIService
from qrmi.primitives.ibm import EstimatorV2, SamplerV2, get_backend, get_target


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


@pytest.fixture
def inside_a_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The environment the Slurm plugin gives a job run with ``--qpu=local``."""
    monkeypatch.setenv("QRMI_JOB_QPU_RESOURCES", "local")
    monkeypatch.setenv("QRMI_JOB_QPU_TYPES", "local-emulator")
    monkeypatch.setenv("local_QRMI_LOCAL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("local_QRMI_LOCAL_IDLE_SECONDS", "5")


@pytest.mark.usefixtures("inside_a_job")
def test_reference_sampler_program() -> None:
    service = QRMIService()
    qrmi = service.resources()[0]
    target = get_target(qrmi)
    pm = generate_preset_pass_manager(optimization_level=1, target=target)
    isa = pm.run(bell())
    sampler = SamplerV2(qrmi)
    job = sampler.run([isa])
    counts = job.result()[0].data.meas.get_counts()
    assert sum(counts.values()) == 1024 and set(counts) == {"00", "11"}


@pytest.mark.usefixtures("inside_a_job")
def test_reference_estimator_program_with_a_backend() -> None:
    service = QRMIService()
    qrmi = random.choice(service.resources())
    backend = get_backend(qrmi)
    pm = generate_preset_pass_manager(optimization_level=1, backend=backend)
    qc = bell().remove_final_measurements(inplace=False)
    isa = pm.run(qc)
    observable = SparsePauliOp("ZZ").apply_layout(isa.layout)
    estimator = EstimatorV2(qrmi, options={"default_precision": 0.02})
    job = estimator.run([(isa, observable)])
    assert abs(float(job.result()[0].data.evs) - 1.0) <= 0.1
    assert service.resource("local") is qrmi
    assert service.resource("nope") is None


def test_outside_a_job_the_config_file_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = {
        "resources": [
            {
                "name": "emu",
                "type": "local-emulator",
                "environment": {
                    "QRMI_LOCAL_STATE_DIR": str(tmp_path / "state"),
                    "QRMI_LOCAL_IDLE_SECONDS": "5",
                },
            }
        ]
    }
    path = tmp_path / "qrmi_config.json"
    path.write_text(json.dumps(config))
    for name in ("QRMI_JOB_QPU_RESOURCES", "SLURM_JOB_QPU_RESOURCES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QRMI_CONFIG_FILE", str(path))
    qrmi = QRMIService().resources()[0]
    assert qrmi.resource_id() == "emu"
    counts = SamplerV2(qrmi).run([bell()], shots=100).result()[0].data.meas.get_counts()
    assert sum(counts.values()) == 100
