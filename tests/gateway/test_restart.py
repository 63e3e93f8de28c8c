"""A gateway restarted mid-job loses nothing; clients retry across the restart."""

from __future__ import annotations

import threading

import pytest

from gateway.conftest import bell
from qrmi.errors import ServiceUnavailableError, TaskNotFoundError
from qrmi.gateway.testing import LocalGateway
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource


@pytest.fixture(params=["sqlite", "postgresql"])
def gateway_store(request: pytest.FixtureRequest) -> str:
    """Each test here runs on both stores."""
    return str(request.param)


def test_a_restart_mid_task_loses_nothing(gateway: LocalGateway) -> None:
    _, mine = gateway.open_job("301", qpus=["emu"])
    _, theirs = gateway.open_job("302", qpus=["emu"])
    qpu = QuantumResource("emu", "local-emulator", environ=mine)
    task = qpu.task_start(bell(seconds=2))

    gateway.restart()

    assert qpu.task_wait(task, 60) == TaskStatus.Completed
    assert qpu.task_result(task).json()["__type__"] == "PrimitiveResult"
    with pytest.raises(TaskNotFoundError):
        QuantumResource("emu", "local-emulator", environ=theirs).task_result(task)
    assert gateway.service is not None
    assert gateway.service.finish_job("301").released == ["emu"]


def test_a_call_waits_for_a_gateway_coming_back(gateway: LocalGateway) -> None:
    _, variables = gateway.open_job("303", qpus=["emu"])
    qpu = QuantumResource("emu", "local-emulator", environ=variables)
    gateway.stop()
    comeback = threading.Timer(0.5, gateway.start)
    comeback.start()
    try:
        assert qpu.is_accessible() is True
    finally:
        comeback.join()


def test_a_gateway_that_stays_down_gives_a_clear_error(gateway: LocalGateway) -> None:
    _, variables = gateway.open_job("304", qpus=["emu"])
    variables["emu_QRMI_GATEWAY_RETRY_SECONDS"] = "0.5"
    qpu = QuantumResource("emu", "local-emulator", environ=variables)
    gateway.stop()

    with pytest.raises(ServiceUnavailableError, match="QRMI gateway GET .* failed after"):
        qpu.status()
