"""The scheduler-neutral QPU lifecycle (qrmi.lifecycle), against the ledger QPU backend."""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Mapping
from pathlib import Path

import pytest

from qrmi import Payload, QuantumResource, TaskStatus
from qrmi.config import Config
from qrmi.errors import ConfigError, InvalidInputError, ResourceNotFoundError, ServiceError
from qrmi.lifecycle import (
    INFINITE_TIMEOUT_SECONDS,
    TASK_LOG_MAX_TASKS,
    TASK_LOG_VAR,
    JobContext,
    JobLifecycle,
    JobStateStore,
    parse_qpu_list,
)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger"
    path.mkdir()
    return path


@pytest.fixture
def lifecycle(ledger_backend: str, ledger: Path, tmp_path: Path) -> JobLifecycle:
    def qpu(name: str, **extra: str) -> dict[str, object]:
        env = {"QRMI_LEDGER_DIR": str(ledger), "QRMI_LEDGER_NOTE": "admin", **extra}
        return {"name": name, "type": ledger_backend, "environment": env}

    config = Config.from_dict(
        {
            "resources": [
                qpu("a"),
                qpu("b"),
                qpu("down", QRMI_LEDGER_MODE="offline"),
                qpu("broken", QRMI_LEDGER_MODE="fail"),
            ]
        }
    )
    return JobLifecycle(config, JobStateStore(tmp_path / "state"))


def events(ledger: Path, name: str) -> list[str]:
    path = ledger / f"{name}.log"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


def ctx(job: str = "42", **kwargs: object) -> JobContext:
    return JobContext(job, 1001, **kwargs)  # type: ignore[arg-type]


def test_start_gives_the_reference_job_variables(lifecycle: JobLifecycle) -> None:
    variables = lifecycle.start(ctx(time_limit_seconds=600), ["a", "b"])
    assert variables["QRMI_JOB_QPU_RESOURCES"] == variables["SLURM_JOB_QPU_RESOURCES"] == "a,b"
    assert variables["QRMI_JOB_QPU_TYPES"] == "test-ledger,test-ledger"
    assert variables["SLURM_JOB_QPU_TYPES"] == "test-ledger,test-ledger"
    assert (variables["QRMI_JOB_ID"], variables["QRMI_JOB_UID"]) == ("42", "1001")
    assert variables["a_QRMI_JOB_TIMEOUT_SECONDS"] == "600"
    assert variables["a_QRMI_LEDGER_NOTE"] == "admin"
    assert variables["a_QRMI_JOB_ACQUISITION_TOKEN"] != variables["b_QRMI_JOB_ACQUISITION_TOKEN"]


