"""docs/backends/oqtopus.md works as written: ``qrmi fake serve oqtopus --port N`` prints the
settings, and the raw QRMI example, run with them exported, prints Bell-state counts."""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.slow  # two Python processes, one importing Qiskit

DOC = Path(__file__).resolve().parents[3] / "docs" / "backends" / "oqtopus.md"
SECTION = "## Example: a raw QRMI flow on the fake"


def example_code() -> str:
    """The first ``python`` block of the example section."""
    text = DOC.read_text()
    section = text[text.index(SECTION) :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no python block under {SECTION!r} in {DOC}"
    return match.group(1)


def serve_command() -> list[str]:
    """The documented ``qrmi fake serve`` command, as argv."""
    text = DOC.read_text()
    match = re.search(r"\$ (qrmi fake serve oqtopus --port \d+)", text)
    assert match is not None, "the example no longer starts the fake with qrmi fake serve"
    return match.group(1).split()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "QRMI_" not in k}


@pytest.fixture
def exported() -> Iterator[dict[str, str]]:
    """Run the documented serve command (on a free port); yield the variables it exports."""
    argv = serve_command()
    argv[-1] = str(free_port())  # the documented port may be taken on a shared machine
    qrmi = Path(sys.executable).with_name("qrmi")
    proc = subprocess.Popen(
        [str(qrmi), *argv[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        variables = {}
        for line in proc.stdout:
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").strip().partition("=")
                variables[key] = value
            if line.startswith("press Ctrl-C"):
                break
        yield variables
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)


def test_the_documented_example_runs_on_the_served_fake(
    exported: dict[str, str], tmp_path: Path
) -> None:
    assert exported["anemone_QRMI_OQTOPUS_API_TOKEN"] == "fake-token-id.fake-oqtopus-secret"
    script = tmp_path / "oqtopus_example.py"
    script.write_text(example_code())

    completed = subprocess.run(
        [sys.executable, str(script)],
        env={**clean_env(), **exported},
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    out = completed.stdout
    assert "accessible: True" in out
    assert "qubits: 64" in out
    assert "TaskStatus.Completed" in out
    counts = ast.literal_eval(out.split("counts: ")[1].strip())
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 500


def test_the_documented_command_line_run_prints_the_counts(tmp_path: Path) -> None:
    from qrmi.testing.oqtopus import OqtopusFake

    text = DOC.read_text()
    section = text[text.index("## From the command line") :]
    job = re.search(r"```json\n(.*?)```", section, re.DOTALL)
    command = re.search(r"\$ (qrmi run .*)", section)
    assert job is not None and command is not None
    (tmp_path / "bell_oqtopus.json").write_text(job.group(1))
    argv = command.group(1).split()
    qrmi = Path(sys.executable).with_name("qrmi")

    with OqtopusFake(seed=4) as fake:
        config = {"resources": [fake.resource_config()]}
        (tmp_path / "qrmi_config.json").write_text(json.dumps(config))
        completed = subprocess.run(
            [str(qrmi), *argv[1:]],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )

    assert completed.returncode == 0, completed.stderr[-3000:]
    counts = json.loads(completed.stdout)["sampling"]["counts"]
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 1000
