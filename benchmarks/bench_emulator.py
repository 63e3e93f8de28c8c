"""The local emulator against qiskit-aer called directly, on the same circuits.

pyqrmi: ``SamplerV2(QuantumResource("local-emulator")).run([circuit]).result()``, i.e. OpenQASM
3 export, the SQLite task store, the simulation (in this process for a task estimated under
50 ms, the emulator's default, else on the warm worker's lane), the result's JSON encoding and
decoding; the main rows also measure every task on the worker's lanes
(``QRMI_LOCAL_IN_PROCESS=false``). Direct: qiskit-aer's ``SamplerV2`` on an
``AerSimulator`` with the simulation method the emulator chose for that circuit (statevector or
matrix product state), in the benchmark's process, on the same circuit with the same shots. The
ratio is the price of running through QRMI; the difference (ours - aer) the overhead per task.

The main rows run circuits transpiled for the emulated device (ISA circuits, as IBM requires),
once the same circuit task after task (the emulator's parsed-circuit cache answers) and once a
new circuit each task (every text is parsed). Where each task's time goes is measured apart
(notes). The scaling rows (full runs only, or ``--scaling``) vary one thing at a time: qubits
(GHZ chain, 2 to 127, statevector up to 20 then matrix product state), shots (10^2 to 10^6;
10^6 as ten pubs of 10^5, the device's limit per pub) and tasks at the same time (1 to the
lanes), each against Aer doing the same.

    .venv/bin/python benchmarks/bench_emulator.py [--quick] [--scaling | --scaling-only]
"""

from __future__ import annotations

import functools
import json
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from _common import Context, result, row
from _stats import alternating, time_call

#: The emulator's simulation processes run Aer's OpenMP threads passive (they sleep, not spin,
#: between parallel regions) unless the environment says otherwise; Aer called directly here
#: gets the same, set before qiskit-aer loads OpenMP, so that both sides run alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

NAME = "emulator"
TITLE = "Local emulator vs qiskit-aer called directly"
#: A 127-qubit device, so that every circuit below fits (idle qubits cost nothing).
DEVICE = "fake_sherbrooke"
AER = "qiskit-aer SamplerV2, same method"
#: The emulator with QRMI_LOCAL_IN_PROCESS=false: every task on its worker's lanes.
LANES_SIDE = "pyqrmi, lanes"
LANES = 2
SCALING_QUBITS = (2, 4, 8, 12, 16, 20, 24, 32, 64, 127)
SCALING_SHOTS = (100, 1_000, 10_000, 100_000, 1_000_000)
#: Shots per pub at most (the device's ``max_shots``): more are split into pubs of this size.
MAX_SHOTS_PER_PUB = 100_000
#: Set by ``--scaling`` / ``--scaling-only`` when run alone.
SCALING: str = ""

Side = Callable[[], object]


def ghz(qubits: int) -> Any:
    from qiskit import QuantumCircuit

    circuit = QuantumCircuit(qubits)
    circuit.h(0)
    for qubit in range(qubits - 1):
        circuit.cx(qubit, qubit + 1)
    circuit.measure_all()
    return circuit


def layered(qubits: int = 18, layers: int = 6, seed: int = 7) -> Any:
    from qiskit import QuantumCircuit

    rng = random.Random(seed)
    circuit = QuantumCircuit(qubits)
    for _ in range(layers):
        for qubit in range(qubits):
            circuit.ry(rng.uniform(0, 3.14), qubit)
        for qubit in range(qubits - 1):
            circuit.cx(qubit, qubit + 1)
    circuit.measure_all()
    return circuit


def main_cases() -> list[tuple[str, Any, int]]:
    """``(label, logical circuit, shots)`` of the main rows (transpiled before use)."""
    return [
        ("Bell, 2 qubits, 1024 shots", ghz(2), 1024),
        ("GHZ, 12 qubits, 4096 shots", ghz(12), 4096),
        ("18 qubits, 6 ry+cx layers, 4096 shots", layered(), 4096),
    ]


