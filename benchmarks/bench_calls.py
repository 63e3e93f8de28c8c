"""Per-call latency of ``is_accessible``, ``status``, ``task_status`` and ``task_result`` on
loopback (``task_status`` of a finished and of a running task).

Both implementations talk HTTP to the same IBM Quantum System fake, each from a client
process of its own Python (``_driver.py``), in alternating rounds.

    .venv/bin/python benchmarks/bench_calls.py [--quick] [--no-reference]
"""

from __future__ import annotations

import sys

from _common import OURS, REFERENCE, Context, drivers, ibm_fake, result, row
from _stats import alternating

NAME = "calls"
TITLE = "Per-call latency against the IBM Quantum System fake"
CALLS = ("is_accessible", "status", "task_status", "task_status_running", "task_result")
LABELS = {
    "task_status": "`task_status()` of a finished task",
    "task_status_running": "`task_status()` of a running task",
    "task_result": "`task_result()` of a finished task",
}


def run(ctx: Context) -> dict[str, object]:
    rounds, per_round = (4, 10) if ctx.quick else (40, 20)
    samples: dict[str, dict[str, list[float]]] = {call: {} for call in CALLS}
    requests: dict[str, dict[str, float]] = {call: {} for call in CALLS}
    with ibm_fake(ctx) as (fake, spec), drivers(ctx, spec) as clients:
        for side, client in clients.items():  # warm-up: token, connection, a finished task
            for call in CALLS:
                client.request({"op": "calls", "call": call, "n": 5})
                fake.log.clear()
                client.request({"op": "calls", "call": call, "n": 5})
                requests[call][side] = len(fake.log) / 5
        for order in alternating(rounds, list(clients)):
            for side in order:
                for call in CALLS:
                    answer = clients[side].request({"op": "calls", "call": call, "n": per_round})
                    samples[call].setdefault(side, []).extend(answer["samples"])
    rows = [
        row(
            LABELS.get(call, f"`{call}()`"),
            samples[call][OURS],
            samples[call].get(REFERENCE),
            "reference qrmi",
            note=_requests_note(requests[call]),
        )
        for call in CALLS
    ]
    return result(
        NAME,
        TITLE,
        method=(
            f"{rounds} alternating rounds of {per_round} back-to-back calls per call and "
            "implementation, after 5 warm-up calls; one client process per implementation, "
            "each started from its own virtual environment; one resource object per client."
        ),
        rows=rows,
        notes=[] if ctx.reference.available else [f"reference skipped: {ctx.reference.reason}"],
    )


def _requests_note(per_call: dict[str, float]) -> str:
    """How many HTTP requests one call made, per implementation (counted by the fake)."""
    return "HTTP requests per call: " + ", ".join(
        f"{side} {count:g}" for side, count in per_call.items()
    )


if __name__ == "__main__":
    from _common import standalone

    sys.exit(standalone(run))
