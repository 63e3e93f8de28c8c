"""Throughput of many concurrent short tasks on one resource, from threads.

For 1, 8 and 64 threads, each thread loops: ``task_start`` a Bell task (≈10 ms of server-side work),
poll ``task_status`` every ``POLL_SECONDS`` until final, ``task_result``; the same loop in both
implementations (``_driver.py``). pyqrmi's threads share one ``QuantumResource``; the
reference cannot share an object between threads (pyo3 raises "Already borrowed"), so each of
its threads has its own. The fake gets as many execution lanes as the most threads, so that
its lanes are not the limit, and keeps the bucket in memory (``LightS3``, not moto).

    .venv/bin/python benchmarks/bench_throughput.py [--quick] [--no-reference]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

from _common import OURS, REFERENCE, Context, drivers, ibm_fake, result, row
from _stats import alternating

NAME = "throughput"
TITLE = "Throughput of concurrent short tasks on one resource"
THREAD_COUNTS = (1, 8, 64)
#: The thread count whose per-task latency is reported too.
LATENCY_THREADS = 8
WORK_SECONDS = 0.01
POLL_SECONDS = 0.01


def run(ctx: Context) -> dict[str, object]:
    rounds = 1 if ctx.quick else 3
    rates: dict[int, dict[str, list[float]]] = {threads: {} for threads in THREAD_COUNTS}
    latencies: dict[str, list[float]] = {}
    fake_cpu: dict[int, dict[str, list[float]]] = {threads: {} for threads in THREAD_COUNTS}
    failures: list[str] = []
    with ibm_fake(ctx, lanes=max(THREAD_COUNTS)) as (_, spec), drivers(ctx, spec) as clients:
        for side, client in clients.items():  # warm-up: one task per thread
            _round(client, side, LATENCY_THREADS, LATENCY_THREADS)
        for order in alternating(rounds, list(clients)):
            for threads in THREAD_COUNTS:
                tasks = _tasks(threads, ctx.quick)
                for side in order:
                    cpu_before, wall_before = _cpu_seconds(), time.perf_counter()
                    answer = _round(clients[side], side, threads, tasks)
                    fake_load = (_cpu_seconds() - cpu_before) / (time.perf_counter() - wall_before)
                    fake_cpu[threads].setdefault(side, []).append(fake_load)
                    rate = answer["completed"] / answer["elapsed"]
                    rates[threads].setdefault(side, []).append(rate)
                    if threads == LATENCY_THREADS:
                        latencies.setdefault(side, []).extend(answer["latencies"])
                    if answer["failed"]:
                        failures.append(
                            f"{side}, {threads} threads: {answer['failed']} failed, "
                            f"e.g. {answer['failures']}"
                        )
    rows = [
        row(
            f"tasks/s, {threads} thread{'s' if threads > 1 else ''}",
            rates[threads][OURS],
            rates[threads].get(REFERENCE),
            "reference qrmi",
            unit="tasks/s",
            higher_is_better=True,
            note=f"{_tasks(threads, ctx.quick)} tasks per round; one sample per round",
        )
        for threads in THREAD_COUNTS
    ]
    rows.append(
        row(
            f"latency of one task, {LATENCY_THREADS} threads",
            latencies[OURS],
            latencies.get(REFERENCE),
            "reference qrmi",
        )
    )
    notes = [
        "Each implementation's client is one process (its threads share one GIL); the fake "
        "serves the API, runs the jobs and serves the bucket (LightS3, in memory) in the "
        "runner's process, with as many lanes as the most threads.",
        "CPU of the fake's process (API, jobs, IAM, bucket; cores busy per second of the "
        "round, median): "
        + "; ".join(
            f"{threads} threads: "
            + ", ".join(f"{side} {statistics.median(v):.2f}" for side, v in per_side.items())
            for threads, per_side in fake_cpu.items()
        )
        + ". Near 1 core the fake (one Python process) is the ceiling, not the client.",
        *(f"task failures: {failure}" for failure in failures),
    ]
    if not ctx.reference.available:
        notes.append(f"reference skipped: {ctx.reference.reason}")
    return result(
        NAME,
        TITLE,
        method=(
            f"{rounds} alternating rounds per thread count ({', '.join(map(str, THREAD_COUNTS))}) "
            f"and implementation, ≈{WORK_SECONDS * 1000:g} ms of server-side work per task, "
            f"task_status polled every {POLL_SECONDS * 1000:g} ms; pyqrmi: one shared "
            "QuantumResource; reference: one QuantumResource per thread; the fake has "
            f"{max(THREAD_COUNTS)} execution lanes."
        ),
        rows=rows,
        notes=notes,
    )


def _cpu_seconds() -> float:
    """User + system CPU of this process (the fake runs in it), its threads included."""
    times = os.times()
    return times.user + times.system


def _tasks(threads: int, quick: bool) -> int:
    """Tasks per round: several per thread, one per thread for the largest counts (64 threads
    run 64 tasks at once: the round then measures one wave)."""
    if quick or threads >= 64:
        return max(16, threads)
    return max(16, threads * 4)


def _round(client: Any, side: str, threads: int, tasks: int) -> dict[str, Any]:
    command = {
        "op": "throughput",
        "threads": threads,
        "tasks": tasks,
        "seconds": WORK_SECONDS,
        "poll": POLL_SECONDS,
        "share": side == OURS,
    }
    answer: dict[str, Any] = client.request(command, timeout=600)
    return answer


if __name__ == "__main__":
    from _common import standalone

    sys.exit(standalone(run))