class Sides:
    """The ways of sampling: the emulator as configured by default (small tasks simulated in
    this process), the emulator with every task on its worker's lanes, and Aer directly."""

    def __init__(self, ctx: Context) -> None:
        from qrmi.primitives.ibm import SamplerV2

        self.states = [ctx.scratch("emulator-state"), ctx.scratch("emulator-lanes-state")]
        self.resource = _emulator(self.states[0])
        self.lanes_resource = _emulator(self.states[1], QRMI_LOCAL_IN_PROCESS="false")
        self.ours = SamplerV2(self.resource)
        self.ours_lanes = SamplerV2(self.lanes_resource)
        self._aer: dict[str, Any] = {}

    def close(self) -> None:
        from qrmi.backends.local_emulator import worker

        for state in self.states:
            worker.stop_worker(state)

    def isa(self, circuit: Any) -> Any:
        """``circuit`` transpiled for the emulated device's target (seeded)."""
        from qiskit import transpile

        from qrmi.primitives.ibm import get_target

        return transpile(
            circuit, target=get_target(self.resource), optimization_level=1, seed_transpiler=7
        )

    def aer(self, method: str) -> Any:
        from qiskit_aer import AerSimulator
        from qiskit_aer.primitives import SamplerV2 as AerSampler

        if method not in self._aer:
            self._aer[method] = AerSampler.from_backend(AerSimulator(method=method))
        return self._aer[method]

    def method(self, circuits: Sequence[Any], shots: int) -> str:
        """The method the emulator chooses for these circuits (from its result's metadata)."""
        result = self.ours.run(pubs(circuits, shots)).result(timeout=600)
        return str(result[0].metadata["simulator"]["method"])

    def pair(self, circuits: Sequence[Any], shots: int, *, lanes: bool = False) -> dict[str, Side]:
        """The sides on ``circuits`` (a new one each call, cycling) with ``shots`` each; with
        ``lanes``, the emulator through its worker's lanes as well."""
        method = self.method(circuits[:1], shots)
        samplers = {"pyqrmi": self.ours, **({LANES_SIDE: self.ours_lanes} if lanes else {})}
        sides = {
            side: _cycle(circuits, functools.partial(_sample_one, sampler, shots))
            for side, sampler in samplers.items()
        }
        aer = self.aer(method)
        return {**sides, AER: _cycle(circuits, lambda c: _sample(aer, [c], shots))}


def _emulator(state: Any, **extra: str) -> Any:
    from qrmi import QuantumResource

    settings = {
        "QRMI_LOCAL_STATE_DIR": str(state),
        "QRMI_LOCAL_DEVICE": DEVICE,
        "QRMI_LOCAL_LANES": str(LANES),
        "QRMI_LOCAL_IDLE_SECONDS": "120",
        **extra,
    }
    return QuantumResource.from_config("bench", "local-emulator", settings)


def _sample_one(sampler: Any, shots: int, circuit: Any) -> object:
    return _sample(sampler, [circuit], shots, timeout=600)


def pubs(circuits: Sequence[Any], shots: int) -> list[tuple[Any, None, int]]:
    """Pubs of ``shots`` per circuit, split in pubs of at most MAX_SHOTS_PER_PUB."""
    out = []
    for circuit in circuits:
        left = shots
        while left > 0:
            out.append((circuit, None, min(left, MAX_SHOTS_PER_PUB)))
            left -= MAX_SHOTS_PER_PUB
    return out


def _sample(sampler: Any, circuits: Sequence[Any], shots: int, **result_options: float) -> object:
    return sampler.run(pubs(circuits, shots)).result(**result_options)


def _cycle(items: Sequence[Any], call: Callable[[Any], object]) -> Side:
    position = [0]

    def next_call() -> object:
        item = items[position[0] % len(items)]
        position[0] += 1
        return call(item)

    return next_call


def measure(sides: dict[str, Side], runs: int) -> dict[str, list[float]]:
    """Alternating runs of both sides after one warm-up call each."""
    for function in sides.values():
        function()
    samples: dict[str, list[float]] = {side: [] for side in sides}
    for order in alternating(runs, list(sides)):
        for side in order:
            samples[side].append(time_call(sides[side]))
    return samples


