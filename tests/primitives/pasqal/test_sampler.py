"""qrmi.primitives.pasqal runs qiskit-pasqal-provider analog circuits on Pasqal resources, as
the reference's ``examples/qiskit_primitives/pasqal/sampler.py`` does."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("qiskit_pasqal_provider")
pytest.importorskip("pulser")

from pulser import DigitalAnalogDevice
from qiskit.circuit import QuantumCircuit
from qiskit.providers import JobStatus
from qiskit_pasqal_provider.providers.gate import HamiltonianGate, InterpolatePoints

from qrmi import QuantumResource
from qrmi.primitives.pasqal import (
    QPPSamplerV2,
    QRMIPasqalBackend,
    QRMIPasqalJob,
    SamplerV2,
    get_device,
    get_target,
)
from qrmi.testing.pasqal_cloud import PasqalCloudFake

BATCHES = "/core-fast/api/v1/batches"


@pytest.fixture(scope="module")
def cloud() -> Iterator[PasqalCloudFake]:
    with PasqalCloudFake(seed=3) as fake:
        yield fake


def resource(fake: PasqalCloudFake, name: str = "EMU_FREE") -> QuantumResource:
    return QuantumResource(name, "pasqal-cloud", config=fake.settings(), environ={})


def analog_circuit() -> QuantumCircuit:
    """The reference example's program: an adiabatic pulse on six atoms."""
    coords = [[0, 0], [3, 5.2], [6, 0], [9, -5.2], [9, 5.2], [12, 0]]
    interaction = 5420158.53 / 8.7**6
    times = [0, 0.2, 0.8, 1]
    amplitude = InterpolatePoints(values=[0, 4, 4, 0], times=times)
    detuning = InterpolatePoints(values=[-10, -10, interaction / 2, interaction / 2], times=times)
    gate = HamiltonianGate(amplitude, detuning, 0.0, coords, grid_transform="triangular")
    circuit = QuantumCircuit(len(coords))
    circuit.append(gate, circuit.qubits)
    return circuit


def submitted_sequence(fake: PasqalCloudFake) -> Any:
    return json.loads(fake.requests(BATCHES, method="POST")[-1].json()["sequence_builder"])


def test_the_reference_example_runs_on_an_emulator(cloud: PasqalCloudFake) -> None:
    job = SamplerV2(resource(cloud)).run([analog_circuit()], shots=200)

    result = job.result()

    assert isinstance(job, QRMIPasqalJob)
    assert job.status() == JobStatus.DONE and job.done()
    counts = result[0].data.counts
    assert sum(counts.values()) == 200
    assert all(len(bits) == 6 for bits in counts)
    assert result.metadata == {
        "status": "DONE",
        "success": True,
        "backend_name": "EMU_FREE",
        "job_id": job.job_id(),
    }
    assert submitted_sequence(cloud)["device"]["name"] == DigitalAnalogDevice.name
    assert cloud.requests(BATCHES, method="POST")[-1].json()["jobs"] == [{"runs": 200}]


def test_a_qpu_uses_its_own_device_specs_and_the_default_shots(cloud: PasqalCloudFake) -> None:
    qpu = resource(cloud, "FRESNEL")

    result = QPPSamplerV2(qpu, options={"default_shots": 50}).run([analog_circuit()]).result()

    assert sum(result[0].data.counts.values()) == 50
    assert submitted_sequence(cloud)["device"]["name"] == get_device(qpu).name
    assert get_device(qpu).name != DigitalAnalogDevice.name


def test_a_cancelled_task_has_no_result(cloud: PasqalCloudFake) -> None:
    cloud.jobs.hold()
    try:
        job = SamplerV2(resource(cloud)).run([analog_circuit()], shots=10)
        assert job.status() == JobStatus.QUEUED
        job.cancel()
        with pytest.raises(RuntimeError, match="CANCELLED"):
            job.result()
    finally:
        cloud.jobs.resume()


def test_timeout_seconds_bounds_the_wait(cloud: PasqalCloudFake) -> None:
    options = {"run_options": {"timeout_seconds": 0.3, "poll_interval_seconds": 0.05}}
    cloud.jobs.hold()
    try:
        job = SamplerV2(resource(cloud), options=options).run([analog_circuit()], shots=10)
        with pytest.raises(TimeoutError, match="timed out after 0.3s"):
            job.result()
        job.cancel()
    finally:
        cloud.jobs.resume()


def test_unknown_options_are_named() -> None:
    with pytest.raises(TypeError, match="default_shots and run_options"):
        QRMIPasqalBackend(object(), options={"shots": 5})


def test_get_device_of_an_on_premises_qpu_is_the_first_listed(cloud: PasqalCloudFake) -> None:
    class OnPremises:
        """A resource whose id is not a device type (as with pasqal-local)."""

        def resource_id(self) -> str:
            return "onprem"

        def target(self) -> Any:
            return resource(cloud, "FRESNEL").target()

    assert get_device(OnPremises()).name == get_device(resource(cloud, "FRESNEL")).name


def test_get_target_is_not_available() -> None:
    with pytest.raises(NotImplementedError, match="get_device"):
        get_target(object())


def test_without_qiskit_pasqal_provider_the_error_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['qiskit_pasqal_provider'] = None\n"
        "import qrmi.primitives.pasqal as pasqal\n"  # importing works without it
        "try:\n"
        "    pasqal.SamplerV2\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "pip install 'pyqrmi[pasqal]'" in done.stdout
    assert "qiskit-pasqal-provider" in done.stdout
