"""The pasqal-local backend against the fake Warden, with real MUNGE credentials."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import pytest

from qrmi.errors import (
    AuthenticationFailedError,
    ConfigError,
    EnvVarNotSetError,
    ServiceUnavailableError,
)
from qrmi.models import Payload, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon, munge_available
from qrmi.testing.pasqal_warden import PasqalWardenFake

pytestmark = pytest.mark.skipif(not munge_available(), reason="munged is not installed")

NAME = "fresnel_onprem"
TYPE = "pasqal-local"


@pytest.fixture(scope="module")
def fake() -> Iterator[PasqalWardenFake]:
    with PasqalWardenFake(seed=5) as server:
        yield server


@pytest.fixture(autouse=True)
def clean(fake: PasqalWardenFake) -> Iterator[None]:
    yield
    fake.faults.reset()
    fake.clear()
    fake.allowed_uids = None


@pytest.fixture(scope="module")
def sequence() -> str:
    from pulser.devices import AnalogDevice
    from pulser.pulse import Pulse
    from pulser.sequence import Sequence

    register = AnalogDevice.pre_calibrated_layouts[0].define_register(0, 1)
    seq = Sequence(register, AnalogDevice)
    seq.declare_channel("rydberg", "rydberg_global")
    seq.add(Pulse.ConstantPulse(300, 2.0, 0.0, 0.0), "rydberg")
    seq.measure("ground-rydberg")
    return str(seq.to_abstract_repr())


def qpu(fake: PasqalWardenFake, **overrides: str) -> QuantumResource:
    settings = {**fake.settings(), **overrides}
    config = {key: value for key, value in settings.items() if value}
    return QuantumResource(NAME, TYPE, config=config, environ={})


def test_a_pulser_sequence_runs_in_a_session(fake: PasqalWardenFake, sequence: str) -> None:
    session = qpu(fake).acquire()
    resource = qpu(fake, QRMI_JOB_ACQUISITION_TOKEN=session)

    task = resource.task_start(Payload.PasqalCloud(sequence=sequence, job_runs=80))

    assert resource.task_wait(task, 60) == TaskStatus.Completed
    counter = json.loads(resource.task_result(task).value)["counter"]
    assert sum(counter.values()) == 80
    (opened,) = fake.requests("/sessions", method="POST")
    assert opened.json() == {"user_id": str(os.getuid()), "slurm_job_id": "1234"}
    (created,) = fake.requests("/jobs", method="POST")
    assert created.headers["x-warden-session"] == session
    assert created.headers["x-munge-cred"].startswith("MUNGE:")
    assert created.json() == {"sequence": sequence, "shots": 80}
    resource.release(session)


def test_release_closes_the_session_it_is_given(fake: PasqalWardenFake) -> None:
    resource = qpu(fake)
    first, second = resource.acquire(), resource.acquire()

    resource.release(first)

    assert fake.sessions[first]["open"] is False
    assert fake.sessions[second]["open"] is True
    resource.release(second)


def test_a_credential_from_another_munge_realm_is_refused(fake: PasqalWardenFake) -> None:
    with MungeDaemon() as stranger:
        resource = qpu(fake, QRMI_MUNGE_SOCKET=stranger.socket)

        with pytest.raises(AuthenticationFailedError):
            resource.acquire()

    refused = fake.requests("/sessions", method="POST")
    assert refused and all(request.status == 401 for request in refused)


def test_a_uid_outside_the_allow_list_is_refused(fake: PasqalWardenFake) -> None:
    fake.allowed_uids = {os.getuid() + 1}

    with pytest.raises(AuthenticationFailedError, match="allow"):
        qpu(fake).acquire()


def test_no_munged_is_an_authentication_error_naming_the_socket_setting(
    fake: PasqalWardenFake,
) -> None:
    resource = qpu(fake, QRMI_MUNGE_SOCKET="/nonexistent/munge.socket")

    with pytest.raises(AuthenticationFailedError, match="QRMI_MUNGE_SOCKET"):
        resource.acquire()


@pytest.mark.parametrize(
    ("overrides", "error", "named"),
    [
        ({"QRMI_JOB_ID": ""}, EnvVarNotSetError, "QRMI_JOB_ID"),
        ({"QRMI_JOB_UID": ""}, EnvVarNotSetError, "QRMI_JOB_UID"),
        ({"QRMI_JOB_UID": "alice"}, ConfigError, "QRMI_JOB_UID"),
        ({"QRMI_JOB_ID": "12; rm -rf"}, ConfigError, "QRMI_JOB_ID"),
    ],
)
def test_job_identity_must_be_set_and_valid(
    fake: PasqalWardenFake, overrides: dict[str, str], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        qpu(fake, **overrides).acquire()


def test_tasks_need_a_session(fake: PasqalWardenFake, sequence: str) -> None:
    with pytest.raises(EnvVarNotSetError, match=f"{NAME}_QRMI_JOB_ACQUISITION_TOKEN"):
        qpu(fake).task_start(Payload.PasqalCloud(sequence=sequence, job_runs=5))


def test_the_warden_url_is_required_and_the_old_name_still_works(
    fake: PasqalWardenFake, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(EnvVarNotSetError, match=f"{NAME}_QRMI_WARDEN_URL"):
        qpu(fake, QRMI_WARDEN_URL="")

    with caplog.at_level(logging.WARNING, logger="qrmi"):
        legacy = qpu(fake, QRMI_WARDEN_URL="", QRMI_URL=fake.url)

    assert legacy.is_accessible()
    assert any("deprecated" in record.getMessage() for record in caplog.records)


def test_target_has_the_cloud_shape(fake: PasqalWardenFake) -> None:
    (entry,) = qpu(fake).target().json()

    assert entry["device_type"] == json.loads(entry["specs"])["name"]


def test_a_burst_of_5xx_is_survived(fake: PasqalWardenFake) -> None:
    fake.faults.fail(500, times=3, path="/sessions", method="POST")

    session = qpu(fake).acquire()

    assert session in fake.sessions
    assert len(fake.requests("/sessions", method="POST")) == 4


def test_a_permanent_fault_fails_cleanly_within_the_deadline(fake: PasqalWardenFake) -> None:
    fake.faults.fail(503, times=None, path="/sessions", method="POST")

    with pytest.raises(ServiceUnavailableError, match="HTTP 503"):
        qpu(fake, QRMI_WARDEN_RETRY_DEADLINE="1.5").acquire()
