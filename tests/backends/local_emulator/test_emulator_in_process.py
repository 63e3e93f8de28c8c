"""Small tasks simulated in the submitting process (the default), large ones on the lanes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

from emulator_helpers import BELL, bell_sampler, primitive
from qiskit import QuantumCircuit, qasm3
from qiskit_ibm_runtime.decoders.result_decoder import ResultDecoder

from qrmi.backends.local_emulator import worker
from qrmi.backends.local_emulator.store import TaskStore
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource

MakeResource = Callable[..., QuantumResource]
IN_PROCESS = {"QRMI_LOCAL_IN_PROCESS": "true"}


def ghz(qubits: int) -> str:
    circuit = QuantumCircuit(qubits)
    circuit.h(0)
    for qubit in range(qubits - 1):
        circuit.cx(qubit, qubit + 1)
    circuit.measure_all()
    return qasm3.dumps(circuit)


def counts(resource: QuantumResource, task_id: str, register: str = "c") -> dict[str, int]:
    result = ResultDecoder.decode(resource.task_result(task_id).value)
    found: dict[str, int] = result[0].data[register].get_counts()
    return found


def test_a_small_task_runs_in_the_submitting_process(
    make_resource: MakeResource, state_dir: Path
) -> None:
    resource = make_resource(**IN_PROCESS)

    task_id = resource.task_start(bell_sampler(shots=300))

    assert resource.task_status(task_id) == TaskStatus.Completed  # ended within task_start
    assert f"ran in the submitting process {os.getpid()}" in resource.task_logs(task_id)
    assert set(counts(resource, task_id)) <= {"00", "11"}
    assert sum(counts(resource, task_id).values()) == 300
    assert not worker.worker_running(state_dir)
    record = TaskStore(state_dir).get(task_id)
    assert record.lane is None and record.worker_pid == os.getpid()
    usage = resource.task_usage(task_id)
    assert usage is not None and usage.running_seconds is not None
    assert usage.running_seconds >= 0


def test_another_process_reads_a_task_run_in_process(
    make_resource: MakeResource, state_dir: Path
) -> None:
    task_id = make_resource(**IN_PROCESS).task_start(bell_sampler(shots=40))
    script = textwrap.dedent(
        f"""
        from qrmi.models import ResourceType
        from qrmi.resource import QuantumResource
        config = {{"QRMI_LOCAL_STATE_DIR": {str(state_dir)!r}}}
        resource = QuantumResource.from_config("local", ResourceType.LocalEmulator, config)
        print(resource.task_status({task_id!r}).name, len(resource.task_result({task_id!r}).value))
        """
    )

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )

    status, length = done.stdout.split()
    assert status == "Completed" and int(length) > 100


def test_large_or_held_tasks_go_to_the_worker(make_resource: MakeResource) -> None:
    resource = make_resource(QRMI_LOCAL_DEVICE="fake_sherbrooke", **IN_PROCESS)

    wide = resource.task_start(primitive("sampler", [[ghz(22), None, 100]]))
    held = resource.task_start(bell_sampler(shots=10, seconds=0.2))

    for task_id in (wide, held):
        assert resource.task_wait(task_id, 120) == TaskStatus.Completed
        assert "started on lane" in resource.task_logs(task_id)
    assert set(counts(resource, wide, "meas")) == {"0" * 22, "1" * 22}


def test_a_warm_worker_serves_a_process_that_has_no_simulator_loaded(
    make_resource: MakeResource, state_dir: Path
) -> None:
    starter = make_resource()
    starter.task_wait(starter.task_start(bell_sampler(shots=10)), 60)  # the worker is up
    script = textwrap.dedent(
        f"""
        import json, sys
        from qrmi.models import Payload, ResourceType
        from qrmi.resource import QuantumResource
        config = {{"QRMI_LOCAL_STATE_DIR": {str(state_dir)!r}}}
        resource = QuantumResource.from_config("local", ResourceType.LocalEmulator, config)
        params = {{"pubs": [[{BELL!r}, None, 20]], "version": 2}}
        task_id = resource.task_start(Payload.QiskitPrimitive(json.dumps(params), "sampler"))
        print(resource.task_wait(task_id, 60).name, "qiskit_aer" in sys.modules)
        print(resource.task_logs(task_id))
        """
    )

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )

    first, logs = done.stdout.split("\n", 1)
    assert first == "Completed False"
    assert "started on lane" in logs


def test_in_process_false_sends_every_task_to_the_worker(make_resource: MakeResource) -> None:
    resource = make_resource(QRMI_LOCAL_IN_PROCESS="false")

    task_id = resource.task_start(bell_sampler(shots=10))

    assert resource.task_wait(task_id, 60) == TaskStatus.Completed
    assert "started on lane" in resource.task_logs(task_id)


def test_a_failure_reads_the_same_in_process_and_on_a_lane(make_resource: MakeResource) -> None:
    too_many_shots = primitive("sampler", [[BELL, None, 200_000]])  # fake_perth allows 100 000
    here = make_resource(**IN_PROCESS)
    there = make_resource(QRMI_LOCAL_IN_PROCESS="false")

    logs = []
    for resource in (here, there):
        task_id = resource.task_start(too_many_shots)
        assert resource.task_wait(task_id, 60) == TaskStatus.Failed
        logs.append(resource.task_logs(task_id))

    assert "ran in the submitting process" in logs[0]
    assert "started on lane" in logs[1]
    reasons = [text.splitlines()[-1].split(" failed: ", 1)[1] for text in logs]
    assert "shots exceed" in reasons[0]
    assert reasons[0] == reasons[1]


def test_tasks_from_several_threads_all_complete(make_resource: MakeResource) -> None:
    resource = make_resource(**IN_PROCESS)
    finished: list[TaskStatus] = []

    def submit() -> None:
        task_id = resource.task_start(bell_sampler(shots=50))
        finished.append(resource.task_wait(task_id, 60))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert finished == [TaskStatus.Completed] * 6


def test_status_and_leases_import_no_simulator(state_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from qrmi.models import ResourceType
        from qrmi.resource import QuantumResource
        config = {{"QRMI_LOCAL_STATE_DIR": {str(state_dir)!r}}}
        resource = QuantumResource.from_config("local", ResourceType.LocalEmulator, config)
        resource.status()
        resource.release(resource.acquire())
        resource.target()
        print(sorted(m for m in sys.modules if m.split(".")[0].startswith("qiskit")))
        """
    )

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )

    assert done.stdout.strip() == "[]"


def test_tight_budgets_are_enforced_on_the_lanes(make_resource: MakeResource) -> None:
    resource = make_resource(QRMI_LOCAL_TASK_MEMORY_MB="1", **IN_PROCESS)

    task_id = resource.task_start(bell_sampler(shots=10))

    assert resource.task_wait(task_id, 60) == TaskStatus.Failed
    assert "memory budget of 1 MiB" in resource.task_logs(task_id)
