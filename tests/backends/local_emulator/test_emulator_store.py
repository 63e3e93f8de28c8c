"""The task store shared by processes: FIFO claims, conditional transitions, leases."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qrmi.backends.local_emulator.store import TaskStore
from qrmi.errors import TaskNotFoundError


def add(store: TaskStore, count: int) -> list[str]:
    return [
        store.add_task("sampler", "{}", device="fake_perth", noise=False, seed=None)
        for _ in range(count)
    ]


def run_in_processes(script: str, count: int) -> list[str]:
    processes = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    outputs = [process.communicate(timeout=60)[0] for process in processes]
    assert all(process.returncode == 0 for process in processes)
    return outputs


def test_claims_are_fifo(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    ids = add(store, 3)

    claimed = [store.claim_next(lane=0, worker_pid=1) for _ in range(4)]

    assert [task.id if task else None for task in claimed] == [*ids, None]


def test_concurrent_processes_add_and_claim_each_task_once(tmp_path: Path) -> None:
    adder = textwrap.dedent(
        f"""
        from qrmi.backends.local_emulator.store import TaskStore
        store = TaskStore({str(tmp_path)!r})
        for _ in range(15):
            store.add_task("sampler", "{{}}", device="fake_perth", noise=False, seed=None)
        """
    )
    run_in_processes(adder, 3)
    claimer = textwrap.dedent(
        f"""
        import os
        from qrmi.backends.local_emulator.store import TaskStore
        store = TaskStore({str(tmp_path)!r})
        while (task := store.claim_next(lane=0, worker_pid=os.getpid())) is not None:
            print(task.id)
        """
    )
    claimed = [line for out in run_in_processes(claimer, 3) for line in out.split()]

    all_ids = {task.id for task in TaskStore(tmp_path).tasks()}
    assert len(all_ids) == 45
    assert sorted(claimed) == sorted(all_ids)


def test_a_final_task_does_not_move(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    (task_id,) = add(store, 1)
    store.claim_next(lane=0, worker_pid=1)
    assert store.finish(task_id, "Completed", result="done")

    assert not store.cancel(task_id)
    assert not store.finish(task_id, "Failed", reason="late")
    assert store.get(task_id).status == "Completed"
    assert store.get(task_id).result == "done"


def test_a_cancelled_task_keeps_no_late_result(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    (task_id,) = add(store, 1)
    store.claim_next(lane=0, worker_pid=1)
    assert store.cancel(task_id)

    assert not store.finish(task_id, "Completed", result="late")
    assert store.get(task_id).result is None


def test_unknown_task_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(TaskNotFoundError, match="QRMI_LOCAL_STATE_DIR"):
        TaskStore(tmp_path).get("nope")


def test_release_is_counted_once_per_call(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    token = store.acquire_lease()

    assert store.release_lease(token) is True
    assert store.release_lease(token) is False
    lease = store.lease(token)
    assert lease is not None and lease.release_count == 2


def test_a_task_and_the_worker_settings_are_written_together(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    store.set_meta("lanes", "2")

    store.add_task(
        "sampler", "{}", device="fake_perth", noise=False, seed=None, meta={"lanes": "5"}
    )

    assert store.get_meta("lanes") == "5"
    assert store.counts() == {"Queued": 1}
