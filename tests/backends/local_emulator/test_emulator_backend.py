"""The backend through ``QuantumResource``: store, worker, lanes, cancellation, leases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from emulator_helpers import BELL, bell_sampler, primitive
from qiskit_ibm_runtime.decoders.result_decoder import ResultDecoder

from qrmi.backends.local_emulator.store import TaskStore
from qrmi.backends.local_emulator.worker import pid_alive, stop_worker
from qrmi.errors import ConfigError, InvalidInputError, UnsupportedPayloadError
from qrmi.models import Payload, ResourceStatusCode, ResourceType, TaskStatus
from qrmi.resource import QuantumResource

MakeResource = Callable[..., QuantumResource]


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


def wait_running(resource: QuantumResource, task_id: str) -> None:
    wait_until(lambda: resource.task_status(task_id) != TaskStatus.Queued)
    assert resource.task_status(task_id) == TaskStatus.Running


def test_bell_counts_through_the_resource(make_resource: MakeResource) -> None:
    resource = make_resource()

    task_id = resource.task_start(bell_sampler(shots=300))

    assert resource.task_wait(task_id, 60) == TaskStatus.Completed
    result = ResultDecoder.decode(resource.task_result(task_id).value)
    counts = result[0].data.c.get_counts()
    assert set(counts) <= {"00", "11"}
    assert sum(counts.values()) == 300


def test_task_ids_are_uuids(make_resource: MakeResource) -> None:
    task_id = make_resource().task_start(bell_sampler())

    assert len(task_id) == 36 and task_id.count("-") == 4


def test_timestamps_and_lane_are_recorded(make_resource: MakeResource, state_dir: Path) -> None:
    resource = make_resource()
    task_id = resource.task_start(bell_sampler())
    resource.task_wait(task_id, 60)

    record = TaskStore(state_dir).get(task_id)

    assert record.created_at <= record.started_at <= record.ended_at  # type: ignore[operator]
    assert record.lane == 0
    assert record.device == "fake_perth"
    assert "completed" in resource.task_logs(task_id)


def test_task_usage_is_the_time_between_the_stores_start_and_end(
    make_resource: MakeResource, state_dir: Path
) -> None:
    resource = make_resource()
    task_id = resource.task_start(bell_sampler(seconds=0.2))
    assert resource.task_wait(task_id, 60) == TaskStatus.Completed

    usage = resource.task_usage(task_id)

    record = TaskStore(state_dir).get(task_id)
    assert record.started_at is not None and record.ended_at is not None
    assert usage is not None and usage.quantum_seconds is None
    assert usage.running_seconds == record.ended_at - record.started_at
    assert usage.running_seconds >= 0.2  # the task asked to hold its lane that long


def test_task_usage_of_a_running_task_is_unknown(make_resource: MakeResource) -> None:
    resource = make_resource()
    task_id = resource.task_start(bell_sampler(seconds=30))
    wait_running(resource, task_id)

    assert resource.task_usage(task_id) is None
    resource.task_stop(task_id)


def test_a_task_started_in_another_process_is_read_here(
    make_resource: MakeResource, state_dir: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import json
        from qrmi.models import Payload, ResourceType
        from qrmi.resource import QuantumResource
        config = {{"QRMI_LOCAL_STATE_DIR": {str(state_dir)!r}, "QRMI_LOCAL_IDLE_SECONDS": "5"}}
        resource = QuantumResource.from_config("local", ResourceType.LocalEmulator, config)
        params = {{"pubs": [[{BELL!r}, None, 50]], "version": 2}}
        print(resource.task_start(Payload.QiskitPrimitive(json.dumps(params), "sampler")))
        """
    )
    started = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    task_id = started.stdout.strip()

    resource = make_resource()
    assert resource.task_wait(task_id, 60) == TaskStatus.Completed
    counts = ResultDecoder.decode(resource.task_result(task_id).value)[0].data.c.get_counts()
    assert sum(counts.values()) == 50


