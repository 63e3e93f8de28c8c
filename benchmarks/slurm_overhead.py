"""What ``--qpu`` adds to a job: median ``srun --qpu=X true`` against ``srun true``.

All run on the same throwaway Slurm cluster (``qrmi.testing.slurm_cluster``, needs root and
Debian's Slurm packages) in the same run, interleaved, as an unprivileged user, with the admin
guide's emulator configuration: ``"environment": {}`` (the helper makes the emulator's store
itself; nothing is created beforehand) and one license per QPU (what ``qrmi slurm licenses``
writes by default). Each round runs, one after the other: ``srun true``, ``srun --qpu=emu
true`` and twice ``srun --qpu=emu1 true``. Two cases:

* free license: ``emu`` was last used a round earlier, so its license is free and no job
  waits for one (``srun true`` and this run each start 0.3 s after the previous job, once its
  detached release is done);
* back to back on a 1-license QPU: the second ``emu1`` job is submitted the moment the first
  one returned, so it may wait for slurmctld to free the license.

"added" is the median over rounds of (``--qpu`` time - ``srun true`` time of the same round),
which follows the machine's load better than a difference of two medians (both printed).

``srun --qpu`` pays one helper run to acquire (Python start, config, acquire, state file; the
shim passes the job's time limit and licenses, read with one ``slurm_load_job`` call, so no
``squeue`` runs) and one, detached, to release (it holds the job's lock from before Python
starts, so the Epilog waits for it instead of starting a third Python). Also measured: the
helper alone, as the shim runs it (wall and CPU time; and with the ``squeue`` fallback), and a
step launched inside a ``--qpu`` batch job, which inherits the job's variables without running
the helper. The load average is sampled every round: the machine may be shared.

    sudo .venv/bin/python benchmarks/slurm_overhead.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qrmi.backends.local_emulator.backend import default_state_dir
from qrmi.testing.slurm_cluster import ClusterUnavailable, SlurmCluster, find_checkout


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
    for extra in ([], [f"--qpu={FREE}"]):
        job = cluster.sbatch(*extra, str(script))
        cluster.wait_done(job, timeout=600)
        micros = [
            int(line.split()[1])
            for line in cluster.output(job).splitlines()
            if line.startswith("STEP ")
        ]
        results.append([m / 1e6 for m in micros[1:]])
    return results[0], results[1]


def helper_cost(cluster: SlurmCluster, runs: int) -> dict[str, tuple[list[float], list[float]]]:
    """The helper alone, run as the shim runs it (clean environment, the cluster's config, a
    held ``--qpu`` job for squeue to find): ``{command: (wall times, CPU times)}``. CPU time
    (user + system, the helper and its squeue) depends less on the machine's load."""
    job = cluster.sbatch(f"--qpu={FREE}", "--hold", "--wrap", "true")
    state = cluster.root / "helper-bench-state"
    base = [str(cluster.python), "-I", "-m", "qrmi.slurm.helper"]
    common = ["--config", str(cluster.config_path), "--state-dir", str(state), "--job", str(job)]
    acquire = [*base, "acquire", *common, "--step", "0", "--uid", "0", "--qpu", FREE]
    acquire.append("--own-allocation")
    # The job's record as the shim reads it from slurmctld (squeue's %l|%W|%S|%u|%a|%P|%v).
    from_shim = ["--job-record", f"UNLIMITED|{FREE}:1|N/A|root|root|debug|"]
    commands = {
        "acquire": [*acquire, *from_shim],
        "acquire, squeue fallback": acquire,
        "release": [*base, "release", *common],
    }
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    env["SLURM_CONF"] = str(cluster.slurm_conf)
    costs: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in commands}
    try:
        for i in range(runs + 1):
            for name, command in commands.items():
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                wall = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if done.returncode != 0:
                    raise SystemExit(f"helper {name} failed: {done.stdout.strip()}")
                if i:  # run 0 is a warm-up
                    costs[name][0].append(wall)
                    costs[name][1].append(
                        after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                    )
    finally:
        cluster.run(["scancel", str(job)])
    return costs


