"""Time to result of short tasks: ``SamplerV2(qrmi).run([bell]).result()``, ours vs the reference.

Both implementations' Qiskit samplers run against the same IBM Quantum System fake, from client
processes of their own virtual environments (``_driver.py``), in alternating rounds. The task
holds the fake QPU for about 10 ms or 200 ms of "server-side work" (the input option
``options.emulator.min_duration_seconds``, which the fake honours). The Bell circuit is
transpiled once, outside the timed region; a timed run covers serialising the input,
``task_start``, waiting (each implementation's own polling) and decoding the result. The first
run of each client is a warm-up and is not counted. (The local emulator's time to result is in
``bench_emulator.py``, against qiskit-aer.)

The fake also says how long each job took on its side, from the ``POST /v1/jobs`` it received
to the job becoming final (reading the input from S3, holding the QPU, simulating, writing
results and logs to S3): the *server-side time*. A row "pyqrmi over the server-side time" gives
the median of (time to result - server-side time) per task, i.e. what the client adds: export,
upload, submission, the wait past the end of the job, download and decoding.

    .venv/bin/python benchmarks/time_to_result.py [--quick] [--no-reference] [--setup-ref]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import (
    OURS,
    REFERENCE,
    Context,
    Reference,
    drivers,
    find_reference,
    ibm_fake,
    result,
    row,
    setup_reference,
)
from _stats import alternating

NAME = "time_to_result"
TITLE = "Time to result of short tasks through the Qiskit SamplerV2"
SHOTS = 100
#: Server-side work per task, in seconds: what the fake QPU is held for.
WORK_SECONDS = (0.01, 0.2)


#: The client's own time over the server-side time that the goal allows (issue 14).
CLIENT_BUDGET_SECONDS = 0.020


@contextmanager
def server_side_times(fake: Any) -> Iterator[list[float]]:
    """Seconds from each ``POST /v1/jobs`` the fake receives to that job becoming final,
    appended to the yielded list as jobs end (the fake's own clock)."""
    durations: list[float] = []
    lock = threading.Lock()
    original = fake.state.finish

    def finish(job: Any, status: str, **reason: Any) -> bool:
        moved: bool = original(job, status, **reason)
        if moved:
            ended = time.time()
            for request in fake.requests("/v1/jobs", "POST"):
                if json.loads(request.body or b"{}").get("id") == job.id:
                    with lock:
                        durations.append(ended - request.received_at)
                    break
        return moved

    fake.state.finish = finish
    try:
        yield durations
    finally:
        fake.state.finish = original


def run(ctx: Context) -> dict[str, object]:
    rounds, per_round = (1, 2) if ctx.quick else (6, 4)
    samples: dict[float, dict[str, list[float]]] = {seconds: {} for seconds in WORK_SECONDS}
    server: dict[float, dict[str, list[float]]] = {seconds: {} for seconds in WORK_SECONDS}
    with ibm_fake(ctx) as (fake, spec), drivers(ctx, spec) as clients:
        for client in clients.values():  # warm-up: target, transpiling, first task
            client.request({"op": "sampler", "seconds": 0, "shots": SHOTS, "n": 1})
        for order in alternating(rounds, list(clients)):
            for seconds in WORK_SECONDS:
                for side in order:
                    command = {"op": "sampler", "seconds": seconds, "shots": SHOTS, "n": per_round}
                    fake.clear()
                    with server_side_times(fake) as durations:
                        answer = clients[side].request(command, timeout=60 + 10 * per_round)
                    samples[seconds].setdefault(side, []).extend(answer["samples"])
                    server[seconds].setdefault(side, []).extend(durations)
    rows = []
    for seconds in WORK_SECONDS:
        rows.append(
            row(
                f"Bell, {SHOTS} shots, ≈{seconds * 1000:g} ms server-side work",
                samples[seconds][OURS],
                samples[seconds].get(REFERENCE),
                "reference qrmi",
                note=_server_note(server[seconds]),
            )
        )
        rows.append(
            row(
                f"pyqrmi over the server-side time, ≈{seconds * 1000:g} ms work",
                _overheads(samples[seconds][OURS], server[seconds][OURS]),
                [CLIENT_BUDGET_SECONDS],
                f"the goal: {CLIENT_BUDGET_SECONDS * 1000:g} ms",
                note="time to result minus the fake's time for the same task",
            )
        )
    notes = [
        "pyqrmi's RuntimeJobV2.result() polls adaptively (a few ms first, backing off); the "
        "reference's polls task_status once a second, so its time to result is about 1 s or "
        "more for any short task."
    ]
    if not ctx.reference.available:
        notes.append(f"reference skipped: {ctx.reference.reason}")
    return result(
        NAME,
        TITLE,
        method=(
            f"{rounds} alternating rounds of {per_round} runs per work duration and "
            "implementation, after one warm-up run per client; one SamplerV2 per client."
        ),
        rows=rows,
        notes=notes,
    )


def _overheads(times: list[float], server_times: list[float]) -> list[float]:
    """Time to result minus the server-side time of the same task (in the order they ran)."""
    return [t - s for t, s in zip(times, server_times, strict=False)] or times


def _server_note(per_side: dict[str, list[float]]) -> str:
    return "server-side time (fake), median: " + ", ".join(
        f"{side} {statistics.median(values) * 1000:.1f} ms"
        for side, values in per_side.items()
        if values
    )


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference")
    parser.add_argument("--setup-ref", action="store_true", help="create benchmarks/.venv-ref")
    args = parser.parse_args(argv)
    if args.no_reference:
        reference = Reference(None, "--no-reference")
    else:
        reference = setup_reference(print) if args.setup_ref else find_reference()
    with tempfile.TemporaryDirectory(prefix="qrmi-bench-") as workdir:
        ctx = Context(quick=args.quick, reference=reference, workdir=Path(workdir))
        print(json.dumps(run(ctx), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
