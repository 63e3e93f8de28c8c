"""Run every benchmark, pyqrmi side by side with the reference, and write the report.

    make bench                                  # = .venv/bin/python benchmarks/run.py
    .venv/bin/python benchmarks/run.py --quick  # fewer runs, about a minute
    .venv/bin/python benchmarks/run.py --only calls,startup --no-reference
    .venv/bin/python benchmarks/run.py --quick --gate  # = make bench-quick: fail on a missed goal

Sets up the reference (``benchmarks/.venv-ref`` with ``qrmi[ibm]==0.26.4`` from PyPI, created
if missing; without PyPI the reference columns are skipped and the report says why), starts the
fakes on 127.0.0.1, runs the benchmarks, writes ``benchmarks/results/<timestamp>.json`` (raw
samples, machine, versions) and ``docs/benchmarks.md`` with ``docs/benchmarks.png``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import bench_calls
import bench_emulator
import bench_slurm
import bench_startup
import bench_throughput
import time_to_result
from _common import (
    HERE,
    REPO,
    Context,
    Reference,
    machine_info,
    our_versions,
    result,
    setup_reference,
    shown,
)
from _gate import check, failed, summary
from _report import render

#: In the order they run: cheap process timings first, the Slurm cluster last.
BENCHMARKS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (
        bench_startup,
        bench_calls,
        time_to_result,
        bench_throughput,
        bench_emulator,
        bench_slurm,
    )
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (about a minute)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset of: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    parser.add_argument("--docs-dir", type=Path, default=REPO / "docs")
    parser.add_argument("--note", default="", help="a sentence about this run for the report")
    parser.add_argument(
        "--gate",
        action="store_true",
        help="exit 1 when a goal of benchmarks/_gate.py is clearly missed (whole 95%% interval "
        "past its bound)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(filter(None, args.only.split(","))) - set(BENCHMARKS))
    if unknown:
        parser.error(
            f"--only: unknown benchmark(s) {', '.join(unknown)}; use {', '.join(BENCHMARKS)}"
        )
    return args


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_one(module: ModuleType, ctx: Context) -> dict[str, Any]:
    """One benchmark's result; a crash becomes a ``failed`` result, not a lost report."""
    started = time.perf_counter()
    log(f"{module.NAME}: {module.TITLE}")
    try:
        outcome: dict[str, Any] = module.run(ctx)
    except Exception as exc:  # reported in the results and the report
        traceback.print_exc()
        outcome = result(module.NAME, module.TITLE, method="", status="failed", reason=repr(exc))
    outcome["seconds"] = round(time.perf_counter() - started, 1)
    log(f"{module.NAME}: {outcome['status']} in {outcome['seconds']} s {outcome['reason']}")
    return outcome


def shared_machine_note(start: list[float], end: list[float], cores: int, note: str) -> str:
    busiest = max(start[0], end[0])
    text = (
        f"Load average (1 min) was {start[0]:.2f} at the start and {end[0]:.2f} at the end, "
        f"on {cores} cores."
    )
    if busiest > 0.5 * cores:
        text += (
            " The machine was busy with other work during the run: absolute times and p90s "
            "are inflated; the interleaved ratios are the figures to compare."
        )
    return f"{note} {text}".strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [BENCHMARKS[name] for name in args.only.split(",") if name] or list(
        BENCHMARKS.values()
    )
    wall_started = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    machine = machine_info()
    if args.no_reference:
        reference = Reference(None, "run with --no-reference")
    else:
        reference = setup_reference(log)
    log(f"reference: {reference.python or 'skipped: ' + reference.reason}")
    with tempfile.TemporaryDirectory(prefix="qrmi-bench-") as workdir:
        ctx = Context(quick=args.quick, reference=reference, workdir=Path(workdir), log=log)
        outcomes = [run_one(module, ctx) for module in selected]
    end_load = machine_info()["load_average"]
    command = shlex.join(["benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])])
    results = {
        "schema": 1,
        "command": command,
        "mode": "quick" if args.quick else "full",
        "started": started,
        "duration_seconds": round(time.perf_counter() - wall_started, 1),
        "machine": machine,
        "load_average_end": end_load,
        "shared_machine_note": shared_machine_note(
            machine["load_average"], end_load, machine["cpu_count"] or 1, args.note
        ),
        "implementations": {
            "pyqrmi": our_versions(),
            "reference": reference.versions or None,
            "reference_reason": reference.reason,
        },
        "benchmarks": outcomes,
    }
    results["gate"] = check(results)
    results_path = write_results(results, args.results_dir)
    report = render(results, args.docs_dir, results_path=shown(results_path))
    log(f"results: {shown(results_path)}; report: {shown(report)}")
    print(summary(results["gate"]), file=sys.stderr)
    if any(o["status"] == "failed" for o in outcomes):
        return 1
    if args.gate and failed(results["gate"]):
        log("gate: a goal was clearly missed (see the table above)")
        return 1
    return 0


def write_results(results: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
