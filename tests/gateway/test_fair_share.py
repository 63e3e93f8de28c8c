"""Fair sharing: tasks beyond a QPU's gateway capacity wait in the gateway's queue and take
turns between jobs, so a small job is not stuck behind another job's flood."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.conftest import bell, emulator_config
from qrmi.backends.local_emulator.store import TaskStore
from qrmi.backends.local_emulator.worker import stop_worker
from qrmi.errors import TaskNotFoundError, TaskNotReadyError
from qrmi.gateway.dispatch import CAPACITY_KEY, FAIR_SHARE_KEY, is_gateway_task
from qrmi.gateway.store import Store
from qrmi.gateway.testing import LocalGateway
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource

# ----- the queue's order, in the store ---------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "gateway.db")
    for job in ("A", "B", "C"):
        opened.add_job(job, 1000, f"hash-{job}", None)
    try:
        yield opened
    finally:
        opened.close()


def _enqueue(store: Store, job: str, count: int, weight: float = 1.0) -> None:
    for n in range(count):
        store.enqueue("q", f"{job}{n}", job, "{}", weight, 0.0)


def _claims(store: Store, count: int, *, fair: bool = True) -> str:
    order = ""
    for _ in range(count):
        entry = store.claim_next("q", fair=fair)
        assert entry is not None
        order += entry.job_id
    return order


def test_jobs_take_turns_whatever_they_queued(store: Store) -> None:
    _enqueue(store, "A", 20)
    _enqueue(store, "B", 3)
    assert _claims(store, 8) == "ABABABAA"


def test_first_come_first_served_without_fair_sharing(store: Store) -> None:
    _enqueue(store, "A", 5)
    _enqueue(store, "B", 2)
    assert _claims(store, 7, fair=False) == "AAAAABB"


def test_weights_give_jobs_turns_in_proportion(store: Store) -> None:
    _enqueue(store, "A", 10, weight=1.0)
    _enqueue(store, "B", 10, weight=2.0)
    assert _claims(store, 9) == "ABBABBABB"


def test_a_job_arriving_late_gets_its_turn_but_no_catch_up_burst(store: Store) -> None:
    _enqueue(store, "A", 20)
    assert _claims(store, 6) == "AAAAAA"
    _enqueue(store, "B", 10)
    assert _claims(store, 6) == "BABABA"


def test_tasks_of_an_ended_job_are_never_claimed(store: Store) -> None:
    _enqueue(store, "A", 2)
    store.set_state("A", "finished")
    assert store.claim_next("q") is None


# ----- through the gateway ---------------------------------------------------------------------


@pytest.fixture
def fair_gateway(tmp_path: Path) -> Iterator[Any]:
    """Gateways whose QPU emu (an emulator of its own, one lane) takes ``capacity`` tasks at
    once from the gateway."""
    started: list[LocalGateway] = []
    emulators = tmp_path / "emulators"

    def make(capacity: int = 1, fair: bool = True) -> LocalGateway:
        config = emulator_config(emulators, lanes=1)
        environment = config["resources"][0]["environment"]
        environment[CAPACITY_KEY] = str(capacity)
        environment[FAIR_SHARE_KEY] = "true" if fair else "false"
        gateway = LocalGateway(config, tmp_path / f"gw{len(started)}")
        started.append(gateway.start())
        return gateway

    try:
        yield make
    finally:
        for gateway in started:
            gateway.stop()
        for name in ("emu", "emu2"):
            stop_worker(emulators / name)


def _qpu(gateway: LocalGateway, job_id: str) -> QuantumResource:
    _, variables = gateway.open_job(job_id, qpus=["emu"])
    return QuantumResource("emu", "local-emulator", environ=variables)


def _waiting(gateway: LocalGateway, tasks: list[str]) -> int:
    assert gateway.service is not None
    store = gateway.service.store
    entries = [store.queued_task("emu", task) for task in tasks]
    return sum(1 for entry in entries if entry is not None and entry.state == "queued")


def test_within_capacity_a_task_goes_straight_to_the_vendor(fair_gateway: Any) -> None:
    gateway = fair_gateway(capacity=2)
    qpu = _qpu(gateway, "500")
    task = qpu.task_start(bell())
    assert not is_gateway_task(task)
    assert qpu.task_wait(task, 60) == TaskStatus.Completed


@pytest.mark.parametrize("fair", [True, False])
def test_a_small_job_is_not_stuck_behind_a_flood(fair_gateway: Any, fair: bool) -> None:
    gateway = fair_gateway(capacity=1, fair=fair)
    flood, small = _qpu(gateway, "501"), _qpu(gateway, "502")
    flooded = [flood.task_start(bell(seconds=0.2)) for _ in range(12)]
    mine = [small.task_start(bell(seconds=0.2)) for _ in range(3)]

    assert all(is_gateway_task(task) for task in flooded[1:] + mine)
    assert [small.task_wait(task, 120) for task in mine] == [TaskStatus.Completed] * 3
    still_waiting = _waiting(gateway, flooded)

    if fair:  # turns: the flood sent at most 4 of its 12 before the small job's 3 were done
        assert still_waiting >= 7
    else:  # first come, first served: the small job waited for the whole flood
        assert still_waiting == 0
    for task in flooded:
        assert flood.task_wait(task, 120) == TaskStatus.Completed


def test_a_held_task_is_queued_stoppable_and_never_reaches_the_vendor(
    fair_gateway: Any, tmp_path: Path
) -> None:
    gateway = fair_gateway(capacity=1)
    qpu = _qpu(gateway, "503")
    running = qpu.task_start(bell(seconds=60))
    held = qpu.task_start(bell())

    assert is_gateway_task(held)
    assert qpu.task_status(held) == TaskStatus.Queued
    assert "waits in the QRMI gateway's fair-share queue" in qpu.task_logs(held)
    with pytest.raises(TaskNotReadyError, match="fair-share queue"):
        qpu.task_result(held)
    qpu.task_stop(held)
    assert qpu.task_status(held) == TaskStatus.Cancelled
    qpu.task_stop(running)

    assert gateway.service is not None
    record = gateway.service.store.usage_of("emu", held)
    assert record is not None and (record.state, record.quantum_seconds) == ("Cancelled", 0.0)
    with pytest.raises(TaskNotFoundError):
        TaskStore(tmp_path / "emulators" / "emu").status(held)
    assert qpu.task_wait(qpu.task_start(bell()), 60) == TaskStatus.Completed  # the lane is free


def test_held_tasks_survive_a_restart_and_keep_their_ids_and_records(fair_gateway: Any) -> None:
    gateway = fair_gateway(capacity=1)
    qpu = _qpu(gateway, "504")
    first = qpu.task_start(bell(seconds=1))
    held = qpu.task_start(bell(shots=30))
    before = time.time()

    gateway.restart()

    assert qpu.task_wait(held, 120) == TaskStatus.Completed
    counts = qpu.task_result(held).json()
    assert counts is not None
    assert gateway.service is not None
    record = gateway.service.store.usage_of("emu", held)
    assert record is not None and record.state == "Completed" and record.shots == 30
    assert record.submitted < before  # when the job asked, not when it was dispatched
    entry = gateway.service.store.queued_task("emu", held)
    assert entry is not None and entry.state == "dispatched" and entry.vendor_task_id
    assert qpu.task_wait(first, 60) == TaskStatus.Completed


def test_the_end_of_a_job_cancels_its_held_tasks(fair_gateway: Any) -> None:
    gateway = fair_gateway(capacity=1)
    qpu = _qpu(gateway, "505")
    running = qpu.task_start(bell(seconds=60))
    held = [qpu.task_start(bell()) for _ in range(3)]
    assert gateway.service is not None

    report = gateway.service.finish_job("505")

    assert set(report.cancelled_tasks) == {running, *held}
    records = {r.task_id: r.state for r in gateway.service.store.usage(slurm_job_id="505")}
    assert records == {running: "Cancelled", **{task: "Cancelled" for task in held}}


def test_a_malformed_capacity_stops_the_gateway_at_its_start(tmp_path: Path) -> None:
    from qrmi.config import Config
    from qrmi.errors import ConfigError
    from qrmi.gateway.service import GatewayService

    config = emulator_config(tmp_path)
    config["resources"][0]["environment"][CAPACITY_KEY] = "two"
    store = Store(tmp_path / "gateway.db")
    try:
        with pytest.raises(ConfigError, match="QRMI_GATEWAY_MAX_CONCURRENT_TASKS='two' of QPU"):
            GatewayService(Config.from_dict(config), store)
    finally:
        store.close()


def test_a_payload_the_qpu_cannot_take_is_refused_at_once_even_when_it_would_wait(
    fair_gateway: Any,
) -> None:
    from qrmi.errors import UnsupportedPayloadError
    from qrmi.models import Payload

    gateway = fair_gateway(capacity=1)
    qpu = _qpu(gateway, "506")
    running = qpu.task_start(bell(seconds=60))
    with pytest.raises(UnsupportedPayloadError, match="takes Payload.QiskitPrimitive"):
        qpu.task_start(Payload.PasqalCloud(sequence="{}", job_runs=10))
    qpu.task_stop(running)
