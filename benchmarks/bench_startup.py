"""Start-up time of the commands a job or an admin runs, as whole processes.

Compared in pairs, in rotating order within each round:

* ``python -c pass`` of both virtual environments: the control (same interpreter, ratio ≈ 1);
* ``python -c "import qrmi"`` and ``task_runner --help``: ours vs the reference;
* ``qrmi --help`` and the Slurm helper (``python -I -m qrmi.slurm.helper --help``, as the SPANK
  shim runs it): ours vs ``python -c pass`` (the reference has no such Python entry; its Slurm
  side is C).

Bytecode caches are allowed (``PYTHONDONTWRITEBYTECODE`` is removed for these processes, and
warm-up runs write the caches), as on an installed system.

    .venv/bin/python benchmarks/bench_startup.py [--quick] [--no-reference]
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from _common import OUR_PYTHON, Context, result, row
from _stats import alternating, time_call

NAME = "startup"
TITLE = "Start-up time of commands"
BASELINE = "`python -c pass`"


def commands(ctx: Context) -> dict[str, list[str]]:
    """Every command to time, by key ``side:what``."""
    ours_bin = OUR_PYTHON.parent
    found = {
        "ours:pass": [str(OUR_PYTHON), "-c", "pass"],
        "ours:import": [str(OUR_PYTHON), "-c", "import qrmi"],
        "ours:task_runner": [str(ours_bin / "task_runner"), "--help"],
        "ours:cli": [str(ours_bin / "qrmi"), "--help"],
    }
    if importlib.util.find_spec("qrmi.slurm.helper") is not None:
        found["ours:slurm_helper"] = [str(OUR_PYTHON), "-I", "-m", "qrmi.slurm.helper", "--help"]
    if ctx.reference.python is not None:
        ref_python = ctx.reference.python
        found["ref:pass"] = [str(ref_python), "-c", "pass"]
        found["ref:import"] = [str(ref_python), "-c", "import qrmi"]
        found["ref:task_runner"] = [str(ref_python.parent / "task_runner"), "--help"]
    return found


def run(ctx: Context) -> dict[str, object]:
    runs = 3 if ctx.quick else 40
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    todo = commands(ctx)
    for command in todo.values():  # warm-up: page cache and bytecode caches
        _timed(command, env)
        _timed(command, env)
    samples: dict[str, list[float]] = {key: [] for key in todo}
    for order in alternating(runs, list(todo)):
        for key in order:
            samples[key].append(_timed(todo[key], env))
    notes = [
        f"modules loaded by `import qrmi`: pyqrmi {_modules(OUR_PYTHON, env)}"
        + (f", reference {_modules(ctx.reference.python, env)}" if ctx.reference.python else "")
        + " (`python -c pass` loads "
        + f"{_modules(OUR_PYTHON, env, 'sys')})"
    ]
    if "ours:slurm_helper" not in todo:
        notes.append("Slurm helper skipped: qrmi.slurm.helper is not installed")
    if not ctx.reference.available:
        notes.append(f"reference skipped: {ctx.reference.reason}")
    return result(
        NAME,
        TITLE,
        method=(
            f"{runs} runs of each command in rotating order after two warm-up runs; wall "
            "time of the whole process (fork, exec, interpreter, imports, output to a pipe)."
        ),
        rows=_rows(samples),
        notes=notes,
    )


def _rows(samples: dict[str, list[float]]) -> list[dict[str, object]]:
    def ref(key: str) -> list[float] | None:
        return samples.get(f"ref:{key}")

    rows = [
        row(BASELINE + " (control)", samples["ours:pass"], ref("pass"), "reference qrmi venv"),
        row('`python -c "import qrmi"`', samples["ours:import"], ref("import"), "reference qrmi"),
        row(
            "`task_runner --help`",
            samples["ours:task_runner"],
            ref("task_runner"),
            "reference qrmi",
        ),
        row("`qrmi --help`", samples["ours:cli"], samples["ours:pass"], BASELINE),
    ]
    if "ours:slurm_helper" in samples:
        rows.append(
            row(
                "`python -I -m qrmi.slurm.helper --help`",
                samples["ours:slurm_helper"],
                samples["ours:pass"],
                BASELINE,
            )
        )
    return rows


def _timed(command: list[str], env: dict[str, str]) -> float:
    def launch() -> None:
        subprocess.run(command, env=env, capture_output=True, check=True, timeout=60)

    return time_call(launch)


def _modules(python: Path | None, env: dict[str, str], module: str = "qrmi") -> int:
    code = f"import sys, {module}; print(len(sys.modules))"
    done = subprocess.run(
        [str(python), "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return int(done.stdout.strip())


if __name__ == "__main__":
    from _common import standalone

    sys.exit(standalone(run))
