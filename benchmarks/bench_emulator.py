"""The local emulator against qiskit-aer called directly, on the same circuits.

pyqrmi: ``SamplerV2(QuantumResource("local-emulator")).run([circuit]).result()``, i.e. OpenQASM
3 export, the SQLite task store, the (warm) worker daemon running qiskit-aer, the result's
JSON encoding and decoding. Direct: ``qiskit_aer.primitives.SamplerV2().run([circuit])
.result()`` in the benchmark's process. The ratio is the price of running through QRMI; the
difference (ours - aer) is the overhead per task in absolute terms.

    .venv/bin/python benchmarks/bench_emulator.py [--quick]
"""

from __future__ import annotations

import functools
import random
import sys
from collections.abc import Callable
from typing import Any

from _common import Context, result, row
from _stats import alternating, time_call

NAME = "emulator"
TITLE = "Local emulator vs qiskit-aer called directly"
#: A 127-qubit device, so that every circuit below fits (idle qubits cost nothing).
DEVICE = "fake_sherbrooke"
AER = "qiskit-aer SamplerV2"


def circuits() -> list[tuple[str, Any, int]]:
    """``(label, circuit, shots)``: small to medium, all in standard gates."""
    from qiskit import QuantumCircuit

    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()

    ghz = QuantumCircuit(12)
    ghz.h(0)
    for qubit in range(11):
        ghz.cx(qubit, qubit + 1)
    ghz.measure_all()

    rng = random.Random(7)
    layered = QuantumCircuit(18)
    for _ in range(6):
        for qubit in range(18):
            layered.ry(rng.uniform(0, 3.14), qubit)
        for qubit in range(17):
            layered.cx(qubit, qubit + 1)
    layered.measure_all()
    return [
        ("Bell, 2 qubits, 1024 shots", bell, 1024),
        ("GHZ, 12 qubits, 4096 shots", ghz, 4096),
        ("18 qubits, 6 ry+cx layers, 4096 shots", layered, 4096),
    ]


def run(ctx: Context) -> dict[str, object]:
    from qiskit_aer.primitives import SamplerV2 as AerSampler

    from qrmi import QuantumResource
    from qrmi.backends.local_emulator import worker
    from qrmi.primitives.ibm import SamplerV2

    runs = 3 if ctx.quick else 30
    state = ctx.scratch("emulator-state")
    settings = {
        "QRMI_LOCAL_STATE_DIR": str(state),
        "QRMI_LOCAL_DEVICE": DEVICE,
        "QRMI_LOCAL_IDLE_SECONDS": "60",
    }
    ours = SamplerV2(QuantumResource.from_config("bench", "local-emulator", settings))
    aer = AerSampler()
    rows = []
    try:
        for label, circuit, shots in circuits():
            sides: dict[str, Callable[[], object]] = {
                "pyqrmi": functools.partial(_sample, ours, circuit, shots, timeout=120),
                AER: functools.partial(_sample, aer, circuit, shots),
            }
            for function in sides.values():  # warm-up: worker start, imports, caches
                function()
            samples: dict[str, list[float]] = {side: [] for side in sides}
            for order in alternating(runs, list(sides)):
                for side in order:
                    samples[side].append(time_call(sides[side]))
            rows.append(row(label, samples["pyqrmi"], samples[AER], AER, note=_overhead(samples)))
    finally:
        worker.stop_worker(state)
    return result(
        NAME,
        TITLE,
        method=(
            f"{runs} runs per circuit and side, alternating, after one warm-up run each (the "
            f"emulator's worker is started and warm); device snapshot {DEVICE}, noise-free; "
            "both sides get the same logical circuit."
        ),
        rows=rows,
    )


def _sample(sampler: Any, circuit: Any, shots: int, **result_options: float) -> object:
    return sampler.run([circuit], shots=shots).result(**result_options)


def _overhead(samples: dict[str, list[float]]) -> str:
    import statistics

    extra = statistics.median(samples["pyqrmi"]) - statistics.median(samples[AER])
    return f"median overhead {extra * 1000:+.1f} ms per task"


if __name__ == "__main__":
    from _common import standalone

    sys.exit(standalone(run))