def test_the_client_side_does_not_import_qiskit(state_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        from qrmi.models import Payload, ResourceType
        from qrmi.resource import QuantumResource
        config = {{"QRMI_LOCAL_STATE_DIR": {str(state_dir)!r}, "QRMI_LOCAL_IDLE_SECONDS": "5",
                  "QRMI_LOCAL_IN_PROCESS": "false"}}
        resource = QuantumResource.from_config("local", ResourceType.LocalEmulator, config)
        params = {{"pubs": [[{BELL!r}]], "version": 2}}
        task_id = resource.task_start(Payload.QiskitPrimitive(json.dumps(params), "sampler"))
        resource.task_status(task_id)
        resource.task_logs(task_id)
        resource.status()
        resource.target()
        resource.task_stop(task_id)
        print(sorted(m for m in sys.modules if m.split(".")[0].startswith("qiskit")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )

    assert done.stdout.strip() == "[]"


def test_lanes_bound_the_tasks_running_at_once(
    make_resource: MakeResource, state_dir: Path
) -> None:
    resource = make_resource(QRMI_LOCAL_LANES="2")
    ids = [resource.task_start(bell_sampler(seconds=0.3)) for _ in range(5)]
    for task_id in ids:
        assert resource.task_wait(task_id, 60) == TaskStatus.Completed

    records = [TaskStore(state_dir).get(task_id) for task_id in ids]

    assert {r.lane for r in records} == {0, 1}
    events = sorted(
        [(r.started_at, 1) for r in records] + [(r.ended_at, -1) for r in records],
        key=lambda event: (event[0], event[1]),
    )
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak <= 2


def test_tasks_start_in_fifo_order(make_resource: MakeResource, state_dir: Path) -> None:
    resource = make_resource(QRMI_LOCAL_LANES="1")
    ids = [resource.task_start(bell_sampler(seconds=0.05)) for _ in range(4)]
    for task_id in ids:
        resource.task_wait(task_id, 60)

    started = [TaskStore(state_dir).get(task_id).started_at for task_id in ids]

    assert started == sorted(started)  # type: ignore[type-var]


def test_status_reports_lanes_and_queue(make_resource: MakeResource) -> None:
    resource = make_resource(QRMI_LOCAL_LANES="1")
    first = resource.task_start(bell_sampler(seconds=30))
    wait_running(resource, first)
    resource.task_start(bell_sampler(seconds=30))

    status = resource.status()

    assert status.status == ResourceStatusCode.Online
    assert status.capacity is not None
    assert (status.capacity.available_slots, status.capacity.max_slots) == (0, 1)
    assert status.busy is True
    assert status.pending_job_count == 1


def test_cancelling_a_queued_task_means_it_never_runs(
    make_resource: MakeResource, state_dir: Path
) -> None:
    resource = make_resource(QRMI_LOCAL_LANES="1")
    blocker = resource.task_start(bell_sampler(seconds=30))
    wait_running(resource, blocker)
    queued = resource.task_start(bell_sampler())

    resource.task_stop(queued)
    resource.task_stop(blocker)
    follower = resource.task_start(bell_sampler())
    resource.task_wait(follower, 60)

    record = TaskStore(state_dir).get(queued)
    assert record.status == "Cancelled"
    assert record.started_at is None
    assert record.result is None


def test_cancelling_a_running_task_discards_its_late_result(
    make_resource: MakeResource, state_dir: Path
) -> None:
    resource = make_resource(QRMI_LOCAL_LANES="1")
    task_id = resource.task_start(bell_sampler(seconds=30))
    wait_running(resource, task_id)

    resource.task_stop(task_id)

    assert resource.task_status(task_id) == TaskStatus.Cancelled
    follower = resource.task_start(bell_sampler())
    assert resource.task_wait(follower, 60) == TaskStatus.Completed
    assert TaskStore(state_dir).get(task_id).result is None
    assert resource.task_status(task_id) == TaskStatus.Cancelled


def test_a_failure_reports_its_reason_in_the_logs(make_resource: MakeResource) -> None:
    resource = make_resource()
    task_id = resource.task_start(primitive("sampler", [["OPENQASM 3.0; qubit q; nogate q;"]]))

    assert resource.task_wait(task_id, 60) == TaskStatus.Failed
    logs = resource.task_logs(task_id)
    assert "pub 0" in logs and "OpenQASM" in logs
    assert "Traceback" not in logs


def test_a_task_whose_worker_died_is_failed(make_resource: MakeResource, state_dir: Path) -> None:
    resource = make_resource(QRMI_LOCAL_LANES="1")
    task_id = resource.task_start(bell_sampler(seconds=30))
    wait_running(resource, task_id)
    pid = TaskStore(state_dir).get(task_id).worker_pid
    assert pid is not None

    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid))

    assert resource.task_status(task_id) == TaskStatus.Failed
    assert "died" in resource.task_logs(task_id)
    follower = resource.task_start(bell_sampler())
    assert resource.task_wait(follower, 60) == TaskStatus.Completed


def test_a_new_worker_fails_tasks_left_running(
    make_resource: MakeResource, state_dir: Path
) -> None:
    resource = make_resource(QRMI_LOCAL_LANES="1")
    task_id = resource.task_start(bell_sampler(seconds=30))
    wait_running(resource, task_id)

    stop_worker(state_dir)
    follower = resource.task_start(bell_sampler())

    assert resource.task_wait(follower, 60) == TaskStatus.Completed
    assert TaskStore(state_dir).get(task_id).status == "Failed"


