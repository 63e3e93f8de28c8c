"""The benchmark gate: the goals of issue 14 as checks on a run's results.

Each goal names a row of a benchmark (by the start of its label) and the bound its ratio must
keep: ``at_most`` for times (ours / theirs, below 1 is faster), ``at_least`` for throughput.
Runs on a shared machine are noisy, so a goal *fails* only when the row's whole bootstrap 95%
interval is past the bound (clearly regressed); when the median is past the bound but the
interval still reaches it, the verdict is ``noisy`` (reported, not failed). A goal whose row is
missing (benchmark skipped, no reference) is ``skipped``.

    .venv/bin/python benchmarks/run.py --quick --gate      # = make bench-quick
    .venv/bin/python benchmarks/_gate.py RESULTS.json       # check an earlier run again
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _stats import difference


@dataclass(frozen=True)
class Goal:
    """``benchmark``'s row whose label starts with ``row`` keeps its ratio within ``bound``
    (with ``over``: the difference of its medians, ours - theirs, at most ``bound`` seconds)."""

    benchmark: str
    row: str
    bound: float
    at_least: bool = False
    over: bool = False

    def describe(self) -> str:
        sign = ">=" if self.at_least else "<="
        if self.over:
            return f"{self.benchmark}: {self.row} overhead {sign} {self.bound * 1000:g} ms"
        return f"{self.benchmark}: {self.row} ratio {sign} {self.bound:g}"

    def measure(self, row: dict[str, Any]) -> dict[str, float]:
        """The row's ratio, or its difference (from its samples) for an ``over`` goal."""
        if not self.over:
            ratio: dict[str, float] = row["ratio"]
            return ratio
        return difference(row["ours"]["samples"], row["other"]["samples"])


GOALS = (
    Goal("startup", '`python -c "import qrmi"`', 1.0),
    Goal("startup", "`task_runner --help`", 1.0),
    # qrmi --help under 100 ms: pass takes ~20 ms on an idle machine, so 5x `python -c pass`.
    Goal("startup", "`qrmi --help`", 5.0),
    Goal("calls", "`is_accessible()`", 1.0),
    Goal("calls", "`status()`", 1.0),
    Goal("calls", "`task_status()` of a finished task", 1.0),
    Goal("calls", "`task_status()` of a running task", 1.0),
    Goal("calls", "`task_result()` of a finished task", 1.0),
    Goal("time_to_result", "Bell, 100 shots, ≈10 ms", 1.0),
    Goal("time_to_result", "pyqrmi over the server-side time, ≈10 ms", 1.0),
    Goal("throughput", "tasks/s, 8 threads", 1.5, at_least=True),
    # Issue 14, item 4: tiny tasks at most 3 ms over raw Aer, 12 qubits and more at most 1.1x.
    Goal("emulator", "Bell, 2 qubits, 1024 shots, same circuit", 0.003, over=True),
    Goal("emulator", "Bell, 2 qubits, 1024 shots, a new circuit", 0.003, over=True),
    Goal("emulator", "GHZ, 12 qubits, 4096 shots, same circuit", 1.1),
    Goal("emulator", "GHZ, 12 qubits, 4096 shots, a new circuit", 1.1),
    Goal("emulator", "18 qubits, 6 ry+cx layers, 4096 shots, same circuit", 1.1),
    Goal("emulator", "18 qubits, 6 ry+cx layers, 4096 shots, a new circuit", 1.1),
)


def _find_row(results: dict[str, Any], goal: Goal) -> dict[str, Any] | None:
    for bench in results.get("benchmarks", []):
        if bench.get("name") != goal.benchmark or bench.get("status") != "ok":
            continue
        for row in bench.get("rows", []):
            if str(row.get("label", "")).startswith(goal.row) and row.get("ratio"):
                found: dict[str, Any] = row
                return found
    return None


def verdict(goal: Goal, ratio: dict[str, float]) -> str:
    """``met``, ``noisy`` (median past the bound, interval not) or ``failed``."""
    median, low, high = ratio["median"], ratio["low"], ratio["high"]
    if goal.at_least:
        if median >= goal.bound:
            return "met"
        return "noisy" if high >= goal.bound else "failed"
    if median <= goal.bound:
        return "met"
    return "noisy" if low <= goal.bound else "failed"


def check(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal with its measured ratio and verdict (``met``/``noisy``/``failed``/``skipped``)."""
    checked = []
    for goal in GOALS:
        row = _find_row(results, goal)
        if row is None:
            checked.append({"goal": goal.describe(), "verdict": "skipped", "ratio": None})
            continue
        measured = goal.measure(row)
        checked.append(
            {"goal": goal.describe(), "verdict": verdict(goal, measured), "ratio": measured}
        )
    return checked


def summary(checked: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`check`'s answer."""
    return "\n".join(
        f"{item['verdict']:>8}  {measured_text(item):>20}  {item['goal']}" for item in checked
    )


def measured_text(item: dict[str, Any]) -> str:
    """What one goal of :func:`check` measured: ``median [low, high]``, in ms for overheads."""
    ratio = item["ratio"]
    if not ratio:
        return "-"
    scale, unit = (1000, " ms") if "overhead" in item["goal"] else (1, "")
    return (
        f"{ratio['median'] * scale:.2f} [{ratio['low'] * scale:.2f}, "
        f"{ratio['high'] * scale:.2f}]{unit}"
    )


def failed(checked: list[dict[str, Any]]) -> bool:
    """Whether any goal clearly regressed past its bound."""
    return any(item["verdict"] == "failed" for item in checked)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} RESULTS.json", file=sys.stderr)
        return 2
    checked = check(json.loads(Path(argv[1]).read_text()))
    print(summary(checked))
    return 1 if failed(checked) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
