"""Time to result of short tasks: ``SamplerV2(qrmi).run([bell]).result()``, ours vs the reference.

Both implementations' Qiskit samplers run against the same IBM Quantum System fake, from client
processes of their own virtual environments (``_driver.py``), in alternating rounds. The task
holds the fake QPU for about 10 ms or 200 ms of "server-side work" (the input option
``options.emulator.min_duration_seconds``, which the fake honours). The Bell circuit is
transpiled once, outside the timed region; a timed run covers serialising the input,
``task_start``, waiting (each implementation's own polling) and decoding the result. The first
run of each client is a warm-up and is not counted. (The local emulator's time to result is in
``bench_emulator.py``, against qiskit-aer.)

    .venv/bin/python benchmarks/time_to_result.py [--quick] [--no-reference] [--setup-ref]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

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


def run(ctx: Context) -> dict[str, object]:
    rounds, per_round = (1, 2) if ctx.quick else (6, 4)
    samples: dict[float, dict[str, list[float]]] = {seconds: {} for seconds in WORK_SECONDS}
    with ibm_fake(ctx) as (_, spec), drivers(ctx, spec) as clients:
        for client in clients.values():  # warm-up: target, transpiling, first task
            client.request({"op": "sampler", "seconds": 0, "shots": SHOTS, "n": 1})
        for order in alternating(rounds, list(clients)):
            for seconds in WORK_SECONDS:
                for side in order:
                    command = {"op": "sampler", "seconds": seconds, "shots": SHOTS, "n": per_round}
                    answer = clients[side].request(command, timeout=60 + 10 * per_round)
                    samples[seconds].setdefault(side, []).extend(answer["samples"])
    rows = [
        row(
            f"Bell, {SHOTS} shots, ≈{seconds * 1000:g} ms server-side work",
            samples[seconds][OURS],
            samples[seconds].get(REFERENCE),
            "reference qrmi",
        )
        for seconds in WORK_SECONDS
    ]
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


def main(argv: list[str] | None = None) -> int:
    import json

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