def test_the_worker_exits_when_idle(make_resource: MakeResource, state_dir: Path) -> None:
    resource = make_resource(QRMI_LOCAL_IDLE_SECONDS="0.2")
    resource.task_wait(resource.task_start(bell_sampler()), 60)
    store = TaskStore(state_dir)

    wait_until(lambda: store.worker() is None)
    follower = resource.task_start(bell_sampler())

    assert resource.task_wait(follower, 60) == TaskStatus.Completed


def test_leases_are_counted(make_resource: MakeResource, state_dir: Path) -> None:
    resource = make_resource()
    token = resource.acquire()

    resource.release(token)
    resource.release(token)
    resource.release("never-issued")

    store = TaskStore(state_dir)
    lease = store.lease(token)
    assert lease is not None
    assert lease.acquired_at is not None and lease.released_at is not None
    assert lease.release_count == 2
    stray = store.lease("never-issued")
    assert stray is not None and stray.acquired_at is None and stray.release_count == 1


def test_noise_setting_gives_non_ideal_counts(make_resource: MakeResource) -> None:
    resource = make_resource(QRMI_LOCAL_NOISE="true", QRMI_LOCAL_SEED="5")
    task_id = resource.task_start(bell_sampler(shots=4000))
    resource.task_wait(task_id, 60)

    counts = ResultDecoder.decode(resource.task_result(task_id).value)[0].data.c.get_counts()

    assert counts.get("01", 0) + counts.get("10", 0) > 0


def test_target_builds_a_qiskit_target(make_resource: MakeResource) -> None:
    from qiskit_ibm_runtime.models import BackendConfiguration, BackendProperties
    from qiskit_ibm_runtime.utils.backend_converter import convert_to_target

    data = json.loads(make_resource(QRMI_LOCAL_DEVICE="fake_sherbrooke").target().value)

    target = convert_to_target(
        BackendConfiguration.from_dict(data["configuration"]),
        BackendProperties.from_dict(data["properties"]),
    )
    assert target.num_qubits == 127


def test_metadata_names_the_device(make_resource: MakeResource) -> None:
    metadata = make_resource(QRMI_LOCAL_DEVICE="ibm_torino").metadata()

    assert metadata["backend_name"] == "local"
    assert metadata["device"] == "fake_torino"


def test_resource_without_configuration_uses_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    resource = QuantumResource("local", ResourceType.LocalEmulator)
    state_dir = tmp_path / "qrmi" / "local-emulator" / "local"
    try:
        task_id = resource.task_start(bell_sampler())
        assert resource.task_wait(task_id, 60) == TaskStatus.Completed
        assert resource.metadata()["state_dir"] == str(state_dir)
        assert resource.metadata()["device"] == "fake_perth"
        assert resource.status().capacity.max_slots == 2  # type: ignore[union-attr]
    finally:
        stop_worker(state_dir)


# ----- bad input at task_start ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        (
            Payload.QiskitPrimitive(input="{not json", program_id="sampler"),
            InvalidInputError,
            "JSON",
        ),
        (
            Payload.QiskitPrimitive(input="[1, 2]", program_id="sampler"),
            InvalidInputError,
            "object",
        ),
        (
            Payload.QiskitPrimitive(input='{"pubs": []}', program_id="sampler"),
            InvalidInputError,
            "pubs",
        ),
        (primitive("estimator", [[BELL]]), InvalidInputError, "observables are missing"),
        (
            primitive("sampler", [[BELL]]).__class__(input="{}", program_id="qaoa"),
            UnsupportedPayloadError,
            "'estimator'",
        ),
        (
            Payload.PasqalCloud(sequence="{}", job_runs=1),
            UnsupportedPayloadError,
            "QiskitPrimitive",
        ),
    ],
)
def test_bad_payloads_are_refused_at_task_start(
    make_resource: MakeResource, payload: Payload, error: type[Exception], message: str
) -> None:
    resource = make_resource()

    with pytest.raises(error, match=message):
        resource.task_start(payload)
    assert resource.status().pending_job_count == 0


def test_unknown_device_is_refused_at_task_start(make_resource: MakeResource) -> None:
    with pytest.raises(InvalidInputError, match="fake_sherbrooke"):
        make_resource(QRMI_LOCAL_DEVICE="ibm_atlantis").task_start(bell_sampler())


def test_malformed_lanes_setting_is_a_config_error(make_resource: MakeResource) -> None:
    with pytest.raises(ConfigError, match="QRMI_LOCAL_LANES"):
        make_resource(QRMI_LOCAL_LANES="many")
