"""The iqm-server backend against the fake IQM Server (circuits run on qiskit-aer)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from qrmi.errors import (
    AuthenticationFailedError,
    EnvVarNotSetError,
    InvalidInputError,
    ServiceUnavailableError,
    UnsupportedPayloadError,
)
from qrmi.models import Payload, ResourceStatusCode, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.iqm_server import IQMServerFake

TYPE = "iqm-server"
GHZ = {
    "name": "ghz3",
    "instructions": [
        {"name": "prx", "locus": ["QB1"], "args": {"angle_t": 0.25, "phase_t": 0.25}},
        {"name": "prx", "locus": ["QB2"], "args": {"angle_t": 0.25, "phase_t": 0.25}},
        {"name": "cz", "locus": ["QB1", "QB2"], "args": {}},
        {"name": "prx", "locus": ["QB2"], "args": {"angle_t": 0.25, "phase_t": 0.75}},
        {"name": "prx", "locus": ["QB3"], "args": {"angle_t": 0.25, "phase_t": 0.25}},
        {"name": "cz", "locus": ["QB2", "QB3"], "args": {}},
        {"name": "prx", "locus": ["QB3"], "args": {"angle_t": 0.25, "phase_t": 0.75}},
        {"name": "measure", "locus": ["QB1"], "args": {"key": "a"}},
        {"name": "measure", "locus": ["QB2", "QB3"], "args": {"key": "bc"}},
    ],
}


@pytest.fixture(scope="module")
def fake() -> Iterator[IQMServerFake]:
    with IQMServerFake(seed=2) as server:
        yield server


@pytest.fixture(autouse=True)
def clean(fake: IQMServerFake) -> Iterator[None]:
    yield
    fake.faults.reset()
    fake.clear()
    fake.static_architecture = True


def qpu(fake: IQMServerFake, suffix: str = "", **overrides: str) -> QuantumResource:
    settings = {**fake.settings(), **overrides}
    config = {key: value for key, value in settings.items() if value}
    return QuantumResource(fake.resource_name + suffix, TYPE, config=config, environ={})


def circuit_payload(
    circuits: list[dict[str, object]], shots: int = 200, **extra: object
) -> Payload:
    request = json.dumps({"circuits": circuits, "shots": shots})
    return Payload.IQMServer(iqmjson=request, job_type="circuit", **extra)  # type: ignore[arg-type]


def test_a_circuit_job_completes_with_counts(fake: IQMServerFake) -> None:
    resource = qpu(fake)

    task = resource.task_start(circuit_payload([GHZ], use_timeslot=True, tag="ghz"))

    assert resource.task_wait(task, 60) == TaskStatus.Completed
    result = json.loads(resource.task_result(task).value)
    (counts,) = result["measurement_counts"]
    assert counts["measurement_keys"] == ["a", "bc"]
    assert set(counts["counts"]) == {"000", "111"} and sum(counts["counts"].values()) == 200
    assert len(result["measurements"][0]["bc"]) == 200
    (submitted,) = fake.requests("/api/v1/jobs/garnet:mock/circuit", method="POST")
    assert submitted.params == {"use_timeslot": "true", "tag": "ghz"}
    assert submitted.headers["authorization"] == f"Bearer {fake.token}"
    polls = fake.requests(f"/api/v1/jobs/{task}", method="GET")
    assert polls and all("wait_until_terminal" not in poll.params for poll in polls)


def test_logs_show_the_timeline(fake: IQMServerFake) -> None:
    resource = qpu(fake)
    task = resource.task_start(circuit_payload([GHZ]))
    resource.task_wait(task, 60)

    logs = resource.task_logs(task)

    assert logs.startswith("Timeline   :") and "completed" in logs and "Messages   : (none)" in logs


def test_resource_id_names_the_calibration_set_and_settings_use_the_name(
    fake: IQMServerFake,
) -> None:
    environ = {
        f"{fake.resource_name}_QRMI_IQM_ISA_ENDPOINT": fake.url,
        f"{fake.resource_name}_QRMI_IQM_ISA_TOKEN": fake.token,
    }
    resource = QuantumResource(
        f"{fake.resource_name},{fake.calibration_set_id}", TYPE, environ=environ
    )

    target = resource.target().json()

    assert target["dynamic_quantum_architecture"]["qubits"][0] == "QB1"
    assert target["calibration_set"]["calibration_set_id"] == fake.calibration_set_id
    assert fake.requests(f"/api/v1/calibration-sets/garnet:mock/{fake.calibration_set_id}")
    assert resource.metadata()["backend_name"] == "garnet:mock"


def test_a_missing_static_architecture_is_null(fake: IQMServerFake) -> None:
    fake.static_architecture = False

    assert qpu(fake).target().json()["static_quantum_architecture"] is None


def test_status_reports_health(fake: IQMServerFake) -> None:
    resource = qpu(fake)
    assert resource.status().status == ResourceStatusCode.Online

    fake.healthy = False
    try:
        assert resource.status().status == ResourceStatusCode.Offline
    finally:
        fake.healthy = True


@pytest.mark.parametrize(
    ("payload", "error", "match"),
    [
        (circuit_payload([GHZ], tag="x" * 51), InvalidInputError, "limit is 50"),
        (Payload.IQMServer(iqmjson="{not json", job_type="circuit"), InvalidInputError, "JSON"),
        (Payload.IQMServer(iqmjson="{}", job_type="pulse"), InvalidInputError, "job_type"),
        (Payload.PasqalCloud(sequence="{}", job_runs=1), UnsupportedPayloadError, "supported"),
    ],
)
def test_bad_payloads_are_refused_before_any_request(
    fake: IQMServerFake, payload: Payload, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        qpu(fake).task_start(payload)

    assert not fake.requests("/api/v1/jobs/*", method="POST")


def test_a_circuit_on_unknown_qubits_is_rejected_by_the_server(fake: IQMServerFake) -> None:
    bad = {
        "name": "bad",
        "instructions": [{"name": "measure", "locus": ["QB99"], "args": {"key": "m"}}],
    }

    with pytest.raises(InvalidInputError, match="QB99"):
        qpu(fake).task_start(circuit_payload([bad]))


def test_missing_token_names_the_setting(fake: IQMServerFake) -> None:
    with pytest.raises(EnvVarNotSetError, match="garnet_mock_QRMI_IQM_ISA_TOKEN"):
        qpu(fake, ",default", QRMI_IQM_ISA_TOKEN="")


def test_a_wrong_token_is_an_authentication_error(fake: IQMServerFake) -> None:
    with pytest.raises(AuthenticationFailedError):
        qpu(fake, QRMI_IQM_ISA_TOKEN="wrong").status()


def test_a_burst_of_5xx_is_survived(fake: IQMServerFake) -> None:
    fake.faults.fail(503, times=3, path="/api/v1/jobs/garnet:mock/circuit")

    task = qpu(fake).task_start(circuit_payload([GHZ]))

    assert task and len(fake.requests("/api/v1/jobs/garnet:mock/circuit")) == 4


def test_a_permanent_fault_fails_cleanly_within_the_deadline(fake: IQMServerFake) -> None:
    fake.faults.drop_connections(times=None, path="/api/v1/quantum-computers/*")

    with pytest.raises(ServiceUnavailableError, match="network"):
        qpu(fake, QRMI_IQM_RETRY_DEADLINE="1.5").status()


def test_task_usage_is_the_execution_time_on_the_timeline(fake: IQMServerFake) -> None:
    resource = qpu(fake)
    task = resource.task_start(circuit_payload([GHZ]))
    assert resource.task_wait(task, 60) == TaskStatus.Completed

    usage = resource.task_usage(task)

    job = fake.jobs.get(task)
    assert job is not None and job.started_at is not None and job.finished_at is not None
    assert usage is not None and usage.quantum_seconds is None
    assert usage.running_seconds == pytest.approx(job.finished_at - job.started_at, abs=1e-5)
