"""What ``--qpu`` adds to a job: median ``srun --qpu=X true`` against ``srun true``.

Both run on the same throwaway Slurm cluster (``qrmi.testing.slurm_cluster``, needs root and
Debian's Slurm packages) in the same run, interleaved, as an unprivileged user. The QPU is the
local emulator (its acquire and release are SQLite writes), with enough licenses that no job
waits for another. ``srun --qpu`` pays: one helper run to acquire (Python start, config, one
``squeue`` for the time limit, acquire, state file) and one to release. Also measured: a step
launched inside a ``--qpu`` batch job, which inherits the job's variables without the helper.

    sudo .venv/bin/python benchmarks/slurm_overhead.py [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from qrmi.testing.slurm_cluster import ClusterUnavailable, SlurmCluster


def timed(cluster: SlurmCluster, args: list[str]) -> float:
    start = time.perf_counter()
    result = cluster.as_user(args, timeout=120)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return elapsed


def summary(label: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    return (
        f"{label:32} median {statistics.median(ms):7.1f} ms   min {ms[0]:7.1f}   "
        f"p90 {p90:7.1f}   n={len(ms)}"
    )


def inner_steps(cluster: SlurmCluster, runs: int) -> tuple[list[float], list[float]]:
    """Step launch times inside a batch job with and without --qpu (measured in the job)."""
    script = cluster.work / "steps.sh"
    loop = f"for i in $(seq 0 {runs}); do"
    script.write_text(
        f"#!/bin/sh\n{loop} s=$(date +%s%N); srun -n1 true; e=$(date +%s%N); "
        "echo STEP $(( (e - s) / 1000 )); done\n"
    )
    script.chmod(0o755)
    results = []
    for extra in ([], ["--qpu=emu"]):
        job = cluster.sbatch(*extra, str(script))
        cluster.wait_done(job, timeout=600)
        micros = [
            int(line.split()[1])
            for line in cluster.output(job).splitlines()
            if line.startswith("STEP ")
        ]
        results.append([m / 1e6 for m in micros[1:]])
    return results[0], results[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each (default 30)")
    args = parser.parse_args()
    root = Path("/tmp") / f"qrmi-slurm-bench-{int(time.time())}"
    root.mkdir()
    emulator = root / "shared" / "emu"
    config = {
        "resources": [
            {
                "name": "emu",
                "type": "local-emulator",
                "environment": {"QRMI_LOCAL_STATE_DIR": str(emulator)},
            }
        ]
    }
    cluster = SlurmCluster(config, root=root, licenses={"emu": 1000})
    try:
        started = time.perf_counter()
        cluster.start()
        print(f"cluster up in {time.perf_counter() - started:.2f} s ({len(cluster.nodes)} nodes)")
        code = (
            "import sys; from qrmi.backends.local_emulator.store import TaskStore; "
            "TaskStore(sys.argv[1]).leases()"
        )
        cluster.as_user([str(cluster.python), "-c", code, str(emulator)])
        plain: list[float] = []
        qpu: list[float] = []
        for i in range(args.runs + 1):  # run 0 is a warm-up for each
            p = timed(cluster, ["srun", "true"])
            q = timed(cluster, ["srun", "--qpu=emu", "true"])
            if i:
                plain.append(p)
                qpu.append(q)
        print(summary("srun true", plain))
        print(summary("srun --qpu=emu true", qpu))
        delta = statistics.median(qpu) - statistics.median(plain)
        print(f"{'overhead of --qpu (median)':32} {delta * 1000:+7.1f} ms")
        step_plain, step_qpu = inner_steps(cluster, min(args.runs, 20))
        print(summary("step in a batch job", step_plain))
        print(summary("step in a --qpu batch job", step_qpu))
    except ClusterUnavailable as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        return 2
    finally:
        cluster.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