#: The QPUs of the run (one license each); the names are unique to this benchmark because the
#: guide's ``"environment": {}`` puts the emulator's store under root's home.
FREE, SINGLE = "qrmibench-emu", "qrmibench-emu1"


def guide_config() -> dict[str, object]:
    """The admin guide's emulator QPUs (no settings at all)."""
    return {
        "resources": [
            {"name": name, "type": "local-emulator", "environment": {}} for name in (FREE, SINGLE)
        ]
    }


#: A pause before ``srun true`` and ``srun --qpu=emu true``, so that neither is timed while the
#: detached release of the job before it still runs (it would slow one side only).
SETTLE_SECONDS = 0.3


def measure(cluster: SlurmCluster, runs: int) -> dict[str, list[float]]:
    """Interleaved rounds (round 0 is a warm-up): plain, free license, back to back; and the
    1-minute load average after each round."""
    samples: dict[str, list[float]] = {"plain": [], "free": [], "b2b": [], "load": []}
    for i in range(runs + 1):
        time.sleep(SETTLE_SECONDS)
        plain = timed(cluster, ["srun", "true"])
        time.sleep(SETTLE_SECONDS)
        free = timed(cluster, ["srun", f"--qpu={FREE}", "true"])
        timed(cluster, ["srun", f"--qpu={SINGLE}", "true"])
        b2b = timed(cluster, ["srun", f"--qpu={SINGLE}", "true"])  # right after the last one
        if i:
            samples["plain"].append(plain)
            samples["free"].append(free)
            samples["b2b"].append(b2b)
            samples["load"].append(os.getloadavg()[0])
    return samples


def added(label: str, samples: list[float], baseline: list[float]) -> str:
    """The median of the per-round differences (and the difference of the medians)."""
    paired = statistics.median(s - b for s, b in zip(samples, baseline, strict=True))
    delta = statistics.median(samples) - statistics.median(baseline)
    ratio = statistics.median(samples) / statistics.median(baseline)
    return (
        f"{label:32} {paired * 1000:+7.1f} ms   ratio {ratio:5.2f}   "
        f"(difference of the medians {delta * 1000:+.1f} ms)"
    )


def load_summary(loads: list[float]) -> str:
    ordered = sorted(loads)
    return (
        f"load average during the runs: median {statistics.median(ordered):.2f}, "
        f"min {ordered[0]:.2f}, max {ordered[-1]:.2f} ({os.cpu_count()} CPUs)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each (default 30)")
    parser.add_argument(
        "--steps-only",
        action="store_true",
        help="only the srun rounds; to compare two checkouts, run this file with each one's "
        "Python (the cluster's shim and helper come from the checkout that Python imports)",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="qrmi-slurm-bench-", dir="/tmp"))  # runs may overlap
    root.chmod(0o755)
    cluster = SlurmCluster(guide_config(), root=root)  # one license per QPU, as the guide
    try:
        started = time.perf_counter()
        cluster.start()
        print(f"cluster up in {time.perf_counter() - started:.2f} s ({len(cluster.nodes)} nodes)")
        print(f"checkout: {find_checkout()}")
        print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
        samples = measure(cluster, args.runs)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(load_summary(samples["load"]))
        print(summary("srun true", samples["plain"]))
        print(summary("srun --qpu=emu true", samples["free"]))
        print(summary("srun --qpu=emu1 true back-to-back", samples["b2b"]))
        print(added("added by --qpu, free license", samples["free"], samples["plain"]))
        print(added("added by --qpu, back-to-back", samples["b2b"], samples["plain"]))
        if args.steps_only:
            return 0
        for name, (wall, cpu) in helper_cost(cluster, min(args.runs, 20)).items():
            print(summary(f"helper {name} (wall)", wall))
            print(summary(f"helper {name} (CPU)", cpu))
        step_plain, step_qpu = inner_steps(cluster, min(args.runs, 20))
        print(summary("step in a batch job", step_plain))
        print(summary("step in a --qpu batch job", step_qpu))
    except ClusterUnavailable as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        return 2
    finally:
        cluster.cleanup()
        for name in (FREE, SINGLE):  # the guide's config put the stores under root's home
            shutil.rmtree(default_state_dir(name, {}), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
