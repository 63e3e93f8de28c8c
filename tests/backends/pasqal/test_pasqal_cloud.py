"""The pasqal-cloud backend against the fake Pasqal Cloud (Pulser runs on Qutip)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrmi.errors import (
    AuthenticationFailedError,
    ConfigError,
    InvalidInputError,
    ServiceUnavailableError,
    UnsupportedPayloadError,
)
from qrmi.models import Payload, ResourceStatusCode, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.pasqal_cloud import PasqalCloudFake, make_jwt

TYPE = "pasqal-cloud"


@pytest.fixture(scope="module")
def fake() -> Iterator[PasqalCloudFake]:
    with PasqalCloudFake(seed=3) as server:
        yield server


@pytest.fixture(autouse=True)
def clean(fake: PasqalCloudFake) -> Iterator[None]:
    yield
    fake.faults.reset()
    fake.clear()
    fake.availability["EMU_FREE"] = "ACTIVE"


@pytest.fixture(scope="module")
def sequence() -> str:
    from pulser.devices import AnalogDevice
    from pulser.pulse import Pulse
    from pulser.sequence import Sequence

    register = AnalogDevice.pre_calibrated_layouts[0].define_register(0, 1, 2)
    seq = Sequence(register, AnalogDevice)
    seq.declare_channel("rydberg", "rydberg_global")
    seq.add(Pulse.ConstantPulse(300, 2.0, 0.0, 0.0), "rydberg")
    seq.measure("ground-rydberg")
    return str(seq.to_abstract_repr())


def qpu(
    fake: PasqalCloudFake,
    name: str = "emu_free",
    credentials: str = "client",
    environ: dict[str, str] | None = None,
    **overrides: str,
) -> QuantumResource:
    settings = fake.settings(credentials=credentials, **overrides)
    config = {key: value for key, value in settings.items() if value}
    return QuantumResource(name, TYPE, config=config, environ=environ or {})


def test_pulser_sequence_completes_with_counts(fake: PasqalCloudFake, sequence: str) -> None:
    resource = qpu(fake, credentials="token")

    task = resource.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=64))

    assert resource.task_wait(task, 60) == TaskStatus.Completed
    counter = json.loads(resource.task_result(task).value)["counter"]
    assert sum(counter.values()) == 64 and all(len(bits) == 3 for bits in counter)
    (submitted,) = fake.requests("/core-fast/api/v1/batches", method="POST")
    assert submitted.headers["authorization"].startswith("Bearer ")
    assert submitted.json() == {
        "sequence_builder": sequence,
        "jobs": [{"runs": 64}],
        "device_type": "EMU_FREE",
        "project_id": fake.project_id,
    }
    assert not fake.requests("/oauth/token")


def test_client_credentials_token_is_fetched_once_and_reused(
    fake: PasqalCloudFake, sequence: str
) -> None:
    resource = qpu(fake)

    task = resource.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=5))
    resource.task_wait(task, 60)
    resource.task_result(task)

    (grant,) = fake.requests("/oauth/token")
    assert "grant_type=client_credentials" in grant.text
    assert "audience=https%3A%2F%2Fapis.pasqal.cloud%2Faccount%2Fapi%2Fv1" in grant.text


def test_username_and_password_take_precedence(fake: PasqalCloudFake, sequence: str) -> None:
    environ = {"PASQAL_USERNAME": fake.username, "PASQAL_PASSWORD": fake.password}
    resource = qpu(fake, environ=environ)

    resource.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=5))

    (grant,) = fake.requests("/oauth/token")
    assert "password-realm" in grant.text and "username=alice" in grant.text


def test_an_expiring_jwt_is_replaced_by_a_fetched_token(
    fake: PasqalCloudFake, sequence: str
) -> None:
    soon = make_jwt(time.time() + 5)
    fake.add_token(soon)
    resource = qpu(fake, QRMI_PASQAL_CLOUD_AUTH_TOKEN=soon)

    resource.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=5))

    assert len(fake.requests("/oauth/token")) == 1
    (batch,) = fake.requests("/core-fast/api/v1/batches")
    assert batch.headers["authorization"] != f"Bearer {soon}"


def test_a_valid_jwt_is_used_as_is(fake: PasqalCloudFake, sequence: str) -> None:
    later = make_jwt(time.time() + 3600)
    fake.add_token(later)
    resource = qpu(fake, credentials="none", QRMI_PASQAL_CLOUD_AUTH_TOKEN=later)

    resource.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=5))

    (batch,) = fake.requests("/core-fast/api/v1/batches")
    assert batch.headers["authorization"] == f"Bearer {later}"


def test_a_malformed_jwt_without_other_credentials_fails_clearly(
    fake: PasqalCloudFake, sequence: str
) -> None:
    resource = qpu(fake, credentials="none", QRMI_PASQAL_CLOUD_AUTH_TOKEN="eyJ.not-base64!.x")

    with pytest.raises(AuthenticationFailedError, match="malformed") as caught:
        resource.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=5))

    assert "emu_free_QRMI_PASQAL_CLOUD_CLIENT_ID" in str(caught.value)
    assert not fake.requests("/core-fast/api/v1/batches")


def test_missing_credentials_name_the_settings(fake: PasqalCloudFake, sequence: str) -> None:
    resource = qpu(fake, credentials="none")

    with pytest.raises(AuthenticationFailedError) as caught:
        resource.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=5))

    message = str(caught.value)
    assert "emu_free_QRMI_PASQAL_CLOUD_AUTH_TOKEN" in message and "PASQAL_USERNAME" in message


def test_a_refused_token_is_refreshed_once(fake: PasqalCloudFake, sequence: str) -> None:
    resource = qpu(fake)
    task = resource.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=5))

    fake.issuer.expire_all()

    assert resource.task_wait(task, 60) == TaskStatus.Completed
    assert len(fake.requests("/oauth/token")) == 2


def test_wrong_client_secret_is_an_authentication_error(
    fake: PasqalCloudFake, sequence: str
) -> None:
    resource = qpu(fake, QRMI_PASQAL_CLOUD_CLIENT_SECRET="wrong")

    with pytest.raises(AuthenticationFailedError, match="refused"):
        resource.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=5))


def test_unknown_device_type_lists_the_valid_ones(fake: PasqalCloudFake) -> None:
    with pytest.raises(InvalidInputError, match="FRESNEL, FRESNEL_CAN1, EMU_MPS"):
        qpu(fake, name="garnet")


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (Payload.QiskitPrimitive(input="{}", program_id="sampler"), UnsupportedPayloadError),
        (Payload.PasqalCloud(sequence="not json", job_runs=5), InvalidInputError),
        (Payload.PasqalCloud(sequence="[1, 2]", job_runs=5), InvalidInputError),
        (Payload.PasqalCloud(sequence="{}", job_runs=0), InvalidInputError),
    ],
)
def test_bad_payloads_are_refused_before_any_request(
    fake: PasqalCloudFake, payload: Payload, error: type[Exception]
) -> None:
    with pytest.raises(error):
        qpu(fake).task_start(payload)

    assert not fake.requests("/core-fast/*", method="POST")


def test_cudaq_task_is_readable_from_another_resource_object(fake: PasqalCloudFake) -> None:
    cudaq = json.dumps({"setup": {"atoms": [[0, 0], [5, 0]]}, "hamiltonian": {"terms": []}})
    task = qpu(fake).task_start(Payload.PasqalCloud(sequence=cudaq, job_runs=40))

    other = qpu(fake)

    assert task.startswith("cudaq:")
    assert other.task_wait(task, 60) == TaskStatus.Completed
    counter = json.loads(other.task_result(task).value)["counter"]
    assert sum(counter.values()) == 40
    (created,) = fake.requests("/core-fast/api/v1/cudaq/job", method="POST")
    assert created.json()["machine"] == "EMU_MPS" and created.json()["shots"] == 40


def test_config_file_fills_in_unset_settings(
    fake: PasqalCloudFake, sequence: str, tmp_path: Path
) -> None:
    (tmp_path / ".pasqal").mkdir()
    (tmp_path / ".pasqal" / "config").write_text(
        "# service account\n"
        f'client_id = "{fake.client_id}"\n'
        f"client_secret={fake.client_secret}\n"
        "project_id = from-file ; overridden by the setting\n"
    )
    resource = qpu(fake, credentials="none", PASQAL_CONFIG_ROOT="${ROOT}", ROOT=str(tmp_path))

    task = resource.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=5))

    assert task
    (batch,) = fake.requests("/core-fast/api/v1/batches")
    assert batch.json()["project_id"] == fake.project_id


def test_a_malformed_config_root_is_a_config_error(fake: PasqalCloudFake) -> None:
    with pytest.raises(ConfigError, match="malformed"):
        qpu(fake, PASQAL_CONFIG_ROOT="${UNCLOSED")


def test_status_follows_availability(fake: PasqalCloudFake) -> None:
    resource = qpu(fake)
    assert resource.status().status == ResourceStatusCode.Online

    fake.availability["EMU_FREE"] = "RETIRED"

    status = resource.status()
    assert status.status == ResourceStatusCode.Offline and "RETIRED" in (status.status_reason or "")
    assert all("authorization" not in r.headers for r in fake.requests("/core-fast/api/v1/devices"))


def test_qpu_target_is_authenticated_and_has_the_specs_shape(fake: PasqalCloudFake) -> None:
    (entry,) = qpu(fake, name="FRESNEL").target().json()

    assert entry["device_type"] == "FRESNEL"
    assert json.loads(entry["specs"])["name"]
    (request,) = fake.requests("/core-fast/api/v1/devices/specs/FRESNEL")
    assert request.headers["authorization"].startswith("Bearer ")


def test_a_burst_of_5xx_is_survived(fake: PasqalCloudFake, sequence: str) -> None:
    fake.faults.fail(503, times=3, path="/core-fast/api/v1/batches")

    task = qpu(fake).task_start(Payload.PasqalCloud(sequence=sequence, job_runs=5))

    assert task
    assert len(fake.requests("/core-fast/api/v1/batches")) == 4


def test_a_permanent_fault_fails_cleanly_within_the_deadline(fake: PasqalCloudFake) -> None:
    fake.faults.fail(502, times=None, path="/core-fast/api/v1/devices")
    resource = qpu(fake, QRMI_PASQAL_CLOUD_RETRY_DEADLINE="1.5")

    with pytest.raises(ServiceUnavailableError, match="HTTP 502"):
        resource.status()


def test_task_usage_is_the_jobs_processing_time(fake: PasqalCloudFake, sequence: str) -> None:
    resource = qpu(fake)
    fake.seconds_per_run = 0.01
    try:
        task = resource.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=20))
        assert resource.task_wait(task, 60) == TaskStatus.Completed
    finally:
        fake.seconds_per_run = 0.0

    usage = resource.task_usage(task)

    (job_id,) = fake.batches[task]["job_ids"]
    job = fake.jobs.get(job_id)
    assert job is not None and job.started_at is not None and job.finished_at is not None
    assert usage is not None and usage.quantum_seconds is None
    assert usage.running_seconds == pytest.approx(job.finished_at - job.started_at, abs=1e-5)
    assert usage.running_seconds >= 20 * 0.01  # the fake's emulated QPU time


def test_the_fakes_job_is_a_valid_pasqal_cloud_job(fake: PasqalCloudFake, sequence: str) -> None:
    from pasqal_cloud.job import Job

    resource = qpu(fake)
    task = resource.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=10))
    assert resource.task_wait(task, 60) == TaskStatus.Completed
    (job_id,) = fake.batches[task]["job_ids"]

    job = Job(**fake.job_view(job_id), _client=None)  # the vendor client's own model

    assert job.status == "DONE" and job.project_id == fake.project_id
    assert job.start_timestamp is not None and job.end_timestamp is not None
    assert job.created_at <= job.start_timestamp <= job.end_timestamp  # ISO text, UTC
