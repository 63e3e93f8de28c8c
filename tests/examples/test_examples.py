"""The examples run as programs: on the local emulator from a config, and inside a QPU job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TIMEOUT = 300

pytestmark = pytest.mark.slow  # each run starts Python, imports Qiskit and an emulator worker


def clean_environment(tmp_path: Path) -> dict[str, str]:
    """No job variables, no user state: HOME and XDG_STATE_HOME point into ``tmp_path``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("QRMI_", "SLURM_")) and "_QRMI_" not in key
    }
    env["HOME"] = str(tmp_path / "home")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    return env


def with_config(tmp_path: Path) -> dict[str, str]:
    """A config file naming one local emulator with its state under ``tmp_path``."""
    config = {
        "resources": [
            {
                "name": "local",
                "type": "local-emulator",
                "environment": {
                    "QRMI_LOCAL_STATE_DIR": str(tmp_path / "emulator"),
                    "QRMI_LOCAL_IDLE_SECONDS": "5",
                },
            }
        ]
    }
    path = tmp_path / "qrmi_config.json"
    path.write_text(json.dumps(config))
    env = clean_environment(tmp_path)
    env["QRMI_CONFIG_FILE"] = str(path)
    return env


def run_example(name: str, env: dict[str, str], *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def printed_counts(output: str) -> dict[str, int]:
    match = re.search(r"^counts: (\{.*\})$", output, re.MULTILINE)
    assert match, output
    counts: dict[str, int] = json.loads(match.group(1).replace("'", '"'))
    return counts


def test_bell_sampler_prints_bell_counts(tmp_path: Path) -> None:
    output = run_example("bell_sampler.py", with_config(tmp_path))
    assert "resource: local (local-emulator)" in output
    counts = printed_counts(output)
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 1000


def test_bell_sampler_runs_unchanged_inside_a_qpu_job(tmp_path: Path) -> None:
    env = clean_environment(tmp_path)
    env.update(  # what the Slurm plugin sets for --qpu=qpu1
        {
            "QRMI_JOB_QPU_RESOURCES": "qpu1",
            "QRMI_JOB_QPU_TYPES": "local-emulator",
            "qpu1_QRMI_LOCAL_STATE_DIR": str(tmp_path / "emulator"),
            "qpu1_QRMI_LOCAL_IDLE_SECONDS": "5",
        }
    )
    output = run_example("bell_sampler.py", env)
    assert "resource: qpu1 (local-emulator)" in output
    assert set(printed_counts(output)) == {"00", "11"}


def test_bell_sampler_picks_a_resource_by_name(tmp_path: Path) -> None:
    env = with_config(tmp_path)
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "bell_sampler.py"), "missing"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert completed.returncode == 1
    assert "no accessible QPU resource named 'missing'" in completed.stderr


@pytest.mark.skipif(
    any(Path(p).exists() for p in ("/etc/slurm/qrmi_config.json", "/etc/qrmi/qrmi_config.json")),
    reason="a system-wide QRMI config exists, so the implicit local emulator is not used",
)
def test_bell_sampler_needs_no_configuration(tmp_path: Path) -> None:
    output = run_example("bell_sampler.py", clean_environment(tmp_path))
    assert "resource: local (local-emulator)" in output
    assert set(printed_counts(output)) == {"00", "11"}
    assert (tmp_path / "state" / "qrmi" / "local-emulator" / "local").is_dir()


def test_estimator_prints_bell_expectation_values(tmp_path: Path) -> None:
    output = run_example("estimator.py", with_config(tmp_path))
    assert "resource: local (local-emulator)" in output
    values = dict(re.findall(r"^<(\w+)> = ([+-]\d\.\d+)", output, re.MULTILINE))
    expected = {"ZZ": 1.0, "XX": 1.0, "YY": -1.0, "ZI": 0.0}
    assert set(values) == set(expected)
    for label, value in expected.items():
        assert abs(float(values[label]) - value) <= 0.1, output
