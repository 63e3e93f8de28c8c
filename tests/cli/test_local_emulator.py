"""End to end on the local emulator: real processes sharing one task store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qrmi import Config, QuantumResource, TaskStatus
from tools.conftest import clean_env

pytest.importorskip("qiskit_aer")
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "inputs"
BELL = 'OPENQASM 3.0; include "stdgates.inc"; bit[2] c; qubit[2] q; h q[0]; cx q[0], q[1]; '
BELL += "c[0] = measure q[0]; c[1] = measure q[1];"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    environment = {"QRMI_LOCAL_STATE_DIR": str(tmp_path / "state"), "QRMI_LOCAL_IDLE_SECONDS": "2"}
    path = tmp_path / "qrmi_config.json"
    path.write_text(
        json.dumps(
            {"resources": [{"name": "local", "type": "local-emulator", "environment": environment}]}
        )
    )
    return path


def qrmi(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qrmi.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=timeout,
    )


def task_id_of(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("Task ID: ")]
    assert len(lines) == 1, stderr
    return lines[0].removeprefix("Task ID: ").strip()


def counts(result_text: str) -> dict[str, int]:
    try:
        from qiskit_ibm_runtime.json import RuntimeDecoder
    except ImportError:  # qiskit-ibm-runtime < 0.48
        from qiskit_ibm_runtime.utils.json import RuntimeDecoder

    result = json.loads(result_text, cls=RuntimeDecoder)
    return dict(result[0].data.c.get_counts())


def emulator(config: Path) -> QuantumResource:
    rdef = Config.load(config).get("local")
    return QuantumResource("local", rdef.resource_type, config=rdef.environment)


def test_bell_sampler_counts_and_result_from_another_process(config: Path) -> None:
    done = qrmi("run", "local", EXAMPLES / "bell_sampler.json", "--config", config)
    assert done.returncode == 0, done.stderr
    bell = counts(done.stdout)
    assert sum(bell.values()) == 1024
    assert set(bell) <= {"00", "11"}

    again = qrmi("task", "result", "local", task_id_of(done.stderr), "--config", config)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == json.loads(done.stdout)


def test_bell_estimator(config: Path) -> None:
    done = qrmi("run", "local", EXAMPLES / "bell_estimator.json", "-c", config, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "Completed"
    assert summary["result"]["__type__"] == "PrimitiveResult"


def test_failed_task_exits_1_with_the_reason(config: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    circuit = 'OPENQASM 3.0; include "stdgates.inc"; qubit[1] q; frobnicate q[0];'
    bad.write_text(
        json.dumps(
            {"program_id": "sampler", "parameters": {"pubs": [[circuit, None, 8]], "version": 2}}
        )
    )
    done = qrmi("run", "local", bad, "-c", config)
    assert done.returncode == 1
    assert "frobnicate" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_run_cancels_the_task(config: Path, tmp_path: Path, signum: int) -> None:
    held = tmp_path / "held.json"
    parameters = {
        "pubs": [[BELL, None, 16]],
        "version": 2,
        "options": {"emulator": {"min_duration_seconds": 60}},
    }
    held.write_text(json.dumps({"program_id": "sampler", "parameters": parameters}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "qrmi.cli", "run", "local", str(held), "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    assert proc.stderr is not None
    try:
        task_id = task_id_of(proc.stderr.readline())
        _wait_until_running(emulator(config), task_id)
        proc.send_signal(signum)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 128 + signum, rest
    status = qrmi("task", "status", "local", task_id, "-c", config)
    assert status.stdout.strip() == "Cancelled"


def _wait_until_running(qpu: QuantumResource, task_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while qpu.task_status(task_id) != TaskStatus.Running:
        assert time.monotonic() < deadline, "the emulator never started the task"
        time.sleep(0.05)