def variants(circuit: Any, count: int) -> list[Any]:
    """``count`` copies of ``circuit`` that differ in a tiny final rotation: each one's
    OpenQASM text is new to the emulator (no cache), the simulation is the same."""
    out = []
    for number in range(count):
        variant = circuit.copy()
        variant.rz(
            1e-9 * (number + 1),
            variant.qubits[_first_active(circuit)],
        )
        out.append(variant)
    return out


def _first_active(circuit: Any) -> int:
    for item in circuit.data:
        if item.operation.name not in ("barrier", "measure"):
            return circuit.find_bit(item.qubits[0]).index
    return 0


# ----- where the time goes -------------------------------------------------------------------


def phases(resource: Any, circuit: Any, shots: int, runs: int) -> dict[str, float]:
    """Median milliseconds of each step of one task, from the client's clock and the task
    store's timestamps (one host, one clock), plus the engine alone in this process. A task
    simulated in this process has no lane steps: its task_start includes the simulation."""
    from qiskit_ibm_runtime.json import RuntimeDecoder

    from qrmi.backends.local_emulator.engine import run_primitive
    from qrmi.models import Payload
    from qrmi.primitives._common import circuit_to_qasm3

    store = resource._backend.store  # the benchmark reads the timestamps it keeps
    steps: dict[str, list[float]] = {}
    params: dict[str, Any] = {}
    for number in range(runs + 1):
        began = time.time()
        text = circuit_to_qasm3(circuit, 0, "bench")
        params = {"pubs": [[text, None, shots]], "version": 2, "support_qiskit": True}
        payload = Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler")
        exported = time.time()
        task_id = resource.task_start(payload)
        started = time.time()
        resource.task_wait(task_id, 600)
        noticed = time.time()
        json.loads(resource.task_result(task_id).value, cls=RuntimeDecoder)
        done = time.time()
        task = store.get(task_id)
        assert task.started_at is not None and task.ended_at is not None
        if number == 0:
            continue  # warm-up
        if task.lane is None:  # simulated in this process, within task_start
            timeline = [
                ("task_start (checks, simulation, store write)", started - exported),
                ("task_wait", noticed - started),
            ]
        else:
            timeline = [
                ("task_start (checks, store write, wake-up)", started - exported),
                ("queue to lane", task.started_at - started),
                ("lane: simulation process + store writes", task.ended_at - task.started_at),
                ("end to the client's notice", noticed - task.ended_at),
            ]
        for name, seconds in (
            ("export to OpenQASM 3 + JSON", exported - began),
            *timeline,
            ("result read + decode", done - noticed),
            ("total", done - began),
        ):
            steps.setdefault(name, []).append(seconds * 1000)
    engine = [
        time_call(lambda: run_primitive("sampler", params, device=DEVICE)) * 1000
        for _ in range(runs)
    ]
    medians = {name: statistics.median(values) for name, values in steps.items()}
    medians["the engine alone (parse, plan, Aer, encode)"] = statistics.median(engine)
    return medians


