"""What ``--qpu`` adds to a Slurm job: delegates to ``benchmarks/slurm_overhead.py``.

That script starts a throwaway Slurm cluster (root and Debian's Slurm packages needed) and
times ``srun true`` against ``srun --qpu=emu true`` (free license) and back-to-back jobs on a
1-license QPU, and a step inside a batch job with and without ``--qpu``, with the load average
during the runs. This module runs it,
reads its summary lines, and records "skipped: reason" when it cannot run here. (The
reference's Slurm side is a C SPANK plugin on a real cluster; it is not compared here.)

    .venv/bin/python benchmarks/bench_slurm.py [--quick]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Any

from _common import HERE, OUR_PYTHON, Context, result

NAME = "slurm"
TITLE = "Slurm: the cost of --qpu"
SCRIPT = HERE / "slurm_overhead.py"
NEEDED_PROGRAMS = ("srun", "sbatch", "slurmctld", "slurmd", "munged")
#: ``label  median X ms  min Y  p90 Z  n=N``, as slurm_overhead.py prints it.
SUMMARY = re.compile(
    r"^(?P<label>.+?)\s+median\s+(?P<median>[\d.]+) ms\s+min\s+(?P<min>[\d.]+)\s+"
    r"p90\s+(?P<p90>[\d.]+)\s+n=(?P<n>\d+)\s*$"
)
#: (with --qpu, without), as labelled by slurm_overhead.py, and how the report names them.
PAIRS = (
    ("srun --qpu=emu true", "srun true", "`srun --qpu=emu true`, free license", "`srun true`"),
    (
        "srun --qpu=emu1 true back-to-back",
        "srun true",
        "`srun --qpu=emu1 true` back to back on a 1-license QPU",
        "`srun true`",
    ),
    (
        "step in a --qpu batch job",
        "step in a batch job",
        "`srun true` step in an `sbatch --qpu` job",
        "step in a plain batch job",
    ),
)


def why_not_runnable() -> str:
    """Empty when the delegate can run here, else the reason it cannot."""
    if not SCRIPT.exists():
        return f"{SCRIPT.name} does not exist yet"
    if os.geteuid() != 0:
        return "the Slurm test cluster needs root"
    missing = [p for p in NEEDED_PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"Slurm programs not installed: {', '.join(missing)}"
    return ""


def run(ctx: Context) -> dict[str, object]:
    method = f"`{SCRIPT.name} --runs N` on a throwaway local Slurm cluster (interleaved runs)"
    reason = why_not_runnable()
    if reason:
        return result(NAME, TITLE, method=method, status="skipped", reason=reason)
    runs = 3 if ctx.quick else 30
    try:
        done = subprocess.run(
            [str(OUR_PYTHON), str(SCRIPT), "--runs", str(runs)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            cwd=str(HERE.parent),
        )
    except subprocess.TimeoutExpired:
        return result(NAME, TITLE, method=method, status="failed", reason="timed out after 600 s")
    if done.returncode != 0:
        status = "skipped" if done.returncode == 2 else "failed"
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        return result(NAME, TITLE, method=method, status=status, reason=last[0][:500])
    summaries = parse(done.stdout)
    rows = [summary_row(summaries, *pair) for pair in PAIRS if pair[0] in summaries]
    return result(
        NAME,
        TITLE,
        method=method.replace("N", str(runs)),
        rows=rows,
        notes=[
            *(
                line
                for line in done.stdout.splitlines()
                if line.startswith(("cluster up", "load average", "added by"))
            ),
            f"{SCRIPT.name} prints summaries, not samples: the ratios have no interval.",
            "The QPUs are local emulators configured as the admin guide says "
            '(`"environment": {}`, one license each, no store made beforehand); their acquire '
            "and release are SQLite writes: against a vendor the acquire/release calls' own "
            "latency comes on top.",
            "added by --qpu: the median over rounds of the --qpu run minus the same round's "
            "`srun true`.",
        ],
    )


def parse(output: str) -> dict[str, dict[str, float]]:
    """The summary lines of slurm_overhead.py's output, in seconds, by label."""
    found = {}
    for line in output.splitlines():
        match = SUMMARY.match(line.strip())
        if match:
            found[match["label"].strip()] = {
                "n": int(match["n"]),
                "median": float(match["median"]) / 1000,
                "p90": float(match["p90"]) / 1000,
                "min": float(match["min"]) / 1000,
            }
    return found


def summary_row(
    summaries: dict[str, dict[str, float]], qpu: str, plain: str, label: str, other_name: str
) -> dict[str, Any]:
    """A table row from summaries only (the delegate prints no raw samples: no interval)."""
    ours, other = summaries[qpu], summaries.get(plain)
    return {
        "label": label,
        "unit": "s",
        "higher_is_better": False,
        "kind": "baseline",
        "ours": ours,
        "other_name": other_name,
        "other": other,
        "ratio": {"median": ours["median"] / other["median"]} if other else None,
        "note": f"median added by --qpu: {(ours['median'] - other['median']) * 1000:+.1f} ms"
        if other
        else "",
    }


if __name__ == "__main__":
    from _common import standalone

    sys.exit(standalone(run))
