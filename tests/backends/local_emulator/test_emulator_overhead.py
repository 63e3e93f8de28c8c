"""What cuts the emulator's per-task overhead keeps behaviour: the fast OpenQASM 3 path, the
parsed-circuit cache, task-end notifications and the claim's log line."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from emulator_helpers import bell_sampler
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, qasm3, transpile
from qiskit.circuit import Parameter
from qiskit_ibm_runtime.fake_provider import FakeSherbrooke

from qrmi.backends.local_emulator import _notify, _simulate
from qrmi.backends.local_emulator._sandbox import child_environment
from qrmi.backends.local_emulator.store import RUNNING, TaskStore
from qrmi.models import TaskStatus
from qrmi.primitives._common import circuit_to_qasm3
from qrmi.resource import QuantumResource

MakeResource = Callable[..., QuantumResource]


def shape(circuit: QuantumCircuit) -> tuple[object, ...]:
    """What the simulation sees: instructions on bit indices, widths and classical registers."""
    instructions = [
        (
            item.operation.name,
            [float(p) for p in item.operation.params],
            [circuit.find_bit(q).index for q in item.qubits],
            [circuit.find_bit(c).index for c in item.clbits],
        )
        for item in circuit.data
    ]
    registers = [(r.name, r.size) for r in circuit.cregs]
    return instructions, circuit.num_qubits, circuit.num_clbits, registers


def fast_path_circuits() -> dict[str, QuantumCircuit]:
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()
    mixed = QuantumCircuit(4)
    mixed.ecr(0, 1)
    mixed.rzz(0.25, 1, 2)
    mixed.sxdg(3)
    mixed.rxx(-1.5e-3, 0, 3)
    mixed.ccx(0, 1, 2)
    mixed.measure_all()
    a, b = QuantumRegister(2, "a"), QuantumRegister(1, "b")
    x, y = ClassicalRegister(1, "x"), ClassicalRegister(2, "y")
    registers = QuantumCircuit(a, b, x, y)
    registers.h(a[0])
    registers.cx(a[0], b[0])
    registers.measure(a[0], y[1])
    registers.measure(b[0], x[0])
    isa = transpile(mixed, FakeSherbrooke(), optimization_level=1, seed_transpiler=3)
    return {"bell": bell, "mixed": mixed, "registers": registers, "isa": isa}


@pytest.mark.parametrize("name", ["bell", "mixed", "registers", "isa"])
def test_the_fast_path_builds_what_qasm3_loads_builds(name: str) -> None:
    text = circuit_to_qasm3(fast_path_circuits()[name], 0, "test")

    fast = _simulate._fast_qasm3(text)

    assert fast is not None, "this text should take the fast path"
    slow = _simulate._standardise_gates(qasm3.loads(text))
    assert shape(_simulate._standardise_gates(fast)) == shape(slow)


def slow_path_texts() -> dict[str, str]:
    parameter = QuantumCircuit(1)
    parameter.rx(Parameter("theta"), 0)
    parameter.measure_all()
    delay = QuantumCircuit(1)
    delay.delay(100, 0)
    delay.measure_all()
    reset = QuantumCircuit(1)
    reset.reset(0)
    reset.measure_all()
    branch = QuantumCircuit(2, 1)
    branch.measure(0, 0)
    with branch.if_test((branch.clbits[0], 1)):
        branch.x(1)
    custom = QuantumCircuit(2)
    custom.append(bell_gate(), [0, 1])
    custom.measure_all()
    texts = {
        name: circuit_to_qasm3(circuit, 0, "test")
        for name, circuit in {
            "parameter": parameter,
            "delay": delay,
            "reset": reset,
            "branch": branch,
            "custom gate": custom,
        }.items()
    }
    texts["comment"] = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[1] q; // a comment\nh q[0];\n'
    texts["undefined gate"] = "OPENQASM 3.0;\nqubit[1] q;\nfoo q[0];\n"
    return texts


def bell_gate() -> object:
    sub = QuantumCircuit(2, name="bellprep")
    sub.h(0)
    sub.cx(0, 1)
    return sub.to_gate()


@pytest.mark.parametrize("name", sorted(slow_path_texts()))
def test_what_the_fast_path_does_not_handle_goes_to_qasm3_loads(name: str) -> None:
    assert _simulate._fast_qasm3(slow_path_texts()[name]) is None


def test_a_cached_circuit_is_a_fresh_copy_each_time() -> None:
    text = circuit_to_qasm3(fast_path_circuits()["bell"], 0, "test") + "\n// cache test\n"

    first = _simulate._load_circuit(0, text)
    first.x(0)  # what a pub might do to its circuit
    second = _simulate._load_circuit(0, text)

    assert second is not first
    assert [item.operation.name for item in second.data][:2] == ["h", "cx"]
    assert len(second.data) == len(first.data) - 1


def test_the_cache_is_bounded() -> None:
    cache = _simulate._ParsedCircuits()
    circuit = QuantumCircuit(1)
    for number in range(cache.MAX_ENTRIES + 5):
        cache.put(f"text {number}", circuit)

    assert cache.get("text 0") is None
    assert cache.get(f"text {cache.MAX_ENTRIES + 4}") is not None


def test_a_notification_wakes_the_waiter_of_that_task_only(tmp_path: Path) -> None:
    waiter = _notify.Waiter.open(tmp_path, "task-1")
    other = _notify.Waiter.open(tmp_path, "task-2")
    assert waiter is not None and other is not None
    with waiter, other:
        _notify.notify(tmp_path, "task-1")

        assert waiter.wait(30.0) is True
        assert other.wait(0.01) is False
    assert list((tmp_path / _notify.WAITERS_DIR).iterdir()) == []


def test_notify_removes_the_sockets_of_waiters_that_are_gone(tmp_path: Path) -> None:
    waiter = _notify.Waiter.open(tmp_path, "task-1")
    assert waiter is not None
    stale = tmp_path / _notify.WAITERS_DIR / "task-1.999999.0"
    waiter._path.rename(stale)  # as a killed client leaves it: the file, nobody reading
    waiter._sock.close()

    _notify.notify(tmp_path, "task-1")

    assert not stale.exists()


def test_a_sweep_removes_dead_waiters_sockets_and_keeps_live_ones(tmp_path: Path) -> None:
    live = _notify.Waiter.open(tmp_path, "task-1")
    dead = _notify.Waiter.open(tmp_path, "task-2")
    assert live is not None and dead is not None
    dead._sock.close()  # killed: the file stays, nobody reads it

    with live:
        assert _notify.sweep(tmp_path) == 1

        assert live._path.exists()
        assert not dead._path.exists()
        assert live.wait(0.01) is False  # the sweep woke nobody


@pytest.mark.parametrize("task_id", ["../escape", "a/b", "x" * 65, ""])
def test_ids_that_are_not_plain_get_no_waiter(tmp_path: Path, task_id: str) -> None:
    assert _notify.Waiter.open(tmp_path, task_id) is None
    assert not (tmp_path / _notify.WAITERS_DIR).exists()


def test_a_state_directory_too_long_for_a_socket_path_still_gets_notified(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    waiter = _notify.Waiter.open(deep, "0" * 36)
    assert waiter is not None
    with waiter:
        _notify.notify(deep, "0" * 36)

        assert waiter.wait(30.0) is True


def test_a_wait_leaves_no_socket_behind(state_dir: Path, make_resource: MakeResource) -> None:
    resource = make_resource()

    task_id = resource.task_start(bell_sampler())

    assert resource.task_wait(task_id, 60) == TaskStatus.Completed
    assert list((state_dir / _notify.WAITERS_DIR).iterdir()) == []


def test_a_cancel_from_another_client_ends_the_wait(make_resource: MakeResource) -> None:
    waiting, cancelling = make_resource(), make_resource()
    task_id = waiting.task_start(bell_sampler(seconds=600))
    statuses: list[TaskStatus] = []
    thread = threading.Thread(target=lambda: statuses.append(waiting.task_wait(task_id, 120)))
    thread.start()

    cancelling.task_stop(task_id)
    thread.join(120)

    assert statuses == [TaskStatus.Cancelled]


def test_a_claim_returns_the_running_task_with_its_log_line(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    task_id = store.add_task("sampler", "{}", device="fake_perth", noise=False, seed=None)

    claimed = store.claim_next(lane=1, worker_pid=42, log=lambda task: f"on lane {task.lane}")

    assert claimed is not None
    assert (claimed.status, claimed.lane, claimed.worker_pid) == (RUNNING, 1, 42)
    assert claimed.started_at is not None
    assert claimed.logs.endswith("on lane 1\n")
    assert store.get(task_id).logs == claimed.logs


def test_results_encoded_at_the_fastest_level_decode_to_the_same_arrays() -> None:
    import json

    import numpy as np
    from qiskit.primitives.containers import BitArray
    from qiskit_ibm_runtime.json import RuntimeDecoder

    bits = BitArray(np.random.default_rng(1).integers(0, 256, (1000, 2), dtype=np.uint8), 12)

    text = json.dumps({"meas": bits, "values": np.arange(5.0)}, cls=_simulate._ResultEncoder)

    decoded = json.loads(text, cls=RuntimeDecoder)
    assert decoded["meas"] == bits
    assert decoded["values"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_simulation_processes_get_passive_openmp_threads_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert child_environment()["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert child_environment()["OMP_WAIT_POLICY"] == "ACTIVE"
