"""The short soak (``benchmarks/soak.py --short``): ~35 jobs with every fate through a live
Slurm while the IBM fake injects faults; every end-state check of its summary must pass."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qrmi_soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(900)
def test_short_soak_leaks_nothing_and_loses_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the Slurm test cluster needs root")
    soak = _load_soak()
    report = tmp_path / "soak.json"
    code = soak.main(["--short", "--quiet", "--seed", "3", "--report", str(report)])
    if code == soak.EXIT_UNAVAILABLE:
        pytest.skip("the Slurm test cluster cannot run here")
    summary = json.loads(report.read_text())
    failed = [f"{c['name']}: {c['detail']}" for c in summary["checks"] if not c["ok"]]
    assert not failed, failed
    assert code == 0
    assert summary["jobs"] == sum(summary["fates"].values()) >= 30
    assert set(summary["fates"]) >= {"normal", "cancel", "timeout", "inaccessible"}
    assert sum(summary["faults"].values()) > 0
