"""Throughput of many concurrent short tasks on one resource, from threads.

For 1, 8 and 64 threads, each thread loops: ``task_start`` a Bell task (≈10 ms of server-side work),
poll ``task_status`` every ``POLL_SECONDS`` until final, ``task_result``; the same loop in both
implementations (``_driver.py``). pyqrmi's threads share one ``QuantumResource``; the
reference cannot share an object between threads (pyo3 raises "Already borrowed"), so each of
its threads has its own. The fake runs in a process of its own (``ibm_fake_process``: httptools,
``LightS3``, results reused for equal inputs, OpenMP threads that sleep), with as many execution
lanes as the most threads, so that neither its lanes nor its CPU set the pace: the CPU per task
of the fake and of each client is reported beside the rates, and so are the HTTP requests per
task, counted in a separate round against an in-process fake (which records every request).

    .venv/bin/python benchmarks/bench_throughput.py [--quick] [--no-reference]
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from _common import OURS, REFERENCE, Context, drivers, ibm_fake, ibm_fake_process, result, row
from _stats import alternating

NAME = "throughput"
TITLE = "Throughput of concurrent short tasks on one resource"
THREAD_COUNTS = (1, 8, 64)
#: The thread count whose per-task latency is reported too.
LATENCY_THREADS = 8
#: Tasks of the round whose HTTP requests are counted (at ``LATENCY_THREADS`` threads).
COUNTED_TASKS = 32
#: Time given to a client's background requests (pyqrmi deletes finished jobs after the fact)
#: before and after the counted round.
SETTLE_SECONDS = 0.5
WORK_SECONDS = 0.01
POLL_SECONDS = 0.01


def run(ctx: Context) -> dict[str, object]:
    rounds = 1 if ctx.quick else 3
    rates: dict[int, dict[str, list[float]]] = {threads: {} for threads in THREAD_COUNTS}
    latencies: dict[str, list[float]] = {}
    polls: dict[str, list[int]] = {}
    # Per thread count and side: [fake CPU per task, client CPU per task, fake cores busy].
    costs: dict[int, dict[str, list[tuple[float, float, float]]]] = {
        threads: {} for threads in THREAD_COUNTS
    }
    failures: list[str] = []
    with (
        ibm_fake_process(ctx, lanes=max(THREAD_COUNTS)) as (fake, spec),
        drivers(ctx, spec) as clients,
    ):
        for side, client in clients.items():  # warm-up: one task per thread
            _round(client, side, LATENCY_THREADS, LATENCY_THREADS, fake.pid)
        for order in alternating(rounds, list(clients)):
            for threads in THREAD_COUNTS:
                tasks = _tasks(threads, ctx.quick)
                for side in order:
                    answer = _round(clients[side], side, threads, tasks, fake.pid)
                    done = max(1, answer["completed"])
                    costs[threads].setdefault(side, []).append(
                        (
                            answer["watched_cpu"] / done,
                            answer["cpu"] / done,
                            answer["watched_cpu"] / answer["elapsed"],
                        )
                    )
                    rate = answer["completed"] / answer["elapsed"]
                    rates[threads].setdefault(side, []).append(rate)
                    if threads == LATENCY_THREADS:
                        latencies.setdefault(side, []).extend(answer["latencies"])
                        polls.setdefault(side, []).extend(answer["polls"])
                    if answer["failed"]:
                        failures.append(
                            f"{side}, {threads} threads: {answer['failed']} failed, "
                            f"e.g. {answer['failures']}"
                        )
    requests = _requests_per_task(ctx)
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
        "(API, jobs, IAM, bucket) is a third process, with as many lanes as the most threads.",
        "CPU per task (median of the rounds): "
        + "; ".join(_cost_note(threads, per_side) for threads, per_side in costs.items())
        + ". The fake can serve 1/(its CPU per task) tasks/s on one core and a client can "
        "drive 1/(its CPU per task); on this 2-core machine the fake and the client running "
        "share the cores.",
        f"HTTP requests per task ({COUNTED_TASKS} tasks from {LATENCY_THREADS} threads, counted "
        "by an in-process fake: API, IAM and bucket): "
        + ", ".join(f"{side} {count:.2f}" for side, count in requests.items())
        + ".",
        _polling_ceiling(polls, rates[LATENCY_THREADS]),
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
            "QuantumResource; reference: one QuantumResource per thread; the fake runs in its "
            f"own process with {max(THREAD_COUNTS)} execution lanes and reuses the result of "
            "equal inputs (the Bell circuit is simulated once)."
        ),
        rows=rows,
        notes=notes,
        extra={"cpu_per_task": _cost_summary(costs), "requests_per_task": requests},
    )


def _requests_per_task(ctx: Context) -> dict[str, float]:
    """HTTP requests per task of each implementation in a round of ``COUNTED_TASKS`` tasks:
    the fake that counts them runs in this process, apart from the timed one (its jobs reach
    the bucket in memory, so that only the clients' requests are counted)."""
    counts: dict[str, float] = {}
    counting = ibm_fake(ctx, lanes=max(THREAD_COUNTS), direct_store=True, reuse_results=True)
    with counting as (fake, spec), drivers(ctx, spec) as clients:
        logs = (fake.log, fake.s3.log, fake.iam.log)
        for side, client in clients.items():
            _round(client, side, LATENCY_THREADS, LATENCY_THREADS)  # warm-up
            time.sleep(SETTLE_SECONDS)
            for log in logs:
                log.clear()
            answer = _round(client, side, LATENCY_THREADS, COUNTED_TASKS)
            time.sleep(SETTLE_SECONDS)
            counts[side] = sum(len(log.requests()) for log in logs) / max(1, answer["completed"])
    return counts


def _polling_ceiling(polls: dict[str, list[int]], rates: dict[str, list[float]]) -> str:
    """What the polling grid allows any client at ``LATENCY_THREADS`` threads: a task seen
    final at its n-th status call has slept n - 1 times, so it took at least that many polls."""
    calls = {side: statistics.median(counts) for side, counts in polls.items() if counts}
    fewest = min(calls.values(), default=1)
    note = (
        f"status calls per task, {LATENCY_THREADS} threads (median): "
        + ", ".join(f"{side} {count:g}" for side, count in calls.items())
        + "."
    )
    if fewest < 2:
        return note
    floor = (fewest - 1) * POLL_SECONDS
    note += (
        f" With a sleep of {POLL_SECONDS * 1000:g} ms between calls, a task took at least "
        f"{floor * 1000:g} ms, so no client could complete more than {LATENCY_THREADS} / "
        f"{floor * 1000:g} ms = {LATENCY_THREADS / floor:.0f} tasks/s from {LATENCY_THREADS} "
        "threads"
    )
    if rates.get(REFERENCE):
        note += f" (1.5x the reference's rate: {1.5 * statistics.median(rates[REFERENCE]):.0f})"
    return note + "."


def _cost_note(threads: int, per_side: dict[str, list[tuple[float, float, float]]]) -> str:
    parts = []
    for side, samples in per_side.items():
        fake, client, busy = (statistics.median(s[i] for s in samples) for i in range(3))
        parts.append(
            f"{side} client {client * 1000:.1f} ms, fake {fake * 1000:.1f} ms "
            f"(fake {busy:.2f} cores busy)"
        )
    return f"{threads} thread{'s' if threads > 1 else ''}: " + ", ".join(parts)


def _cost_summary(
    costs: dict[int, dict[str, list[tuple[float, float, float]]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """Medians for the results file: seconds of CPU per task and the fake's busy cores."""
    return {
        str(threads): {
            side: {
                "fake_cpu_per_task": statistics.median(s[0] for s in samples),
                "client_cpu_per_task": statistics.median(s[1] for s in samples),
                "fake_cores_busy": statistics.median(s[2] for s in samples),
            }
            for side, samples in per_side.items()
        }
        for threads, per_side in costs.items()
    }


def _tasks(threads: int, quick: bool) -> int:
    """Tasks per round: 20 per thread (4 for the largest counts), so that a round lasts long
    enough (about half a second) for its first and last tasks, when fewer threads are busy,
    to weigh little: with 8 tasks per thread, 8-thread rounds of the same client varied by
    1.4x in one run."""
    if quick:
        return max(16, threads)
    return max(32, threads * (4 if threads >= 64 else 20))


def _round(client: Any, side: str, threads: int, tasks: int, watch: int = 0) -> dict[str, Any]:
    """One round; the driver measures its own CPU and the fake's (``watch``) while timed."""
    command = {
        "watch": watch,
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
