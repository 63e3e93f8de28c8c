"""Time to result: the median latency of ``SamplerV2(qrmi).run([bell]).result()``.

What it measures, when available (each missing piece is skipped with a note):

1. pyqrmi on the local emulator (no network);
2. pyqrmi on the fake IBM Quantum System ("Direct Access") server of ``qrmi.testing``;
3. the reference package (PyPI ``qrmi``) on the *same* fake server, run from its own virtual
   environment ``benchmarks/.venv-ref`` (create it with ``--setup-ref``).

The circuit is transpiled once, outside the timed region; a timed run covers serialising the
input, ``task_start``, waiting and decoding the result. The first run of each client is a
warm-up and is not counted.

    .venv/bin/python benchmarks/time_to_result.py [--runs 20] [--ref-runs 5] [--setup-ref]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REF_VENV = HERE / ".venv-ref"
REF_PYTHON = REF_VENV / "bin" / "python"
REF_REQUIREMENT = "qrmi[ibm]==0.26.4"
SHOTS = 100
FAKE_BACKEND = "ibm_perth"

Row = tuple[str, list[float]]


def bell() -> Any:
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


def time_runs(run_once: Callable[[], None], runs: int) -> list[float]:
    """Latencies in seconds of ``runs`` calls, after one untimed warm-up call."""
    run_once()
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        run_once()
        latencies.append(time.perf_counter() - started)
    return latencies


def sampler_latencies(qrmi: Any, runs: int) -> list[float]:
    from qiskit.transpiler import generate_preset_pass_manager

    from qrmi.primitives.ibm import SamplerV2, get_target

    isa = generate_preset_pass_manager(optimization_level=1, target=get_target(qrmi)).run(bell())
    sampler = SamplerV2(qrmi)

    def run_once() -> None:
        counts = sampler.run([isa], shots=SHOTS).result(timeout=120)[0].data.meas.get_counts()
        assert sum(counts.values()) == SHOTS

    return time_runs(run_once, runs)


def bench_emulator(runs: int, state: Path) -> Row:
    from qrmi import QuantumResource

    config = {"QRMI_LOCAL_STATE_DIR": str(state / "emulator"), "QRMI_LOCAL_IDLE_SECONDS": "10"}
    resource = QuantumResource.from_config("local", "local-emulator", config)
    return "pyqrmi, local emulator", sampler_latencies(resource, runs)


def start_fake_ibm() -> Any:
    from qrmi.testing.ibm_quantum_system import QuantumSystemFake

    return QuantumSystemFake(devices={FAKE_BACKEND: "fake_perth"}).start()


def bench_fake_ours(fake: Any, runs: int) -> Row:
    from qrmi import QuantumResource

    resource = QuantumResource.from_config(FAKE_BACKEND, "ibm-quantum-system", fake.settings)
    return "pyqrmi, fake IBM QS", sampler_latencies(resource, runs)


# Runs inside benchmarks/.venv-ref with the reference package; prints latencies as JSON.
REFERENCE_PROGRAM = """
import json, sys, time
from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager
from qrmi import QuantumResource, ResourceType
from qrmi.primitives.ibm import SamplerV2, get_backend

runs, shots, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
qrmi = QuantumResource(name, ResourceType.IBMQuantumSystem)
qc = QuantumCircuit(2); qc.h(0); qc.cx(0, 1); qc.measure_all()
isa = generate_preset_pass_manager(optimization_level=1, target=get_backend(qrmi).target).run(qc)
sampler = SamplerV2(qrmi)
latencies = []
for i in range(runs + 1):
    started = time.perf_counter()
    counts = sampler.run([isa], shots=shots).result()[0].data.meas.get_counts()
    assert sum(counts.values()) == shots
    if i:
        latencies.append(time.perf_counter() - started)
print(json.dumps(latencies))
"""


def bench_fake_reference(fake: Any, runs: int) -> Row:
    env = dict(os.environ)
    env.update({f"{FAKE_BACKEND}_{key}": value for key, value in fake.settings.items()})
    completed = subprocess.run(
        [str(REF_PYTHON), "-c", REFERENCE_PROGRAM, str(runs), str(SHOTS), FAKE_BACKEND],
        env=env,
        capture_output=True,
        text=True,
        timeout=120 + 10 * runs,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr.strip().splitlines()[-1] if completed.stderr else "")
    return "reference qrmi, fake IBM QS", json.loads(completed.stdout.strip().splitlines()[-1])


def setup_reference() -> None:
    """Create benchmarks/.venv-ref with the reference package from PyPI."""
    if not REF_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(REF_VENV)], check=True)
    subprocess.run(
        [str(REF_PYTHON), "-m", "pip", "install", "-q", REF_REQUIREMENT], check=True, timeout=1800
    )


def report(rows: list[Row], skipped: list[str]) -> None:
    print(f"time to result of SamplerV2.run([bell], shots={SHOTS}).result()")
    print(f"{'client':32} {'runs':>5} {'median':>10} {'min':>10} {'max':>10}")
    for name, latencies in rows:
        print(
            f"{name:32} {len(latencies):>5} {_ms(statistics.median(latencies))} "
            f"{_ms(min(latencies))} {_ms(max(latencies))}"
        )
    for note in skipped:
        print(f"skipped: {note}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per pyqrmi client")
    parser.add_argument("--ref-runs", type=int, default=5, help="timed runs of the reference")
    parser.add_argument("--setup-ref", action="store_true", help=f"pip install {REF_REQUIREMENT}")
    args = parser.parse_args(argv)
    if args.setup_ref:
        setup_reference()
    rows: list[Row] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qrmi-bench-") as state:
        rows.append(bench_emulator(args.runs, Path(state)))
        try:
            fake = start_fake_ibm()
        except ImportError as exc:
            skipped.append(f"fake IBM QS server and the reference comparison ({exc})")
            fake = None
        if fake is not None:
            try:
                rows.append(bench_fake_ours(fake, args.runs))
                if not REF_PYTHON.exists():
                    skipped.append(
                        f"reference qrmi: no {REF_VENV.relative_to(HERE.parent)} "
                        "(run with --setup-ref to create it)"
                    )
                else:
                    try:
                        rows.append(bench_fake_reference(fake, args.ref_runs))
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        skipped.append(f"reference qrmi failed: {exc}")
            finally:
                fake.stop()
    report(rows, skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
