"""The base class owns payload checks, state mapping, readiness, stops and waiting."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from qrmi import (
    Payload,
    ResourceStatus,
    ResourceStatusCode,
    Settings,
    TaskNotReadyError,
    TaskStatus,
    TaskTimeoutError,
    UnsupportedPayloadError,
)
from qrmi.backends.base import Backend, poll_intervals
from qrmi.models import ResourceType


class FakeTime:
    """A clock that only moves when something sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedBackend(Backend):
    """A vendor whose tasks walk through a scripted list of vendor states."""

    RESOURCE_TYPE = ResourceType.LocalEmulator
    PAYLOADS = (Payload.QiskitPrimitive,)
    STATE_MAP = {"Q": TaskStatus.Queued, "R": TaskStatus.Running, "DONE": TaskStatus.Completed}

    def __init__(self, states: list[str], time: FakeTime) -> None:
        super().__init__(
            "scripted", Settings("scripted", {}, {}), clock=time.clock, sleep=time.sleep
        )
        self.states = states
        self.cancelled: list[str] = []

    def fetch_status(self) -> ResourceStatus:
        return ResourceStatus(ResourceStatusCode.Online)

    def submit(self, payload: Payload) -> str:
        return "t1"

    def cancel(self, task_id: str) -> None:
        self.cancelled.append(task_id)

    def fetch_state(self, task_id: str) -> str:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def fetch_result(self, task_id: str) -> str:
        return '{"ok": true}'

    def fetch_target(self) -> str:
        return "{}"


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


def sampler_payload() -> Payload:
    return Payload.QiskitPrimitive(input="{}", program_id="sampler")


def test_wrong_payload_variant_names_accepted_ones(time: FakeTime) -> None:
    backend = ScriptedBackend(["Q"], time)
    with pytest.raises(UnsupportedPayloadError) as info:
        backend.task_start(Payload.PasqalCloud(sequence="{}", job_runs=1))
    assert "takes Payload.QiskitPrimitive, got PasqalCloud" in str(info.value)


def test_unknown_vendor_state_is_not_final(
    time: FakeTime, caplog: pytest.LogCaptureFixture
) -> None:
    backend = ScriptedBackend(["WEIRD"], time)
    with caplog.at_level(logging.WARNING, logger="qrmi"):
        assert backend.task_status("t1") == TaskStatus.Running
    assert "unknown state 'WEIRD'" in caplog.text


def test_result_before_completion_is_refused(time: FakeTime) -> None:
    backend = ScriptedBackend(["R"], time)
    with pytest.raises(TaskNotReadyError, match="task t1: the task is Running; wait until"):
        backend.task_result("t1")


def test_result_after_completion(time: FakeTime) -> None:
    assert ScriptedBackend(["DONE"], time).task_result("t1").value == '{"ok": true}'


def test_stop_of_a_final_task_does_nothing(time: FakeTime) -> None:
    backend = ScriptedBackend(["DONE"], time)
    backend.task_stop("t1")
    assert backend.cancelled == []
    running = ScriptedBackend(["R"], time)
    running.task_stop("t1")
    assert running.cancelled == ["t1"]


def test_wait_polls_fast_then_backs_off(time: FakeTime) -> None:
    backend = ScriptedBackend(["Q"] * 20 + ["DONE"], time)
    assert backend.wait("t1") == TaskStatus.Completed
    assert time.sleeps[0] <= 0.01
    assert max(time.sleeps) <= 1.0
    assert time.sleeps == sorted(time.sleeps)


def test_wait_deadline(time: FakeTime) -> None:
    backend = ScriptedBackend(["R"], time)
    with pytest.raises(TaskTimeoutError, match="still Running after 5 s; it keeps running"):
        backend.wait("t1", timeout=5)
    assert time.now == pytest.approx(5.0)


def test_poll_intervals_cap() -> None:
    gen: Iterator[float] = poll_intervals(0.01, 0.1)
    values = [next(gen) for _ in range(20)]
    assert values[0] == 0.01
    assert values[-1] == 0.1
