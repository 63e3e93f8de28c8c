"""docs/accounting.md: its ``bash`` blocks, in order, run as written against the store of a
gateway that ran jobs of two users in two accounts; what they print and write is checked
against the document and the store. Its table of backends matches the backends' code."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.conftest import bell
from qrmi.backends.base import Backend
from qrmi.cli.gateway import _DEFAULT_STORE
from qrmi.gateway.client import finish_job, start_job
from qrmi.gateway.testing import LocalGateway
from qrmi.models import TaskStatus
from qrmi.registry import BUILTIN_BACKENDS, backend_class
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon

DOC = Path(__file__).resolve().parents[2] / "docs" / "accounting.md"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's"),
    pytest.mark.skipif(shutil.which("date") is None, reason="needs date"),
]


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def _run(gateway: LocalGateway, munge: MungeDaemon, job_id: str, who: dict[str, str]) -> str:
    _, variables = start_job(
        gateway.url, job_id, 1000, ["emu"], 3600, munge_socket=munge.socket, accounting=who
    )
    qpu = QuantumResource("emu", "local-emulator", environ=variables)
    task = qpu.task_start(bell(shots=50))
    assert qpu.task_wait(task, 60) == TaskStatus.Completed
    finish_job(gateway.url, job_id, munge_socket=munge.socket)
    return task


def test_the_commands_run_as_written(
    gateway: LocalGateway, munge: MungeDaemon, tmp_path: Path
) -> None:
    task = _run(gateway, munge, "4242", {"user": "alice", "account": "physics"})
    _run(gateway, munge, "4243", {"user": "bob", "account": "chemistry"})
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "STORE": str(gateway.directory / "gateway.db"),
        "COLUMNS": "250",
    }
    script = "set -euo pipefail\n" + "\n".join(_blocks("bash"))

    done = subprocess.run(
        ["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert task in done.stdout and "physics" in done.stdout and "chemistry" in done.stdout
    (documented,) = (json.loads(block) for block in _blocks("json"))
    job = json.loads((tmp_path / "job-4242.json").read_text())
    assert [t["task_id"] for t in job["tasks"]] == [task]
    assert set(job["tasks"][0]) == set(documented["tasks"][0])
    assert set(job["total"]) == set(documented["total"])
    assert job["tasks"][0]["source"] == "vendor-running"  # the emulator's own start and end
    rows = list(csv.DictReader((tmp_path / "qpu-usage.csv").open()))
    assert [(row["qpu"], row["tasks"]) for row in rows] == [("emu", "2")]
    totals = json.loads((tmp_path / "account-usage.json").read_text())
    assert {row["account"] for row in totals["totals"]} == {"physics", "chemistry"}
    assert (tmp_path / "qpu-time.png").read_bytes()[:4] == b"\x89PNG"


def test_the_store_named_is_the_gateways_default() -> None:
    (setting,) = _blocks("sh")

    assert setting.strip() == f"STORE={_DEFAULT_STORE}"


def test_the_backend_table_says_which_backends_report_usage() -> None:
    text = DOC.read_text()
    rows = dict(
        re.findall(r"^\| `([a-z-]+)` \|.*\| `(vendor|vendor-running|gateway)` \|$", text, re.M)
    )
    current = {name for name in BUILTIN_BACKENDS if name != "qiskit-runtime-service"}

    assert set(rows) == current
    for name, source in rows.items():
        reports = backend_class(name).task_usage is not Backend.task_usage
        assert reports == (source != "gateway"), name
