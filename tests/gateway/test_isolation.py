"""What a job token allows: its own QPUs and its own tasks, nothing else; admin operations."""

from __future__ import annotations

import httpx
import pytest

from gateway.conftest import MakeGateway, bell
from qrmi.errors import (
    AuthenticationFailedError,
    ServiceError,
    ServiceUnavailableError,
    TaskNotFoundError,
)
from qrmi.gateway.auth import hash_token, new_token
from qrmi.gateway.client import admin_request
from qrmi.gateway.testing import LocalGateway
from qrmi.models import ResourceStatusCode, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon


def _qpu(variables: dict[str, str], name: str = "emu") -> QuantumResource:
    return QuantumResource(name, "local-emulator", environ=variables)


@pytest.fixture
def two_jobs(gateway: LocalGateway) -> tuple[QuantumResource, QuantumResource]:
    _, first = gateway.open_job("201", uid=1000, qpus=["emu"])
    _, second = gateway.open_job("202", uid=1001, qpus=["emu"])
    return _qpu(first), _qpu(second)


@pytest.mark.parametrize("call", ["task_status", "task_result", "task_logs", "task_stop"])
def test_another_jobs_task_is_not_found(
    two_jobs: tuple[QuantumResource, QuantumResource], call: str
) -> None:
    owner, other = two_jobs
    task = owner.task_start(bell(seconds=30))
    try:
        with pytest.raises(TaskNotFoundError, match=task):
            getattr(other, call)(task)
        assert owner.task_status(task) in (TaskStatus.Queued, TaskStatus.Running)
    finally:
        owner.task_stop(task)


def test_both_jobs_share_one_emulator_device_and_its_queue(
    two_jobs: tuple[QuantumResource, QuantumResource],
) -> None:
    first, second = two_jobs
    blocker = first.task_start(bell(seconds=30))
    queued = second.task_start(bell())
    try:
        assert second.task_status(queued) == TaskStatus.Queued
        assert (first.status().pending_job_count or 0) >= 1
    finally:
        first.task_stop(blocker)
    assert second.task_wait(queued, 60) == TaskStatus.Completed


def test_a_qpu_the_job_does_not_hold_is_403(gateway: LocalGateway) -> None:
    _, variables = gateway.open_job("203", qpus=["emu"])
    variables["emu2_QRMI_GATEWAY_TOKEN"] = variables["emu_QRMI_GATEWAY_TOKEN"]

    with pytest.raises(ServiceError, match="does not hold QPU 'emu2'") as caught:
        _qpu(variables, "emu2").status()
    assert caught.value.status_code == 403


def test_a_forged_token_is_401(gateway: LocalGateway) -> None:
    variables = {"QRMI_GATEWAY_URL": gateway.url, "emu_QRMI_GATEWAY_TOKEN": new_token()}

    with pytest.raises(AuthenticationFailedError, match="not valid"):
        _qpu(variables).status()


def test_an_expired_token_is_401(make_gateway: MakeGateway) -> None:
    gateway = make_gateway(token_grace_seconds=0)
    _, variables = gateway.open_job("204", qpus=["emu"], time_limit=1)
    assert gateway.service is not None
    gateway.service.clock = lambda: 4e9  # long after the job's limit

    with pytest.raises(AuthenticationFailedError, match="expired: job 204"):
        _qpu(variables).status()


def test_the_sweep_ends_a_job_whose_limit_passed(make_gateway: MakeGateway) -> None:
    gateway = make_gateway(token_grace_seconds=0)
    _, variables = gateway.open_job("205", qpus=["emu"], time_limit=1)
    task = _qpu(variables).task_start(bell(seconds=30))
    assert gateway.service is not None
    gateway.service.clock = lambda: 4e9

    assert gateway.service.reap_expired() == ["205"]

    job = gateway.service.store.job("205")
    assert job is not None and job.state == "finished"
    assert gateway.service.store.leases("205", held_only=True) == []
    assert gateway.service.shared("emu").task_status(task) == TaskStatus.Cancelled


def test_admin_calls_need_root_or_an_admin_token(
    make_gateway: MakeGateway, munge: MungeDaemon
) -> None:
    admin_token = new_token()
    gateway = make_gateway(admin_hashes=frozenset({hash_token(admin_token)}))
    job_token, variables = gateway.open_job("206", qpus=["emu"])
    task = _qpu(variables).task_start(bell(seconds=30))

    listed = admin_request("GET", gateway.url, "/v1/admin/tasks", admin_token=admin_token)
    by_root = admin_request("GET", gateway.url, "/v1/admin/jobs", munge_socket=munge.socket)
    as_job = httpx.get(
        f"{gateway.url}/v1/admin/tasks", headers={"Authorization": f"Bearer {job_token}"}
    )

    assert [(t["task_id"], t["job_id"]) for t in listed] == [(task, "206")]
    assert [job["job_id"] for job in by_root] == ["206"]
    assert as_job.status_code == 401
    stop = f"/v1/admin/qpus/emu/tasks/{task}/stop"
    admin_request("POST", gateway.url, stop, admin_token=admin_token)
    assert _qpu(variables).task_wait(task, 60) == TaskStatus.Cancelled


def test_a_paused_qpu_refuses_new_tasks(make_gateway: MakeGateway, munge: MungeDaemon) -> None:
    gateway = make_gateway()
    _, variables = gateway.open_job("207", qpus=["emu"])
    qpu = _qpu(variables)
    pause = {"reason": "calibration until 14:00"}

    admin_request(
        "POST", gateway.url, "/v1/admin/qpus/emu/pause", json=pause, munge_socket=munge.socket
    )

    assert qpu.status().status == ResourceStatusCode.Paused
    assert qpu.is_accessible() is False
    with pytest.raises(ServiceError, match="paused by the administrator: calibration"):
        qpu.task_start(bell())
    admin_request("POST", gateway.url, "/v1/admin/qpus/emu/resume", munge_socket=munge.socket)
    assert qpu.is_accessible() is True


def test_a_start_cut_short_is_completed_by_the_helpers_retry(gateway: LocalGateway) -> None:
    """The gateway died after acquiring the first of two QPUs: the retry acquires the rest."""
    assert gateway.service is not None
    store = gateway.service.store
    store.add_job("208", 1000, hash_token(new_token()), expires=None)
    store.add_lease("208", "emu", gateway.service.shared("emu").acquire(), main=True)

    _, variables = gateway.open_job("208", uid=1000, qpus=["emu", "emu2"])

    assert variables["QRMI_JOB_QPU_RESOURCES"] == "emu,emu2"
    assert _qpu(variables, "emu2").is_accessible()


def test_a_job_does_not_start_on_a_paused_qpu(gateway: LocalGateway) -> None:
    assert gateway.service is not None
    gateway.service.pause("emu2", "calibration")

    with pytest.raises(ServiceUnavailableError, match="'emu2' .* not accessible .*calibration"):
        gateway.open_job("209", qpus=["emu", "emu2"])

    assert gateway.service.store.job("209") is None
