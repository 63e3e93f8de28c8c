"""``qrmi run`` and ``qrmi task``: results, reasons and the documented exit codes."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qrmi import Payload, QuantumResource, TaskStatus, registry
from qrmi.cli import app
from tools import filevendor
from tools.conftest import SECRET, WriteInput

runner = CliRunner()
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="checks what root refuses to do")


def qrmi(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def task_id_of(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("Task ID: ")]
    assert len(lines) == 1, stderr
    return lines[0].removeprefix("Task ID: ").strip()


def vendor(vendor_dir: Path) -> QuantumResource:
    return QuantumResource("fv", filevendor.TYPE, config={"QRMI_TEST_STATE_DIR": str(vendor_dir)})


def test_run_prints_the_result_on_stdout_and_progress_on_stderr(
    config_file: Path, write_input: WriteInput
) -> None:
    code, out, err = qrmi("run", "fv", write_input("complete", 0.3), "--config", config_file)
    assert code == 0, err
    assert json.loads(out)["echo"] == {"behaviour": "complete", "seconds": 0.3}
    task_id_of(err)
    assert "Completed" in err
    assert SECRET not in out + err


def test_run_writes_the_output_file(
    config_file: Path, write_input: WriteInput, tmp_path: Path
) -> None:
    output = tmp_path / "result.json"
    code, out, err = qrmi("run", "fv", write_input(), "-o", output, "-c", config_file)
    assert code == 0, err
    assert out == ""
    assert json.loads(output.read_text())["program_id"] == "sampler"
    assert f"result written to {output}" in err


def test_run_json_summary(config_file: Path, write_input: WriteInput) -> None:
    code, out, err = qrmi("run", "fv", write_input(), "-c", config_file, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["status"] == "Completed"
    assert summary["result"]["program_id"] == "sampler"
    assert summary["task_id"] == task_id_of(err)


def test_failed_task_exits_1_with_the_reason(config_file: Path, write_input: WriteInput) -> None:
    code, out, err = qrmi("run", "fv", write_input("fail"), "-c", config_file)
    assert code == 1
    assert out == ""
    assert filevendor.FAILURE_REASON in err


def test_timeout_exits_4_and_leaves_the_task_running(
    config_file: Path, write_input: WriteInput, vendor_dir: Path
) -> None:
    code, _, err = qrmi("run", "fv", write_input("hang"), "-c", config_file, "--timeout", "0.3")
    assert code == 4
    task_id = task_id_of(err)
    assert "keeps running" in " ".join(err.split())
    assert vendor(vendor_dir).task_status(task_id) == TaskStatus.Running

    code, _, err = qrmi("task", "result", "fv", task_id, "-c", config_file)
    assert code == 4
    assert "the task is Running" in err

    code, _, err = qrmi("task", "cancel", "fv", task_id, "-c", config_file)
    assert code == 0
    assert "cancelled" in err
    code, out, _ = qrmi("task", "status", "fv", task_id, "-c", config_file)
    assert (code, out.strip()) == (0, "Cancelled")
    code, _, err = qrmi("task", "result", "fv", task_id, "-c", config_file)
    assert code == 3
    assert "cancelled" in err


def test_task_commands_on_a_completed_task(
    config_file: Path, write_input: WriteInput, tmp_path: Path
) -> None:
    _, _, err = qrmi("run", "fv", write_input(), "-c", config_file)
    task_id = task_id_of(err)

    code, out, _ = qrmi("task", "status", "fv", task_id, "-c", config_file, "--json")
    assert (code, json.loads(out)["status"]) == (0, "Completed")
    code, out, _ = qrmi("task", "result", "fv", task_id, "-c", config_file)
    assert (code, json.loads(out)["program_id"]) == (0, "sampler")
    code, out, _ = qrmi("task", "logs", "fv", task_id, "-c", config_file)
    assert (code, out.strip()) == (0, "all good")

    code, _, err = qrmi("task", "cancel", "fv", task_id, "-c", config_file)
    assert code == 0
    assert "already finished (Completed); nothing to cancel" in err
    code, out, _ = qrmi("task", "result", "fv", task_id, "-c", config_file)
    assert code == 0, "cancelling a completed task keeps its result"


def test_result_of_a_failed_task_exits_1(config_file: Path, write_input: WriteInput) -> None:
    _, _, err = qrmi("run", "fv", write_input("fail"), "-c", config_file)
    task_id = task_id_of(err)
    code, _, err = qrmi("task", "result", "fv", task_id, "-c", config_file)
    assert code == 1
    assert "the task failed" in err
    code, out, _ = qrmi("task", "logs", "fv", task_id, "-c", config_file)
    assert out.strip() == filevendor.FAILURE_REASON


def test_unknown_task_id_exits_2(config_file: Path) -> None:
    code, _, err = qrmi("task", "status", "fv", "task-nope", "-c", config_file)
    assert code == 2
    assert "task task-nope not found" in err


def test_unknown_resource_exits_2_and_lists_the_known_ones(
    config_file: Path, write_input: WriteInput
) -> None:
    code, _, err = qrmi("run", "ibm_fez", write_input(), "-c", config_file)
    assert code == 2
    assert "unknown resource 'ibm_fez'" in err
    assert "broken, fv" in err


def test_invalid_input_exits_2_without_starting_a_task(
    config_file: Path, tmp_path: Path, vendor_dir: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"program_id": "sampler", "parameters": 7}')
    code, _, err = qrmi("run", "fv", bad, "-c", config_file)
    assert code == 2
    assert "'parameters' must be a JSON object" in " ".join(err.split())
    assert not vendor_dir.exists()


def test_missing_arguments_are_a_usage_error() -> None:
    code, _, _ = qrmi("run")
    assert code == 2


# ----- -o PATH never writes into, or replaces, anything but a regular file -----------------


def test_output_fifo_is_refused_before_any_task(
    config_file: Path, write_input: WriteInput, tmp_path: Path, vendor_dir: Path
) -> None:
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    code, _, err = qrmi("run", "fv", write_input(), "-o", fifo, "-c", config_file)
    assert code == 2
    assert f"output {fifo} is a FIFO (named pipe); name a regular file" in " ".join(err.split())
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not vendor_dir.exists(), "no task may start"


@root_only
def test_output_device_is_refused(
    config_file: Path, write_input: WriteInput, tmp_path: Path
) -> None:
    device = tmp_path / "null"  # a private /dev/null: a failing run must not replace the real one
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    code, _, err = qrmi("run", "fv", write_input(), "-o", device, "-c", config_file)
    assert code == 2
    assert f"output {device} is a character device" in " ".join(err.split())
    assert stat.S_ISCHR(os.lstat(device).st_mode)


@root_only
def test_output_symlink_is_refused_as_root(
    config_file: Path, write_input: WriteInput, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    code, _, err = qrmi("run", "fv", write_input(), "-o", link, "-c", config_file)
    assert code == 2
    assert f"output {link} is a symbolic link; as root, name the file itself" in " ".join(
        err.split()
    )
    assert link.is_symlink() and victim.read_text() == "precious"


@root_only
def test_output_under_a_users_symlinked_directory_is_refused_as_root(
    config_file: Path, write_input: WriteInput, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "root-only"
    elsewhere.mkdir()
    link = tmp_path / "results"
    link.symlink_to(elsewhere)
    os.lchown(link, 65534, 65534)
    code, _, err = qrmi("run", "fv", write_input(), "-o", link / "out.json", "-c", config_file)
    assert code == 2
    assert f"output directory {link} is a symbolic link owned by uid 65534" in " ".join(err.split())
    assert list(elsewhere.iterdir()) == []


def test_output_keeps_the_mode_of_the_file_it_replaces(
    config_file: Path, write_input: WriteInput, tmp_path: Path
) -> None:
    output = tmp_path / "out.json"
    output.write_text("old")
    output.chmod(0o640)
    code, _, err = qrmi("run", "fv", write_input(), "-o", output, "-c", config_file)
    assert code == 0, err
    assert stat.S_IMODE(output.stat().st_mode) == 0o640
    assert json.loads(output.read_text())["program_id"] == "sampler"


class FifoAppearsVendor(filevendor.FileVendorBackend):
    """Someone puts a FIFO where the result goes while the task runs."""

    fifo: Path

    def fetch_result(self, task_id: str) -> str:
        os.mkfifo(self.fifo)
        return super().fetch_result(task_id)


def test_a_fifo_created_during_the_run_is_not_written_into(
    write_input: WriteInput, tmp_path: Path, vendor_dir: Path
) -> None:
    FifoAppearsVendor.fifo = tmp_path / "out.json"
    config = vendor_config(tmp_path, vendor_dir, "test-fifo-appears", FifoAppearsVendor)
    code, _, err = qrmi("run", "fv", write_input(), "-o", FifoAppearsVendor.fifo, "-c", config)
    assert code == 2
    assert "is a FIFO (named pipe)" in err
    assert stat.S_ISFIFO(os.lstat(FifoAppearsVendor.fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.json")] == []


# ----- --timeout covers the whole run: submission, waiting, result ------------------------

_vendor_answers = threading.Event()


@pytest.fixture
def slow_vendor() -> Iterator[threading.Event]:
    """Vendor calls that block until the test ends (or 30 s: a run without a deadline ends)."""
    _vendor_answers.clear()
    yield _vendor_answers
    _vendor_answers.set()


class HangingSubmitVendor(filevendor.FileVendorBackend):
    def submit(self, payload: Payload) -> str:
        _vendor_answers.wait(30)
        return super().submit(payload)


class HangingResultVendor(filevendor.FileVendorBackend):
    def fetch_result(self, task_id: str) -> str:
        _vendor_answers.wait(30)
        return super().fetch_result(task_id)


def vendor_config(tmp_path: Path, vendor_dir: Path, kind: str, backend: type) -> Path:
    registry.register(kind, backend, replace=True)
    env = {"QRMI_TEST_STATE_DIR": str(vendor_dir)}
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps({"resources": [{"name": "fv", "type": kind, "environment": env}]}))
    return path


def test_timeout_covers_a_submission_that_never_answers(
    slow_vendor: threading.Event, write_input: WriteInput, tmp_path: Path, vendor_dir: Path
) -> None:
    config = vendor_config(tmp_path, vendor_dir, "test-hanging-submit", HangingSubmitVendor)
    code, _, err = qrmi("run", "fv", write_input(), "-c", config, "--timeout", "0.5")
    assert code == 4
    assert "submitting the task to fv did not answer within 0.5 s" in " ".join(err.split())


def test_timeout_covers_fetching_the_result(
    slow_vendor: threading.Event, write_input: WriteInput, tmp_path: Path, vendor_dir: Path
) -> None:
    config = vendor_config(tmp_path, vendor_dir, "test-hanging-result", HangingResultVendor)
    code, out, err = qrmi("run", "fv", write_input(), "-c", config, "--timeout", "0.5")
    assert code == 4
    assert out == ""
    task_id = task_id_of(err)
    assert f"task {task_id} completed, but its result did not arrive within 0.5 s" in " ".join(
        err.split()
    )
    slow_vendor.set()
    code, out, _ = qrmi("task", "result", "fv", task_id, "-c", config)
    assert (code, json.loads(out)["program_id"]) == (0, "sampler"), "the result is kept"
