"""benchmarks/_gate.py: goals become verdicts from a run's ratios (no timing is measured here)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gate() -> Iterator[ModuleType]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import _gate

        yield _gate
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def results_with(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "benchmarks": [
            {"name": name, "status": "ok", "rows": bench_rows} for name, bench_rows in rows.items()
        ]
    }


def ratio_row(label: str, median: float, low: float, high: float) -> dict[str, Any]:
    return {"label": label, "ratio": {"median": median, "low": low, "high": high}}


def by_goal(checked: list[dict[str, Any]]) -> dict[str, str]:
    return {item["goal"]: item["verdict"] for item in checked}


def test_times_meet_fail_or_are_noisy_by_their_interval(gate: ModuleType) -> None:
    checked = gate.check(
        results_with(
            {
                "calls": [
                    ratio_row("`is_accessible()`", 0.8, 0.7, 0.9),
                    ratio_row("`status()`", 1.2, 1.1, 1.3),
                    ratio_row("`task_status()` of a running task", 1.05, 0.95, 1.2),
                ]
            }
        )
    )
    verdicts = by_goal(checked)
    assert verdicts["calls: `is_accessible()` ratio <= 1"] == "met"
    assert verdicts["calls: `status()` ratio <= 1"] == "failed"
    assert verdicts["calls: `task_status()` of a running task ratio <= 1"] == "noisy"
    assert verdicts["throughput: tasks/s, 8 threads ratio >= 1.5"] == "skipped"
    assert gate.failed(checked)


def test_throughput_goal_is_a_lower_bound(gate: ModuleType) -> None:
    for (median, low, high), expected in [
        ((1.6, 1.5, 1.7), "met"),
        ((1.4, 1.2, 1.55), "noisy"),
        ((1.2, 1.1, 1.3), "failed"),
    ]:
        checked = gate.check(
            results_with({"throughput": [ratio_row("tasks/s, 8 threads", median, low, high)]})
        )
        assert by_goal(checked)["throughput: tasks/s, 8 threads ratio >= 1.5"] == expected


def emulator_row(ours_ms: float) -> dict[str, Any]:
    """The Bell row of the emulator benchmark: ours ``ours_ms``, Aer 2 ms, per task."""
    ours = [(ours_ms + jitter) / 1000 for jitter in (-0.2, -0.1, 0.0, 0.1, 0.2)]
    theirs = [(2.0 + jitter) / 1000 for jitter in (-0.2, -0.1, 0.0, 0.1, 0.2)]
    row = ratio_row("Bell, 2 qubits, 1024 shots, same circuit", ours_ms / 2, 0, 9)
    return {**row, "ours": {"samples": ours}, "other": {"samples": theirs}}


def test_an_overhead_goal_is_checked_on_the_difference_of_the_samples(gate: ModuleType) -> None:
    goal = "emulator: Bell, 2 qubits, 1024 shots, same circuit overhead <= 3 ms"
    for ours_ms, expected in [(4.0, "met"), (5.1, "noisy"), (8.0, "failed")]:
        checked = gate.check(results_with({"emulator": [emulator_row(ours_ms)]}))
        assert by_goal(checked)[goal] == expected
    assert "6.00 [" in gate.summary(checked)  # milliseconds, not seconds


def test_the_reports_goal_table_gives_overheads_in_milliseconds(gate: ModuleType) -> None:
    import _report

    table = "\n".join(_report._goals(results_with({"emulator": [emulator_row(8.0)]})))

    goal = "emulator: Bell, 2 qubits, 1024 shots, same circuit overhead <= 3 ms"
    assert f"| {goal} | 6.00 [" in table and "] ms | failed |" in table


def test_a_run_without_rows_fails_nothing(gate: ModuleType) -> None:
    checked = gate.check({"benchmarks": []})
    assert {item["verdict"] for item in checked} == {"skipped"}
    assert not gate.failed(checked)


def test_the_command_rechecks_a_results_file(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(results_with({"calls": [ratio_row("`status()`", 2.0, 1.8, 2.2)]})))
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "_gate.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "failed" in done.stdout and "`status()`" in done.stdout
