"""Fair sharing in the QRMI gateway: a small job's 5 tasks beside another job's flood of 200.

On the local emulator with 1 (or 2) execution lanes and short tasks, through a gateway served in
this process (``qrmi.gateway.testing.LocalGateway``), it measures the time from the small job's
first ``task_start`` until all 5 of its tasks are completed (each waited for by its client):

* ``alone``: the small job alone on the QPU;
* ``flood``: the small job starts right after another job started 200 tasks.

Each in three set-ups of the QPU's gateway entry:

* ``fair``: ``QRMI_GATEWAY_MAX_CONCURRENT_TASKS`` = lanes, fair sharing on (the default): tasks
  beyond the lanes wait in the gateway and jobs take turns;
* ``fifo``: the same queue, first come first served (``QRMI_GATEWAY_FAIR_SHARE=false``);
* ``direct``: no gateway capacity: every task goes to the emulator, whose own queue is FIFO
  (the gateway before fair sharing).

and prints the medians and the ratio flood/alone of each (1.0: the flood does not slow the
small job down).

    .venv/bin/python benchmarks/bench_fair_share.py [--lanes 1] [--capacity N] [--rounds 3]
        [--flood 200]

``--capacity`` (default: the lanes) is the gateway's ``QRMI_GATEWAY_MAX_CONCURRENT_TASKS``;
one more than the lanes keeps a task ready at the vendor while the gateway learns that a lane
is free.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; bit[2] c; qubit[2] q; h q[0]; cx q[0], q[1]; '
    "c = measure q;"
)
SETUPS = ("fair", "fifo", "direct")
SMALL_TASKS = 5


def short_task(seconds: float) -> Any:
    """A Bell sampler held ``seconds`` on the emulator."""
    from qrmi.models import Payload

    params = {
        "pubs": [[BELL, None, 100]],
        "version": 2,
        "options": {"emulator": {"min_duration_seconds": seconds}},
    }
    return Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler")


def config(state: Path, lanes: int, capacity: int, setup: str) -> dict[str, Any]:
    environment = {
        "QRMI_LOCAL_STATE_DIR": str(state),
        "QRMI_LOCAL_LANES": str(lanes),
        "QRMI_LOCAL_IDLE_SECONDS": "60",
    }
    if setup != "direct":
        environment["QRMI_GATEWAY_MAX_CONCURRENT_TASKS"] = str(capacity)
        environment["QRMI_GATEWAY_FAIR_SHARE"] = "true" if setup == "fair" else "false"
    return {"resources": [{"name": "emu", "type": "local-emulator", "environment": environment}]}


class Bench:
    """One gateway set-up; :meth:`small_job` times the small job, beside a flood or not."""

    def __init__(self, root: Path, state: Path, setup: str, args: argparse.Namespace) -> None:
        from qrmi.gateway.testing import LocalGateway

        options = config(state, args.lanes, args.capacity or args.lanes, setup)
        self.gateway = LocalGateway(options, root / setup).start()
        self.task_seconds = args.task_seconds
        self.jobs = 0

    def _job(self) -> tuple[str, Any]:
        from qrmi.resource import QuantumResource

        self.jobs += 1
        job_id = str(1000 + self.jobs)
        _, variables = self.gateway.open_job(job_id, qpus=["emu"])
        return job_id, QuantumResource("emu", "local-emulator", environ=variables)

    def small_job(self, flood: int) -> float:
        """Seconds for the small job's tasks, started after ``flood`` tasks of another job."""
        flood_id = None
        if flood:
            flood_id, flooder = self._job()
            for _ in range(flood):
                flooder.task_start(short_task(self.task_seconds))
        job_id, qpu = self._job()
        started = time.perf_counter()
        tasks = [qpu.task_start(short_task(self.task_seconds)) for _ in range(SMALL_TASKS)]
        for task in tasks:
            status = qpu.task_wait(task, 600)
            assert status.name == "Completed", status
        elapsed = time.perf_counter() - started
        assert self.gateway.service is not None
        self.gateway.service.finish_job(job_id)
        if flood_id is not None:  # its leftover tasks are cancelled: the next round starts clean
            self.gateway.service.finish_job(flood_id)
        return elapsed

    def stop(self) -> None:
        self.gateway.stop()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from qrmi.backends.local_emulator.worker import stop_worker

    root = Path(tempfile.mkdtemp(prefix="qrmi-bench-fair-"))
    state = root / "emulator"
    samples: dict[str, dict[str, list[float]]] = {s: {"alone": [], "flood": []} for s in SETUPS}
    try:
        for setup in SETUPS:
            bench = Bench(root, state, setup, args)
            try:
                bench.small_job(0)  # warm-up: the emulator's worker and the gateway's objects
                for _ in range(args.rounds):
                    samples[setup]["alone"].append(bench.small_job(0))
                    samples[setup]["flood"].append(bench.small_job(args.flood))
            finally:
                bench.stop()
    finally:
        stop_worker(state)
    return samples


def report(samples: dict[str, Any], args: argparse.Namespace) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"fair sharing: small job ({SMALL_TASKS} tasks of {args.task_seconds:g} s) alone vs "
        f"beside a flood of {args.flood} tasks; emulator with {args.lanes} lane(s), gateway "
        f"capacity {args.capacity or args.lanes}; "
        f"{args.rounds} round(s); load average before: {args.load_before}, after: {load}",
        f"{'set-up':<8} {'alone (s)':>10} {'flood (s)':>10} {'flood/alone':>12}",
    ]
    for setup, runs in samples.items():
        alone, beside = statistics.median(runs["alone"]), statistics.median(runs["flood"])
        lines.append(f"{setup:<8} {alone:>10.3f} {beside:>10.3f} {beside / alone:>12.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=int, default=1, help="emulator lanes (= gateway capacity)")
    parser.add_argument("--capacity", type=int, default=0, help="gateway capacity (0: lanes)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per set-up")
    parser.add_argument("--flood", type=int, default=200, help="tasks of the flooding job")
    parser.add_argument("--task-seconds", type=float, default=0.02, help="emulated task time")
    parser.add_argument("--json", action="store_true", help="print the raw samples as JSON too")
    args = parser.parse_args()
    args.load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    samples = measure(args)
    print(report(samples, args))
    if args.json:
        print(json.dumps(samples))


if __name__ == "__main__":
    main()
