"""``qrmi run`` and ``qrmi task``: results, reasons and the documented exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from qrmi import QuantumResource, TaskStatus
from qrmi.cli import app
from tools import filevendor
from tools.conftest import SECRET, WriteInput

runner = CliRunner()


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
