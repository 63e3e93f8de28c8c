"""Throughput of many concurrent short tasks on one resource, from threads.

Each of ``THREADS`` threads loops: ``task_start`` a Bell task (≈10 ms of server-side work),
poll ``task_status`` every ``POLL_SECONDS`` until final, ``task_result``; the same loop in both
implementations (``_driver.py``). pyqrmi's threads share one ``QuantumResource``; the
reference cannot share an object between threads (pyo3 raises "Already borrowed"), so each of
its threads has its own. The fake gets as many execution lanes as there are threads, so that
its lanes are not the limit.

    .venv/bin/python benchmarks/bench_throughput.py [--quick] [--no-reference]
"""

from __future__ import annotations

import sys
from typing import Any

from _common import OURS, REFERENCE, Context, drivers, ibm_fake, result, row
from _stats import alternating

NAME = "throughput"
TITLE = "Throughput of concurrent short tasks on one resource"
THREADS = 8
WORK_SECONDS = 0.01
POLL_SECONDS = 0.01


def run(ctx: Context) -> dict[str, object]:
    rounds, tasks = (1, 16) if ctx.quick else (8, 64)
    rates: dict[str, list[float]] = {}
    latencies: dict[str, list[float]] = {}
    failures: list[str] = []
    with ibm_fake(ctx, lanes=THREADS) as (_, spec), drivers(ctx, spec) as clients:
        for side, client in clients.items():  # warm-up: one task per thread
            _round(client, side, THREADS)
        for order in alternating(rounds, list(clients)):
            for side in order:
                answer = _round(clients[side], side, tasks)
                rates.setdefault(side, []).append(answer["completed"] / answer["elapsed"])
                latencies.setdefault(side, []).extend(answer["latencies"])
                if answer["failed"]:
                    failures.append(f"{side}: {answer['failed']} failed, e.g. {answer['failures']}")
    rows = [
        row(
            f"tasks/s, {THREADS} threads",
            rates[OURS],
            rates.get(REFERENCE),
            "reference qrmi",
            unit="tasks/s",
            higher_is_better=True,
            note="one sample per round",
        ),
        row(
            "latency of one task under that load",
            latencies[OURS],
            latencies.get(REFERENCE),
            "reference qrmi",
        ),
    ]
    notes = [
        "The fake server runs in one Python process (API, IAM, moto S3 and the simulations "
        "share one GIL), so it is likely the ceiling for both sides here: the figure shows "
        "whether one shared pyqrmi object keeps up with one reference object per thread, "
        "not either client's own limit.",
        *(f"task failures: {failure}" for failure in failures),
    ]
    if not ctx.reference.available:
        notes.append(f"reference skipped: {ctx.reference.reason}")
    return result(
        NAME,
        TITLE,
        method=(
            f"{rounds} alternating rounds of {tasks} tasks per implementation, "
            f"{THREADS} threads, ≈{WORK_SECONDS * 1000:g} ms of server-side work per task, "
            f"task_status polled every {POLL_SECONDS * 1000:g} ms; pyqrmi: one shared "
            "QuantumResource; reference: one QuantumResource per thread; the fake has "
            f"{THREADS} execution lanes."
        ),
        rows=rows,
        notes=notes,
    )


def _round(client: Any, side: str, tasks: int) -> dict[str, Any]:
    command = {
        "op": "throughput",
        "threads": THREADS,
        "tasks": tasks,
        "seconds": WORK_SECONDS,
        "poll": POLL_SECONDS,
        "share": side == OURS,
    }
    answer: dict[str, Any] = client.request(command, timeout=300)
    return answer


if __name__ == "__main__":
    from _common import standalone

    sys.exit(standalone(run))
