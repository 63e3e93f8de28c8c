"""Pulser's QPUBackend runs on pasqal-cloud and pasqal-local through PulserQRMIConnection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("pulser")

from pulser.backend.qpu import QPUBackend
from pulser.backend.remote import BatchStatus, JobStatus
from pulser.devices import AnalogDevice
from pulser.pulse import Pulse
from pulser.sequence import Sequence

from qrmi.errors import InvalidInputError, UnsupportedResourceTypeError
from qrmi.pulser import PulserQRMIConnection, batch_status
from qrmi.resource import QuantumResource
from qrmi.testing.munge import munge_available
from qrmi.testing.pasqal_cloud import PasqalCloudFake
from qrmi.testing.pasqal_warden import PasqalWardenFake


@pytest.fixture(scope="module")
def cloud() -> Iterator[PasqalCloudFake]:
    with PasqalCloudFake(seed=1) as fake:
        yield fake


def sequence(parametrized: bool = False) -> Sequence[Any]:
    register = AnalogDevice.pre_calibrated_layouts[0].define_register(0, 1)
    seq = Sequence(register, AnalogDevice)
    seq.declare_channel("rydberg", "rydberg_global")
    amplitude: Any = seq.declare_variable("omega") if parametrized else 2.0
    seq.add(Pulse.ConstantPulse(200, amplitude, 0.0, 0.0), "rydberg")
    return seq


def cloud_connection(fake: PasqalCloudFake) -> PulserQRMIConnection:
    resource = QuantumResource("EMU_FREE", "pasqal-cloud", config=fake.settings(), environ={})
    return PulserQRMIConnection(resource, timeout=60)


def test_a_batch_of_parametrized_jobs_runs_on_pasqal_cloud(cloud: PasqalCloudFake) -> None:
    backend = QPUBackend(sequence(parametrized=True), connection=cloud_connection(cloud))

    results = backend.run(
        job_params=[
            {"runs": 30, "variables": {"omega": 1.0}},
            {"runs": 40, "variables": {"omega": 3.0}},
        ],
        wait=True,
    )

    assert results.get_batch_status() == BatchStatus.DONE
    assert [sum(r.final_bitstrings.values()) for r in results.results] == [30, 40]
    assert all(len(bits) == 2 for r in results.results for bits in r.final_bitstrings)
    assert len(results.job_ids) == 2
    assert len(cloud.requests("/core-fast/api/v1/batches", method="POST")) == 2


def test_a_batch_can_be_read_and_cancelled_from_its_id(cloud: PasqalCloudFake) -> None:
    connection = cloud_connection(cloud)
    cloud.jobs.hold()
    try:
        results = QPUBackend(sequence(), connection=connection).run([{"runs": 10}])
        assert results.get_batch_status() == BatchStatus.PENDING

        connection.cancel_batch_jobs(results.batch_id)

        other = cloud_connection(cloud)
        assert other._get_batch_status(results.batch_id) == BatchStatus.CANCELED
    finally:
        cloud.jobs.resume()


@pytest.mark.skipif(not munge_available(), reason="munged is not installed")
def test_a_sequence_runs_on_pasqal_local() -> None:
    with PasqalWardenFake(seed=2) as fake:
        session = QuantumResource("onprem", "pasqal-local", config=fake.settings()).acquire()
        settings = fake.settings(QRMI_JOB_ACQUISITION_TOKEN=session)
        resource = QuantumResource("onprem", "pasqal-local", config=settings, environ={})

        results = QPUBackend(sequence(), connection=PulserQRMIConnection(resource)).run(
            [{"runs": 25}], wait=True
        )

        (result,) = results.results
        assert sum(result.final_bitstrings.values()) == 25


def test_batch_status_follows_the_reference_rules() -> None:
    P, R, D, C, E = (
        JobStatus.PENDING,
        JobStatus.RUNNING,
        JobStatus.DONE,
        JobStatus.CANCELED,
        JobStatus.ERROR,
    )

    assert batch_status([P, P]) == BatchStatus.PENDING
    assert batch_status([C, C]) == BatchStatus.CANCELED
    assert batch_status([E, E]) == BatchStatus.ERROR
    assert batch_status([D, C, E]) == BatchStatus.DONE
    assert batch_status([P, D]) == BatchStatus.RUNNING
    assert batch_status([R, D]) == BatchStatus.RUNNING


def test_only_pasqal_resources_are_accepted(cloud: PasqalCloudFake) -> None:
    other = QuantumResource(
        "garnet_mock",
        "iqm-server",
        config={"QRMI_IQM_ISA_ENDPOINT": cloud.url, "QRMI_IQM_ISA_TOKEN": "t"},
        environ={},
    )

    with pytest.raises(UnsupportedResourceTypeError, match="pasqal-cloud or pasqal-local"):
        PulserQRMIConnection(other)


def test_batch_logs_are_log_texts_of_the_last_batch_by_default(cloud: PasqalCloudFake) -> None:
    connection = cloud_connection(cloud)
    results = QPUBackend(sequence(), connection=connection).run(
        [{"runs": 5}, {"runs": 6}], wait=True
    )

    logs = connection.get_batch_logs()

    assert logs == connection.get_batch_logs(results.batch_id)
    assert len(logs) == 2
    assert all(isinstance(text, str) for text in logs)
    assert not set(logs) & set(results.job_ids), "log texts, not job ids"


def test_cancel_without_a_batch_id_cancels_the_last_batch(cloud: PasqalCloudFake) -> None:
    connection = cloud_connection(cloud)
    cloud.jobs.hold()
    try:
        QPUBackend(sequence(), connection=connection).run([{"runs": 10}])
        results = QPUBackend(sequence(), connection=connection).run([{"runs": 11}])

        connection.cancel_batch_jobs()

        assert connection._get_batch_status(results.batch_id) == BatchStatus.CANCELED
    finally:
        cloud.jobs.resume()


def test_without_any_batch_the_batch_id_is_required(cloud: PasqalCloudFake) -> None:
    connection = cloud_connection(cloud)
    with pytest.raises(InvalidInputError, match="batch_id is required"):
        connection.get_batch_logs()
    with pytest.raises(InvalidInputError, match="batch_id is required"):
        connection.cancel_batch_jobs()


def test_an_emulator_lists_every_public_device_like_the_reference(cloud: PasqalCloudFake) -> None:
    devices = cloud_connection(cloud).fetch_available_devices()

    assert list(devices) == ["EMU_MPS", "EMU_FREE", "EMU_FRESNEL"]
    assert all(device.name for device in devices.values())
