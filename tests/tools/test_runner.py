"""run_task: start, wait with adaptive polling, stop on signals, never lose a completed result."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from qrmi import Payload, QuantumResource, TaskStatus, TaskTimeoutError
from qrmi.tools.runner import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    Interrupted,
    SignalGuard,
    check_output_writable,
    resolve_resource,
    run_task,
    wait_for_final,
    write_result,
)
from tools import filevendor


@pytest.fixture
def qpu(vendor_dir: Path) -> QuantumResource:
    return QuantumResource("fv", filevendor.TYPE, config={"QRMI_TEST_STATE_DIR": str(vendor_dir)})


def script(behaviour: str, seconds: float = 0.0) -> Payload:
    params = json.dumps({"behaviour": behaviour, "seconds": seconds})
    return Payload.QiskitPrimitive(input=params, program_id="sampler")


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_completed_task_returns_its_result(qpu: QuantumResource) -> None:
    seen: list[TaskStatus] = []
    started: list[str] = []
    outcome = run_task(
        qpu, script("complete", 0.3), on_started=started.append, on_status=seen.append
    )
    assert outcome.exit_code == EXIT_OK
    assert outcome.status == TaskStatus.Completed
    assert started == [outcome.task_id]
    assert json.loads(outcome.result or "")["echo"]["behaviour"] == "complete"
    assert seen[-1] == TaskStatus.Completed
    assert len(seen) == len(set(seen)), "each status is reported once"


def test_failed_task_carries_the_reason(qpu: QuantumResource) -> None:
    outcome = run_task(qpu, script("fail"))
    assert (outcome.status, outcome.exit_code) == (TaskStatus.Failed, EXIT_FAILED)
    assert outcome.reason == filevendor.FAILURE_REASON
    assert outcome.result is None


def test_task_cancelled_elsewhere(qpu: QuantumResource, vendor_dir: Path) -> None:
    other = QuantumResource("fv", filevendor.TYPE, config={"QRMI_TEST_STATE_DIR": str(vendor_dir)})
    outcome = run_task(qpu, script("hang"), on_started=other.task_stop)
    assert (outcome.status, outcome.exit_code) == (TaskStatus.Cancelled, EXIT_CANCELLED)


def test_timeout_leaves_the_task_running(qpu: QuantumResource) -> None:
    outcome = run_task(qpu, script("hang"), timeout=0.2)
    assert outcome.timed_out
    assert outcome.exit_code == EXIT_TIMEOUT
    assert outcome.status == TaskStatus.Running
    assert qpu.task_status(outcome.task_id) == TaskStatus.Running
    qpu.task_stop(outcome.task_id)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_waiting_stops_the_task(qpu: QuantumResource, signum: int) -> None:
    def interrupt(status: TaskStatus) -> None:
        if status == TaskStatus.Running:
            os.kill(os.getpid(), signum)

    outcome = run_task(qpu, script("hang"), on_status=interrupt)
    assert outcome.interrupted_by == signum
    assert outcome.exit_code == 128 + signum
    assert outcome.status == TaskStatus.Cancelled
    assert qpu.task_status(outcome.task_id) == TaskStatus.Cancelled


def test_a_signal_after_completion_keeps_the_result(qpu: QuantumResource) -> None:
    def interrupt(status: TaskStatus) -> None:
        if status == TaskStatus.Completed:
            os.kill(os.getpid(), signal.SIGINT)

    outcome = run_task(qpu, script("complete"), on_status=interrupt)
    assert outcome.interrupted_by == signal.SIGINT
    assert qpu.task_status(outcome.task_id) == TaskStatus.Completed
    assert json.loads(qpu.task_result(outcome.task_id).value)["program_id"] == "sampler"


def test_signal_guard_holds_a_signal_until_the_critical_call_ends() -> None:
    done = []
    with SignalGuard() as guard, pytest.raises(Interrupted) as info, guard.hold():
        os.kill(os.getpid(), signal.SIGTERM)
        done.append("the call finished")
    assert done == ["the call finished"]
    assert info.value.exit_code == 143


def test_repeated_sigterm_during_the_critical_call_is_held() -> None:
    done = []
    with SignalGuard() as guard, pytest.raises(Interrupted) as info, guard.hold():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # Slurm: once through srun, once from slurmstepd
        done.append("the call finished")
    assert done == ["the call finished"]
    assert info.value.exit_code == 143


def test_signal_guard_restores_previous_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with SignalGuard():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_wait_polls_fast_first_then_backs_off(qpu: QuantumResource) -> None:
    task_id = qpu.task_start(script("hang"))
    fake = FakeTime()
    with pytest.raises(TaskTimeoutError, match="still Running after 30 s; it keeps running"):
        wait_for_final(qpu, task_id, timeout=30, clock=fake.clock, sleep=fake.sleep)
    assert fake.sleeps[0] <= 0.01
    assert max(fake.sleeps) <= 1.0
    assert fake.sleeps[:-1] == sorted(fake.sleeps[:-1])
    qpu.task_stop(task_id)


def test_resolve_from_the_job_environment(config_file: Path) -> None:
    env = {
        "QRMI_JOB_QPU_RESOURCES": "fv,other",
        "QRMI_JOB_QPU_TYPES": f"{filevendor.TYPE},local-emulator",
    }
    rdef, in_job = resolve_resource("fv", environ=env)
    assert (rdef.name, rdef.resource_type, in_job) == ("fv", filevendor.TYPE, True)
    with pytest.raises(ValueError, match=r"not one of this job's resources \(fv, other\)"):
        resolve_resource("ibm_fez", environ=env, job_only=True)
    rdef, in_job = resolve_resource("fv", config_path=config_file, environ=env)
    assert rdef.environment["QRMI_TEST_STATE_DIR"]
    assert not in_job


def test_resolve_unknown_resource_lists_the_configured_ones(config_file: Path) -> None:
    with pytest.raises(ValueError, match="configured resources are: broken, fv"):
        resolve_resource("nope", config_path=config_file)


def test_output_checks_happen_before_any_task(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        check_output_writable(tmp_path / "missing" / "out.json")
    with pytest.raises(ValueError, match="is a directory"):
        check_output_writable(tmp_path)
    check_output_writable(tmp_path / "out.json")


def test_write_result_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    write_result('{"a": 1}', target)
    assert target.read_text() == '{"a": 1}'
    assert list(tmp_path.iterdir()) == [target]


class StuckCancelBackend(filevendor.FileVendorBackend):
    """A vendor whose cancel request hangs; the user presses Ctrl-C again meanwhile."""

    def cancel(self, task_id: str) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)  # the signal handler interrupts this sleep
        raise AssertionError("the second Ctrl-C should have interrupted the cancel request")


def test_a_second_signal_during_the_cancel_request_stops_waiting(vendor_dir: Path) -> None:
    from qrmi import registry

    registry.register("test-stuck-cancel", StuckCancelBackend, replace=True)
    qpu = QuantumResource(
        "fv", "test-stuck-cancel", config={"QRMI_TEST_STATE_DIR": str(vendor_dir)}
    )

    def interrupt(status: TaskStatus) -> None:
        if status == TaskStatus.Running:
            os.kill(os.getpid(), signal.SIGINT)

    outcome = run_task(qpu, script("hang"), on_status=interrupt)
    assert outcome.interrupted_by == signal.SIGINT
    assert outcome.status is None
    assert qpu.task_status(outcome.task_id) == TaskStatus.Running


class SecondSigtermDuringCancelBackend(filevendor.FileVendorBackend):
    """Slurm's second SIGTERM arrives while the cancel request is on its way."""

    def cancel(self, task_id: str) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        super().cancel(task_id)


def test_a_repeated_sigterm_does_not_abort_the_cancel_request(vendor_dir: Path) -> None:
    from qrmi import registry

    registry.register("test-second-sigterm", SecondSigtermDuringCancelBackend, replace=True)
    qpu = QuantumResource(
        "fv", "test-second-sigterm", config={"QRMI_TEST_STATE_DIR": str(vendor_dir)}
    )

    def interrupt(status: TaskStatus) -> None:
        if status == TaskStatus.Running:
            os.kill(os.getpid(), signal.SIGTERM)

    outcome = run_task(qpu, script("hang"), on_status=interrupt)
    assert outcome.interrupted_by == signal.SIGTERM
    assert outcome.status == TaskStatus.Cancelled
    assert qpu.task_status(outcome.task_id) == TaskStatus.Cancelled