def _phase_note(label: str, medians: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {value:.2f} ms" for name, value in medians.items())
    return f"where the time goes ({label}, medians): {parts}"


# ----- the runs ----------------------------------------------------------------------------


def run(ctx: Context) -> dict[str, object]:
    runs = 3 if ctx.quick else 30
    scaling = SCALING or ("" if ctx.quick else "with")
    sides = Sides(ctx)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        if scaling != "only":
            rows += main_rows(sides, runs, notes)
        if scaling:
            rows += scaling_rows(sides, 3 if ctx.quick else 5, notes)
    finally:
        sides.close()
    notes.append(f"load average at the end: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    return result(
        NAME,
        TITLE,
        method=(
            f"{runs} runs per circuit and side, alternating, after one warm-up run each; "
            "pyqrmi: the emulator as configured by default, which simulates tasks estimated "
            "under 50 ms in the submitting process (see the rows' notes for where each ran); "
            f"'{LANES_SIDE}': QRMI_LOCAL_IN_PROCESS=false, every task on the worker's {LANES} "
            f"lanes (started and warm); device snapshot {DEVICE}, "
            "noise-free; both sides get the same circuit (the main rows: transpiled for the "
            "device's target) and shots; Aer uses the simulation method the emulator chose; "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')} on both sides. "
            f"Load average at the start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)."
        ),
        rows=rows,
        notes=notes,
    )


def main_rows(sides: Sides, runs: int, notes: list[str]) -> list[dict[str, Any]]:
    rows = []
    lanes_rows = []
    for label, logical, shots in main_cases():
        circuit = sides.isa(logical)
        for fresh in (False, True):
            circuits = variants(circuit, runs + 2) if fresh else [circuit]
            samples = measure(sides.pair(circuits, shots, lanes=True), runs)
            name = f"{label}, {'a new circuit each task' if fresh else 'same circuit'}"
            rows.append(row(name, samples["pyqrmi"], samples[AER], AER, note=_overhead(samples)))
            lanes_rows.append(
                row(
                    f"{LANES_SIDE}: {name}",
                    samples[LANES_SIDE],
                    samples[AER],
                    AER,
                    note=_overhead(samples, side=LANES_SIDE),
                )
            )
        if "18 qubits" not in label:
            for resource, how in ((sides.resource, "default"), (sides.lanes_resource, "lanes")):
                steps = phases(resource, circuit, shots, runs)
                notes.append(_phase_note(f"{label}, {how}", steps))
    return rows + lanes_rows


def scaling_rows(sides: Sides, runs: int, notes: list[str]) -> list[dict[str, Any]]:
    rows = []
    for qubits in SCALING_QUBITS:
        samples = measure(sides.pair([ghz(qubits)], 1024), runs)
        method = sides.method([ghz(qubits)], 1024)
        label = f"scaling: qubits, GHZ {qubits} ({method}), 1024 shots"
        rows.append(row(label, samples["pyqrmi"], samples[AER], AER, note=_overhead(samples)))
    for shots in SCALING_SHOTS:
        samples = measure(sides.pair([ghz(12)], shots), runs)
        label = f"scaling: shots, GHZ 12, {shots:.0e} shots".replace("e+0", "e")
        rows.append(row(label, samples["pyqrmi"], samples[AER], AER, note=_overhead(samples)))
    for tasks in range(1, LANES + 1):
        samples = measure(concurrent_pair(sides, tasks, ghz(16), 4096), runs)
        label = f"scaling: {tasks} task(s) at once, GHZ 16, 4096 shots each"
        note = _overhead(samples, "per round")
        rows.append(row(label, samples["pyqrmi"], samples[AER], AER, note=note))
    notes.append(
        "scaling rows: time until every task of the round has its result; tasks at once: each "
        "submitted from its own thread (pyqrmi: one task each, on two threads of this process "
        "for small tasks, on the worker's lanes otherwise; Aer: one SamplerV2 run each, in "
        "threads of this process)"
    )
    return rows


def concurrent_pair(sides: Sides, tasks: int, circuit: Any, shots: int) -> dict[str, Side]:
    method = sides.method([circuit], shots)
    aer = sides.aer(method)

    def together(call: Callable[[], object]) -> Side:
        def go() -> None:
            threads = [threading.Thread(target=call) for _ in range(tasks)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        return go

    return {
        "pyqrmi": together(functools.partial(_sample, sides.ours, [circuit], shots, timeout=600)),
        AER: together(functools.partial(_sample, aer, [circuit], shots)),
    }


def _overhead(samples: dict[str, list[float]], per: str = "per task", side: str = "pyqrmi") -> str:
    extra = statistics.median(samples[side]) - statistics.median(samples[AER])
    return f"median overhead {extra * 1000:+.1f} ms {per}"


if __name__ == "__main__":
    from _common import standalone

    for flag, mode in (("--scaling-only", "only"), ("--scaling", "with")):
        if flag in sys.argv:
            sys.argv.remove(flag)
            SCALING = mode
    sys.exit(standalone(run))
