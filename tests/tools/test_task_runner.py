"""task_runner keeps the reference's command line, without its bugs (exit 0 on failure, lost
results, fixed one-second polling)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qrmi import QuantumResource, TaskStatus
from tools import filevendor
from tools.conftest import SCRIPT, SECRET, RunScript, WriteInput, clean_env


def job_env(vendor_dir: Path, **extra: str) -> dict[str, str]:
    """What the Slurm plugin exports for a job submitted with --qpu=fv."""
    return clean_env(
        QRMI_JOB_QPU_RESOURCES="fv",
        QRMI_JOB_QPU_TYPES=filevendor.TYPE,
        fv_QRMI_TEST_STATE_DIR=str(vendor_dir),
        fv_QRMI_TEST_API_KEY=SECRET,
        **extra,
    )


def task_id_of(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("Task ID: ")]
    assert len(lines) == 1, stderr
    return lines[0].removeprefix("Task ID: ").strip()


def test_completed_task_writes_its_result_to_stdout(
    run_script: RunScript, write_input: WriteInput, vendor_dir: Path
) -> None:
    done = run_script("task_runner", "fv", str(write_input()), env=job_env(vendor_dir))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["program_id"] == "sampler"
    task_id = task_id_of(done.stderr)
    qpu = QuantumResource("fv", filevendor.TYPE, config={"QRMI_TEST_STATE_DIR": str(vendor_dir)})
    assert qpu.task_status(task_id) == TaskStatus.Completed, "a completed task is not stopped"
    assert json.loads(qpu.task_result(task_id).value)["program_id"] == "sampler"
    assert SECRET not in done.stdout + done.stderr


def test_result_goes_to_the_output_file(
    run_script: RunScript, write_input: WriteInput, vendor_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "result.json"
    done = run_script("task_runner", "fv", str(write_input()), str(output), env=job_env(vendor_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert json.loads(output.read_text())["echo"]["behaviour"] == "complete"


def test_failed_task_exits_non_zero_with_the_reason(
    run_script: RunScript, write_input: WriteInput, vendor_dir: Path
) -> None:
    done = run_script("task_runner", "fv", str(write_input("fail")), env=job_env(vendor_dir))
    assert done.returncode == 1
    assert filevendor.FAILURE_REASON in done.stderr
    assert done.stdout == ""


def test_outside_a_job_the_config_file_names_the_type(
    run_script: RunScript, write_input: WriteInput, config_file: Path
) -> None:
    env = clean_env(QRMI_CONFIG_FILE=str(config_file))
    done = run_script("task_runner", "fv", str(write_input()), env=env)
    assert done.returncode == 0, done.stderr


def test_a_job_may_use_only_its_own_resources(
    run_script: RunScript, write_input: WriteInput, vendor_dir: Path
) -> None:
    done = run_script("task_runner", "ibm_fez", str(write_input()), env=job_env(vendor_dir))
    assert done.returncode == 2
    assert "'ibm_fez' is not one of this job's resources (fv)" in done.stderr


def test_bad_input_exits_2_before_any_task(
    run_script: RunScript, vendor_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"program_id": "sampler"}')
    done = run_script("task_runner", "fv", str(bad), env=job_env(vendor_dir))
    assert done.returncode == 2
    assert f"input file {bad}: required key 'parameters' is missing" in done.stderr
    assert not vendor_dir.exists() or not list(vendor_dir.iterdir())


def test_unwritable_output_directory_exits_2_before_any_task(
    run_script: RunScript, write_input: WriteInput, vendor_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "no-such-dir" / "out.json"
    done = run_script("task_runner", "fv", str(write_input()), str(output), env=job_env(vendor_dir))
    assert done.returncode == 2
    assert "does not exist" in done.stderr
    assert not vendor_dir.exists()


def test_usage_error_without_arguments(run_script: RunScript) -> None:
    done = run_script("task_runner")
    assert done.returncode == 2
    assert "usage: task_runner" in done.stderr


def test_srun_debug_quiet_hides_info_lines(
    run_script: RunScript, write_input: WriteInput, vendor_dir: Path
) -> None:
    quiet = run_script(
        "task_runner", "fv", str(write_input()), env=job_env(vendor_dir, SRUN_DEBUG="2")
    )
    verbose = run_script(
        "task_runner", "fv", str(write_input()), env=job_env(vendor_dir, SRUN_DEBUG="4")
    )
    assert "INFO" not in quiet.stderr
    assert "task status: Completed" in verbose.stderr
    assert filevendor.HTTP_LOG_LINE in verbose.stderr


def test_default_output_is_the_reference_s_no_line_per_poll(
    run_script: RunScript, write_input: WriteInput, vendor_dir: Path
) -> None:
    # The reference prints the task id and the result; the HTTP client's INFO line per poll
    # (root logger at INFO) made a job's stderr grow by one line a second.
    done = run_script("task_runner", "fv", str(write_input(seconds=0.5)), env=job_env(vendor_dir))
    assert done.returncode == 0, done.stderr
    assert filevendor.HTTP_LOG_LINE not in done.stderr
    assert "task status" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line] == [
        f"Task ID: {task_id_of(done.stderr)}"
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_scancel_stops_the_task_and_exits_non_zero(
    write_input: WriteInput, vendor_dir: Path, signum: int
) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "task_runner", "fv", str(write_input("hang"))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=job_env(vendor_dir),
    )
    assert proc.stderr is not None
    try:
        line = proc.stderr.readline()
        while line and not line.startswith("Task ID: "):
            line = proc.stderr.readline()
        task_id = line.removeprefix("Task ID: ").strip()
        proc.send_signal(signum)
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 128 + signum, rest
    qpu = QuantumResource("fv", filevendor.TYPE, config={"QRMI_TEST_STATE_DIR": str(vendor_dir)})
    assert qpu.task_status(task_id) == TaskStatus.Cancelled


@pytest.mark.parametrize("module", ["qrmi.tools.task_runner", "qrmi.tools.task_runner.main"])
def test_runs_as_a_module(write_input: WriteInput, vendor_dir: Path, module: str) -> None:
    # ``...task_runner.main`` is the reference's module path. Without the test vendor
    # registered, the job's type is unknown: the error says so.
    done = subprocess.run(
        [sys.executable, "-m", module, "fv", str(write_input())],
        capture_output=True,
        text=True,
        env=job_env(vendor_dir),
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown resource type 'test-file-vendor'" in done.stderr


def test_dot_env_in_the_working_directory_is_read(
    write_input: WriteInput, vendor_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("dotenv")
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / ".env").write_text(f"fv_QRMI_TEST_STATE_DIR={vendor_dir}\n")
    env = job_env(vendor_dir)
    del env["fv_QRMI_TEST_STATE_DIR"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "task_runner", "fv", str(write_input())],
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
