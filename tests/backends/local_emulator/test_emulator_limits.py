"""Hostile or unlucky input: size limits before parsing, time and memory budgets, heartbeat,
unwritable state directories, retention."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from emulator_helpers import BELL, bell_sampler, primitive

from qrmi.backends.local_emulator.store import COMPLETED, StateDirectoryError, TaskStore
from qrmi.backends.local_emulator.worker import stop_worker
from qrmi.errors import ConfigError, InvalidInputError
from qrmi.models import Payload, ResourceType, TaskStatus
from qrmi.resource import QuantumResource

MakeResource = Callable[..., QuantumResource]


def wait_until(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def circuit(body: str, declarations: str = "qubit[2] q;") -> str:
    return f'OPENQASM 3.0;\ninclude "stdgates.inc";\n{declarations}\n{body}\n'


# ----- refused before parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (circuit("h q[0];", "qubit[2000000000] q;"), "2000000000 qubits but device fake_perth"),
        (circuit("x $2000000000;", ""), "2000000001 qubits"),
        (circuit("h q[0];", "qubit[2] q;\nbit[100000000] c;"), "100000000 classical bits"),
        (circuit("for int i in [0:99999999] { x q[0]; }"), "100000000 iterations"),
        (
            circuit("for int i in [0:999] { for int j in [0:999] { x q[0]; } }"),
            "1000000 iterations",
        ),
        (circuit("h q[0];", "const uint n = 9;\nqubit[n] q;"), "integer literal"),
        ("OPENQASM 2.0;\nqreg q[2000000000];\ncreg c[2];\n", "2000000000 qubits"),
    ],
)
def test_oversized_declarations_and_loops_are_refused_at_task_start(
    make_resource: MakeResource, state_dir: Path, text: str, message: str
) -> None:
    resource = make_resource()

    with pytest.raises(InvalidInputError, match=message):
        resource.task_start(primitive("sampler", [[text]]))
    assert resource.status().pending_job_count == 0


def test_an_oversized_input_is_refused_before_it_is_parsed(make_resource: MakeResource) -> None:
    resource = make_resource(QRMI_LOCAL_MAX_INPUT_BYTES="1000")
    payload = Payload.QiskitPrimitive(input="[" * 5000, program_id="sampler")

    with pytest.raises(InvalidInputError, match="QRMI_LOCAL_MAX_INPUT_BYTES"):
        resource.task_start(payload)


def test_limits_are_settings(make_resource: MakeResource) -> None:
    resource = make_resource(QRMI_LOCAL_MAX_CLBITS="1")

    with pytest.raises(InvalidInputError, match="limit of 1 "):
        resource.task_start(bell_sampler())
    with pytest.raises(ConfigError, match="QRMI_LOCAL_TASK_TIMEOUT_SECONDS"):
        make_resource(QRMI_LOCAL_TASK_TIMEOUT_SECONDS="0")


# ----- budgets --------------------------------------------------------------------------------

# 20 qubits in a dense statevector, 40 layers of 20 gates, 50 000 times: hours of simulation.
ENDLESS = circuit(
    "for int i in [1:50000] {\n" + "h q[0]; cx q[0], q[19];\n" * 400 + "}",
    "qubit[20] q;",
)


@pytest.mark.slow
def test_a_task_over_its_time_budget_is_stopped_and_the_worker_goes_on(
    make_resource: MakeResource, state_dir: Path
) -> None:
    resource = make_resource(
        QRMI_LOCAL_DEVICE="fake_sherbrooke",
        QRMI_LOCAL_TASK_TIMEOUT_SECONDS="2",
        QRMI_LOCAL_LANES="1",
    )
    endless = resource.task_start(primitive("sampler", [[ENDLESS, None, 10]]))

    assert resource.task_wait(endless, 120) == TaskStatus.Failed
    assert "time budget of 2 s" in resource.task_logs(endless)
    follower = resource.task_start(bell_sampler())
    assert resource.task_wait(follower, 120) == TaskStatus.Completed


@pytest.mark.slow
def test_a_task_over_its_memory_budget_fails_and_the_worker_goes_on(
    make_resource: MakeResource,
) -> None:
    resource = make_resource(
        QRMI_LOCAL_TASK_MEMORY_MB="64", QRMI_LOCAL_MAX_CLBITS="1000000000", QRMI_LOCAL_LANES="1"
    )
    greedy = circuit("h q[0];", "qubit[2] q;\nbit[100000000] c;")
    task_id = resource.task_start(primitive("sampler", [[greedy, None, 10]]))

    assert resource.task_wait(task_id, 120) == TaskStatus.Failed
    assert "memory budget of 64 MiB" in resource.task_logs(task_id)
    follower = resource.task_start(bell_sampler())
    assert resource.task_wait(follower, 120) == TaskStatus.Completed


@pytest.mark.slow
def test_cancelling_a_long_simulation_frees_its_lane(make_resource: MakeResource) -> None:
    resource = make_resource(QRMI_LOCAL_DEVICE="fake_sherbrooke", QRMI_LOCAL_LANES="1")
    endless = resource.task_start(primitive("sampler", [[ENDLESS, None, 10]]))
    wait_until(lambda: resource.task_status(endless) == TaskStatus.Running)

    resource.task_stop(endless)
    follower = resource.task_start(bell_sampler())

    assert resource.task_wait(follower, 120) == TaskStatus.Completed
    assert resource.task_status(endless) == TaskStatus.Cancelled


@pytest.mark.slow
def test_the_heartbeat_goes_on_during_a_long_simulation(
    make_resource: MakeResource, state_dir: Path
) -> None:
    resource = make_resource(QRMI_LOCAL_DEVICE="fake_sherbrooke", QRMI_LOCAL_LANES="1")
    endless = resource.task_start(primitive("sampler", [[ENDLESS, None, 10]]))
    wait_until(lambda: resource.task_status(endless) == TaskStatus.Running)
    store = TaskStore(state_dir)
    first = store.worker()
    assert first is not None

    wait_until(lambda: (store.worker() or first).heartbeat_at > first.heartbeat_at + 1.5)

    assert resource.task_status(endless) == TaskStatus.Running
    resource.task_stop(endless)


# ----- state directory --------------------------------------------------------------------


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield path
    finally:
        stop_worker(path / "state")
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> None:
    with open(directory / "filler", "wb") as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"\0" * 65536)
            filler.flush()


def emulator(state_dir: Path) -> QuantumResource:
    config = {"QRMI_LOCAL_STATE_DIR": str(state_dir), "QRMI_LOCAL_IDLE_SECONDS": "5"}
    return QuantumResource.from_config("local", ResourceType.LocalEmulator, config)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")
def test_a_full_disk_gives_a_typed_error_naming_the_directory(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "disk") as disk:
        resource = emulator(disk / "state")
        resource.task_wait(resource.task_start(bell_sampler()), 120)
        stop_worker(disk / "state")
        fill(disk)

        with pytest.raises(StateDirectoryError, match="disk is full") as caught:
            for _ in range(50):  # the first writes may still fit in free database pages
                resource.task_start(primitive("sampler", [[BELL, None, 5000]]))
        assert str(disk / "state") in str(caught.value)
        assert "QRMI_LOCAL_STATE_DIR" in str(caught.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")
def test_a_queued_task_on_a_full_disk_does_not_hang_the_client(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "disk") as disk:
        state_dir = disk / "state"
        store = TaskStore(state_dir)
        store.set_meta("idle_seconds", "5")
        task_id = store.add_task(
            "sampler", bell_sampler().input, device="fake_perth", noise=False, seed=None
        )
        fill(disk)
        resource = emulator(state_dir)

        with pytest.raises(StateDirectoryError, match=str(state_dir)):
            resource.task_wait(task_id, 120)


def test_a_read_only_state_directory_gives_a_typed_error(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    if os.geteuid() == 0:
        with tiny_tmpfs(tmp_path / "ro") as mount:
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
            assert_read_only_error(mount / "state")
    else:
        state_dir.chmod(0o500)
        assert_read_only_error(state_dir / "inner")


def assert_read_only_error(state_dir: Path) -> None:
    resource = emulator(state_dir)
    with pytest.raises(StateDirectoryError, match="read-only") as caught:
        resource.task_start(bell_sampler())
    assert str(state_dir) in str(caught.value)
    assert "Traceback" not in str(caught.value)


# ----- retention ----------------------------------------------------------------------------


def test_finished_tasks_past_retention_are_purged(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    ids = [
        store.add_task("sampler", "{}", device="fake_perth", noise=False, seed=None)
        for _ in range(3)
    ]
    for task_id in ids[:2]:
        store.claim_next(lane=0, worker_pid=1)
        store.finish(task_id, COMPLETED, result="{}")
    token = store.acquire_lease()
    store.release_lease(token)

    assert store.purge(3600.0) == 0
    assert store.purge(3600.0, now=time.time() + 7200.0) == 2

    assert [task.id for task in store.tasks()] == [ids[2]]
    assert store.lease(token) is None


@pytest.mark.slow
def test_the_worker_purges_by_the_retention_setting(
    make_resource: MakeResource, state_dir: Path
) -> None:
    resource = make_resource(QRMI_LOCAL_RETENTION_DAYS="0.00001")  # under a second
    old = resource.task_start(bell_sampler())
    resource.task_wait(old, 120)
    stop_worker(state_dir)
    time.sleep(1.0)  # let the task age past its retention

    resource.task_wait(resource.task_start(bell_sampler()), 120)  # a new worker purges

    assert old not in [task.id for task in TaskStore(state_dir).tasks()]


# ----- settings -------------------------------------------------------------------------------


def test_the_unprefixed_device_variable_applies(
    make_resource: MakeResource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QRMI_LOCAL_DEVICE", "fake_sherbrooke")

    assert make_resource().metadata()["device"] == "fake_sherbrooke"
    assert make_resource(QRMI_LOCAL_DEVICE="fake_kolkata").metadata()["device"] == "fake_kolkata"
    monkeypatch.setenv("local_QRMI_LOCAL_DEVICE", "fake_brisbane")
    resource = QuantumResource("local", ResourceType.LocalEmulator)
    assert resource.metadata()["device"] == "fake_brisbane"