def test_only_the_admin_config_counts(
    lifecycle: JobLifecycle, ledger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = tmp_path / "evil"
    for key in ("a_QRMI_LEDGER_NOTE", "a_QRMI_LEDGER_DIR", "QRMI_LEDGER_DIR"):
        monkeypatch.setenv(key, str(evil))  # the root process's own environment is ignored too
    variables = lifecycle.start(ctx(), ["a"])
    assert variables["a_QRMI_LEDGER_NOTE"] == "admin"
    assert events(ledger, "a") == ["acquire"]
    lifecycle.finish("42")
    assert events(ledger, "a") == ["acquire", "release"]
    assert not evil.exists()


def test_a_config_value_with_a_line_break_is_refused_before_acquiring(
    ledger_backend: str, ledger: Path, tmp_path: Path
) -> None:
    env = {"QRMI_LEDGER_DIR": str(ledger), "QRMI_LEDGER_NOTE": "a\rb"}
    config = Config.from_dict(
        {"resources": [{"name": "a", "type": ledger_backend, "environment": env}]}
    )
    lifecycle = JobLifecycle(config, JobStateStore(tmp_path / "state"))
    with pytest.raises(ConfigError, match="'QRMI_LEDGER_NOTE' of QPU 'a'"):
        lifecycle.start(ctx(), ["a"])
    assert events(ledger, "a") == []


def test_the_task_log_is_read_with_limits(tmp_path: Path) -> None:
    store = JobStateStore(tmp_path / "state")
    path = store.create_task_log("42", 1001)
    path.write_text("".join(f"a\tt{i}\n" for i in range(300_000)) + "a\tt0\n")
    pairs = store.read_task_log("42")
    assert len(pairs) == TASK_LOG_MAX_TASKS
    assert pairs[-1] == ("a", "t0") and pairs[-2] == ("a", "t299999")


def test_unlimited_job_gets_the_reference_infinity(lifecycle: JobLifecycle) -> None:
    variables = lifecycle.start(ctx(), ["a"])
    assert variables["a_QRMI_JOB_TIMEOUT_SECONDS"] == str(INFINITE_TIMEOUT_SECONDS)


def test_unknown_name_lists_the_configured_qpus(lifecycle: JobLifecycle) -> None:
    with pytest.raises(ResourceNotFoundError, match=r"'nope'.*a, b, broken, down"):
        lifecycle.start(ctx(), ["a", "nope"])


def test_inaccessible_qpu_releases_what_was_acquired(lifecycle: JobLifecycle, ledger: Path) -> None:
    with pytest.raises(ServiceError, match=r"'down' \(test-ledger\) is not accessible"):
        lifecycle.start(ctx(), ["a", "down"])
    assert events(ledger, "a") == ["acquire", "release"]
    assert lifecycle.store.job_ids() == []


def test_refused_acquisition_fails_with_the_backend_reason(lifecycle: JobLifecycle) -> None:
    with pytest.raises(ServiceError, match="quota exhausted"):
        lifecycle.start(ctx(), ["broken"])


def test_finish_releases_exactly_once(lifecycle: JobLifecycle, ledger: Path) -> None:
    lifecycle.start(ctx(), ["a", "b"])
    first = lifecycle.finish("42")
    second = lifecycle.finish("42")
    assert (first.released, first.had_state) == (["a", "b"], True)
    assert (second.released, second.had_state) == ([], False)
    assert events(ledger, "a") == events(ledger, "b") == ["acquire", "release"]
    assert lifecycle.store.job_ids() == []


def _locked(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_finish_uses_the_job_lock_its_starter_already_holds(
    lifecycle: JobLifecycle, ledger: Path
) -> None:
    lifecycle.start(ctx(), ["a"])
    held = _locked(lifecycle.store.path("42").with_suffix(".lock"))  # as the Slurm shim does
    report = lifecycle.finish("42", held_lock_fd=held)  # would wait forever for itself
    assert report.released == ["a"] and events(ledger, "a") == ["acquire", "release"]
    assert _closed(held)
    assert not lifecycle.store.path("42").with_suffix(".lock").exists()


def test_a_held_lock_of_another_file_is_not_trusted(
    lifecycle: JobLifecycle, ledger: Path, tmp_path: Path
) -> None:
    lifecycle.start(ctx(), ["a"])
    other = os.open(tmp_path / "other.lock", os.O_RDWR | os.O_CREAT, 0o600)
    report = lifecycle.finish("42", held_lock_fd=other)  # takes the job's own lock instead
    assert report.released == ["a"] and events(ledger, "a") == ["acquire", "release"]
    assert _closed(other)


def test_a_later_step_reuses_the_leases(lifecycle: JobLifecycle, ledger: Path) -> None:
    first = lifecycle.start(ctx(), ["a"])
    again = lifecycle.start(ctx(), ["a"])
    assert first["a_QRMI_JOB_ACQUISITION_TOKEN"] == again["a_QRMI_JOB_ACQUISITION_TOKEN"]
    assert events(ledger, "a") == ["acquire"]
    with pytest.raises(InvalidInputError, match="already holds QPUs a"):
        lifecycle.start(ctx(), ["b"])


def test_state_is_root_only_and_holds_what_release_needs(lifecycle: JobLifecycle) -> None:
    lifecycle.start(ctx(), ["a"])
    path = lifecycle.store.path("42")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    state = lifecycle.store.load("42")
    assert state is not None and [lease.name for lease in state.leases] == ["a"]


def test_a_failed_release_keeps_the_state_for_a_retry(
    lifecycle: JobLifecycle, ledger: Path, tmp_path: Path
) -> None:
    lifecycle.start(ctx(), ["a"])
    ledger.rename(tmp_path / "away")  # the backend cannot record the release now
    report = lifecycle.finish("42")
    assert report.failed and "a" in report.failed
    assert lifecycle.store.job_ids() == ["42"]
    (tmp_path / "away").rename(ledger)
    assert lifecycle.finish("42").released == ["a"]
    assert events(ledger, "a") == ["acquire", "release"]


def test_a_corrupt_state_file_is_reported(lifecycle: JobLifecycle) -> None:
    lifecycle.store.jobs.mkdir(parents=True)
    lifecycle.store.path("7").write_text("{not json")
    with pytest.raises(ConfigError, match="corrupt"):
        lifecycle.finish("7")


@pytest.mark.parametrize(
    ("text", "names"),
    [("a", ["a"]), ("a,b", ["a", "b"]), ("b,a,b", ["b", "a"]), ("ibm_fez.2-x", ["ibm_fez.2-x"])],
)
def test_parse_qpu_list(text: str, names: list[str]) -> None:
    assert parse_qpu_list(text) == names


@pytest.mark.parametrize("text", ["", "a,,b", ",a", "a;b", "a b"])
def test_parse_qpu_list_refuses_malformed_lists(text: str) -> None:
    with pytest.raises(InvalidInputError, match="--qpu"):
        parse_qpu_list(text)


def test_job_ids_must_be_plain(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        JobStateStore(tmp_path).path("../etc/passwd")


def job_resource(name: str, ledger: Path, variables: dict[str, str]) -> QuantumResource:
    """The resource as the job's own code builds it, from the job's environment."""
    return QuantumResource(
        name, "test-ledger", config={"QRMI_LEDGER_DIR": str(ledger)}, environ=variables
    )


def sampler() -> Payload:
    return Payload.QiskitPrimitive(input='{"pubs": []}', program_id="sampler")


def test_the_job_gets_a_task_log_only_it_can_write(lifecycle: JobLifecycle) -> None:
    variables = lifecycle.start(ctx(), ["a"])
    log = Path(variables[TASK_LOG_VAR])
    assert log.exists()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o711  # reachable, not listable


def test_the_jobs_end_stops_the_tasks_it_left_running(
    lifecycle: JobLifecycle, ledger: Path
) -> None:
    variables = lifecycle.start(ctx(), ["a", "b"])
    qpu_a, qpu_b = job_resource("a", ledger, variables), job_resource("b", ledger, variables)
    left_running, stopped_by_job, on_b = (
        qpu_a.task_start(sampler()),
        qpu_a.task_start(sampler()),
        qpu_b.task_start(sampler()),
    )
    qpu_a.task_stop(stopped_by_job)

    lifecycle.finish("42")

    a_lines = (ledger / "a.log").read_text().splitlines()
    assert [line.split()[1] for line in a_lines if line.startswith("cancel")] == [
        stopped_by_job,
        left_running,
    ]
    assert qpu_b.task_status(on_b) == TaskStatus.Cancelled
    assert not Path(variables[TASK_LOG_VAR]).exists()
    lifecycle.finish("42")  # a second end finds nothing to do
    assert len((ledger / "a.log").read_text().splitlines()) == len(a_lines)


def test_task_start_outlives_a_missing_task_log(
    ledger_backend: str, ledger: Path, tmp_path: Path
) -> None:
    variables = {TASK_LOG_VAR: str(tmp_path / "gone" / "42.tasks")}
    qpu = job_resource("a", ledger, variables)
    assert qpu.task_status(qpu.task_start(sampler())) == TaskStatus.Running


def test_stopping_many_tasks_builds_each_qpu_once(
    ledger_backend: str, ledger: Path, tmp_path: Path
) -> None:
    config = Config.from_dict(
        {
            "resources": [
                {
                    "name": "a",
                    "type": ledger_backend,
                    "environment": {"QRMI_LEDGER_DIR": str(ledger)},
                }
            ]
        }
    )
    built: list[str] = []

    def factory(name: str, kind: str, settings: Mapping[str, str]) -> QuantumResource:
        built.append(name)
        return QuantumResource(name, kind, config=settings, environ={})

    lifecycle = JobLifecycle(config, JobStateStore(tmp_path / "state"), factory=factory)
    variables = lifecycle.start(ctx(), ["a"])
    qpu = job_resource("a", ledger, variables)
    tasks = [qpu.task_start(sampler()) for _ in range(5)]
    built.clear()

    lifecycle.finish("42")

    assert built == ["a", "a"]  # one to release the lease, one to stop the five tasks
    assert all(qpu.task_status(task) == TaskStatus.Cancelled for task in tasks)
