"""``benchmarks/run.py`` end to end in its quick form: it writes the results JSON and the report.

No timing is asserted: only that the files exist with the expected content and sections.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    command = [
        sys.executable,
        str(RUNNER),
        "--quick",
        "--no-reference",
        "--only",
        "startup,calls",
        "--results-dir",
        str(out / "results"),
        "--docs-dir",
        str(out / "docs"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    return done, out


@pytest.mark.slow
def test_quick_run_succeeds(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    done, _ = quick_run
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_results_json_has_machine_versions_and_samples(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    [path] = list((out / "results").glob("*.json"))
    results = json.loads(path.read_text())
    assert results["mode"] == "quick"
    assert {"cpu_model", "cpu_count", "kernel", "python"} <= set(results["machine"])
    assert results["implementations"]["pyqrmi"]["pyqrmi"]
    assert results["implementations"]["reference"] is None
    assert "--no-reference" in results["implementations"]["reference_reason"]
    by_name = {bench["name"]: bench for bench in results["benchmarks"]}
    assert list(by_name) == ["startup", "calls"]
    assert all(bench["status"] == "ok" for bench in by_name.values())
    calls = {row["label"]: row for row in by_name["calls"]["rows"]}
    assert set(calls) == {
        "`is_accessible()`",
        "`status()`",
        "`task_status()` of a finished task",
        "`task_status()` of a running task",
        "`task_result()` of a finished task",
    }
    for row in calls.values():
        assert row["other"] is None and row["ratio"] is None  # no reference: no ratio
        assert row["ours"]["n"] == len(row["ours"]["samples"]) > 0
        assert row["ours"]["median"] <= row["ours"]["p90"]
    cli = next(r for r in by_name["startup"]["rows"] if r["label"] == "`qrmi --help`")
    assert cli["ratio"]["low"] <= cli["ratio"]["median"] <= cli["ratio"]["high"]


@pytest.mark.slow
def test_report_has_sections_tables_and_plot(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, out = quick_run
    report = (out / "docs" / "benchmarks.md").read_text()
    for heading in (
        "# Benchmarks: pyqrmi side by side with the reference",
        "## Machine and versions",
        "## 1. Start-up time of commands",
        "## 2. Per-call latency against the IBM Quantum System fake",
    ):
        assert heading in report
    assert "| case | pyqrmi median | pyqrmi p90 | compared with |" in report
    assert "No reference columns" in report
    assert "reference qrmi (not run)" in report
    assert "![ratios pyqrmi / other, per benchmark](benchmarks.png)" in report
    assert (out / "docs" / "benchmarks.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_regenerating_the_report_keeps_the_soak_section(
    quick_run: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path
) -> None:
    _, out = quick_run
    [results_path] = list((out / "results").glob("*.json"))
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from _report import render
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "benchmarks.md").write_text("# old report\n\n## Soak\n\n250 jobs, all checks passed\n")
    text = render(json.loads(results_path.read_text()), docs).read_text()
    assert "# old report" not in text
    assert "## Machine and versions" in text
    assert text.endswith("\n## Soak\n\n250 jobs, all checks passed\n")
