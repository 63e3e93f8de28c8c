"""The alice-bob-felis backend against the fake Felis API (QIR run on qiskit-aer)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from qrmi.errors import (
    ConfigError,
    EnvVarNotSetError,
    InvalidInputError,
    ResourceNotFoundError,
    ServiceUnavailableError,
)
from qrmi.models import Payload, ResourceStatusCode, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.alice_bob_felis import FelisFake

NAME = "ab_emu_40q_physical_cats"
TYPE = "alice-bob-felis"
Q1 = "%Qubit* inttoptr (i64 1 to %Qubit*)"
R1 = "%Result* inttoptr (i64 1 to %Result*)"
BELL_QIR = f"""\
%Qubit = type opaque
%Result = type opaque

define void @main() #0 {{
entry:
  call void @__quantum__qis__h__body(%Qubit* null)
  call void @__quantum__qis__cnot__body(%Qubit* null, {Q1})
  call void @__quantum__qis__mz__body(%Qubit* null, %Result* null)
  call void @__quantum__qis__mz__body({Q1}, {R1})
  ret void
}}
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[FelisFake]:
    with FelisFake(seed=4) as server:
        yield server


@pytest.fixture(autouse=True)
def clean(fake: FelisFake) -> Iterator[None]:
    yield
    fake.faults.reset()
    fake.clear()
    fake.jobs.resume()


def qpu(fake: FelisFake, name: str = NAME, **overrides: str) -> QuantumResource:
    settings = {**fake.settings(), **overrides}
    config = {key: value for key, value in settings.items() if value}
    return QuantumResource(name, TYPE, config=config, environ={})


def bell(shots: int = 300) -> Payload:
    params = json.dumps({"nbShots": shots, "averageNbPhotons": 4})
    return Payload.AliceBobFelis(human_qir=BELL_QIR, input_params=params)


def test_a_qir_job_completes_with_a_histogram(fake: FelisFake) -> None:
    resource = qpu(fake)

    task = resource.task_start(bell())

    assert resource.task_wait(task, 60) == TaskStatus.Completed
    rows = dict(line.split(",") for line in resource.task_result(task).value.split())
    assert set(rows) == {"00", "11"} and sum(map(int, rows.values())) == 300
    (created,) = fake.requests("/v1/jobs/", method="POST")
    assert created.json()["target"] == "EMU:40Q:PHYSICAL_CATS"
    assert created.headers["authorization"] == f"Basic {fake.api_key}"
    (upload,) = fake.requests(f"/v1/jobs/{task}/input", method="POST")
    assert upload.headers["content-type"].startswith("multipart/form-data")
    assert b'name="input"' in upload.body and BELL_QIR.encode() in upload.body
    assert "SUCCEEDED" in resource.task_logs(task)


def test_a_program_the_service_cannot_compile_fails_with_logs(fake: FelisFake) -> None:
    resource = qpu(fake)
    program = "call void @__quantum__qis__teleport__body(%Qubit* null)"

    task = resource.task_start(Payload.AliceBobFelis(human_qir=program, input_params="{}"))

    assert resource.task_wait(task, 60) == TaskStatus.Failed
    assert "COMPILATION_FAILED" in resource.task_logs(task)


def test_a_job_without_events_is_queued(fake: FelisFake) -> None:
    resource = qpu(fake)
    fake.jobs.hold()
    task = resource.task_start(bell())
    body = {"id": task, "events": [], "errors": []}
    fake.faults.fail(200, path=f"/v1/jobs/{task}", method="GET", body=body)

    assert resource.task_status(task) == TaskStatus.Queued


def test_stop_is_idempotent(fake: FelisFake) -> None:
    resource = qpu(fake)
    fake.jobs.hold()
    task = resource.task_start(bell())

    resource.task_stop(task)
    resource.task_stop(task)

    assert resource.task_status(task) == TaskStatus.Cancelled
    assert len(fake.requests(f"/v1/jobs/{task}", method="DELETE")) == 1


def test_a_key_that_is_not_base64_is_a_config_error_without_the_key(fake: FelisFake) -> None:
    with pytest.raises(ConfigError, match=f"{NAME}_QRMI_AB_FELIS_API_KEY") as caught:
        qpu(fake, QRMI_AB_FELIS_API_KEY="not base64 at all!")

    assert "not base64 at all" not in str(caught.value)


def test_a_key_without_user_and_password_is_a_config_error(fake: FelisFake) -> None:
    no_colon = base64.b64encode(b"justauser").decode()

    with pytest.raises(ConfigError, match="user:password"):
        qpu(fake, QRMI_AB_FELIS_API_KEY=no_colon)


def test_unprefixed_settings_are_a_fallback(fake: FelisFake) -> None:
    environ = {"QRMI_AB_FELIS_API_KEY": fake.api_key, "QRMI_AB_FELIS_BASE_ENDPOINT": fake.url}

    resource = QuantumResource(NAME, TYPE, environ=environ)

    assert resource.is_accessible()


def test_missing_settings_name_both_places(fake: FelisFake) -> None:
    with pytest.raises(EnvVarNotSetError, match=f"{NAME}_QRMI_AB_FELIS_API_KEY nor QRMI_AB"):
        QuantumResource(NAME, TYPE, environ={})


def test_invalid_input_params_are_refused(fake: FelisFake) -> None:
    payload = Payload.AliceBobFelis(human_qir=BELL_QIR, input_params="{nbShots: 3")

    with pytest.raises(InvalidInputError, match="input_params"):
        qpu(fake).task_start(payload)

    assert not fake.requests("/v1/jobs/", method="POST")


def test_an_unknown_target_lists_the_known_ones(fake: FelisFake) -> None:
    resource = qpu(fake, name="ab_qpu_1q_imaginary")

    with pytest.raises(ResourceNotFoundError, match="EMU:1Q:LESCANNE_2020"):
        resource.target()
    assert resource.status().status == ResourceStatusCode.Offline


def test_a_burst_of_5xx_is_survived(fake: FelisFake) -> None:
    fake.faults.fail(502, times=2, path="/v1/jobs/*/input")

    task = qpu(fake).task_start(bell(50))

    assert qpu(fake).task_wait(task, 60) == TaskStatus.Completed


def test_a_permanent_fault_fails_cleanly_within_the_deadline(fake: FelisFake) -> None:
    fake.faults.fail(500, times=None, path="/v1/targets/")

    with pytest.raises(ServiceUnavailableError, match="HTTP 500"):
        qpu(fake, QRMI_AB_FELIS_RETRY_DEADLINE="1.5").target()


def test_task_usage_runs_from_executing_to_the_final_event(fake: FelisFake) -> None:
    resource = qpu(fake)
    task = resource.task_start(bell())
    assert resource.task_wait(task, 60) == TaskStatus.Completed

    usage = resource.task_usage(task)

    job = fake.jobs.get(task)
    assert job is not None and job.started_at is not None and job.finished_at is not None
    assert usage is not None and usage.quantum_seconds is None
    assert usage.running_seconds == pytest.approx(job.finished_at - job.started_at, abs=1e-5)


def test_task_usage_of_a_job_cancelled_before_it_ran_is_unknown(fake: FelisFake) -> None:
    fake.jobs.hold()
    resource = qpu(fake)
    task = resource.task_start(bell())
    resource.task_stop(task)

    assert resource.task_usage(task) is None
