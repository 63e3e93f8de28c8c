"""Client driver run by *either* implementation's Python: ours (``.venv``) or the reference
(``benchmarks/.venv-ref``), so both pay the same interpreter and process costs.

It only uses the API the two share (``qrmi.QuantumResource.from_config``, ``qrmi.Payload``,
``qrmi.primitives.ibm``) and the standard library; qiskit is imported only by the sampler op.

    python benchmarks/_driver.py SPEC.json

``SPEC.json`` is ``{"name": backend, "settings": {unprefixed settings}}``. The driver then reads
one JSON command per line on stdin and answers one JSON line on stdout (other output goes to
stderr, so that nothing a library prints can break the protocol):

* ``{"op": "hello"}`` -> implementation, versions;
* ``{"op": "calls", "call": C, "n": N}`` -> ``samples``, for C in ``is_accessible``,
  ``status``, ``task_status`` and ``task_result`` (of a finished task) and
  ``task_status_running`` (of a task that holds the QPU for 10 minutes; stopped at ``quit``);
* ``{"op": "sampler", "seconds": S, "shots": K, "n": N}`` -> ``samples`` (time to result of
  ``SamplerV2.run([bell]).result()`` for a task holding the QPU ``S`` seconds);
* ``{"op": "throughput", "threads": T, "tasks": M, "seconds": S, "poll": P, "share": bool,
  "watch": PID?}`` -> ``elapsed``, ``completed``, ``failed``, ``latencies``, ``cpu`` (this
  process's CPU seconds over the timed region) and ``watched_cpu`` (process PID's, if given);
* ``{"op": "quit"}``.

Any failure answers ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings
from typing import Any, NamedTuple

# An ISA circuit of fake_perth (physical qubits, basis gates; h = rz sx rz), so that the
# circuit is valid on the device as it is: IBM's services (and their fakes) refuse others.
BELL_QASM3 = (
    'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] meas;\n'
    "rz(pi/2) $0;\nsx $0;\nrz(pi/2) $0;\ncx $0, $1;\nmeas[0] = measure $0;\nmeas[1] = measure $1;\n"
)
FINAL_STATUSES = ("Completed", "Failed", "Cancelled")
DEADLINE_SECONDS = 120.0


def implementation() -> dict[str, str]:
    """Which package ``qrmi`` is here, with the versions that matter."""
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

    ours = version("pyqrmi") != "absent"
    return {
        "implementation": "pyqrmi" if ours else "qrmi",
        "version": version("pyqrmi" if ours else "qrmi"),
        "qiskit": version("qiskit"),
        "qiskit-ibm-runtime": version("qiskit-ibm-runtime"),
        "python": sys.version.split()[0],
    }


class Client:
    """The resource(s) of one driver and the state its ops keep between commands."""

    def __init__(self, name: str, settings: dict[str, str]) -> None:
        self.name = name
        self.settings = settings
        self.resource = self.new_resource()
        self.finished_task: str | None = None
        self.running_task: str | None = None
        self.isa_circuit: Any = None

    def new_resource(self) -> Any:
        import qrmi

        return qrmi.QuantumResource.from_config(
            self.name, qrmi.ResourceType.IBMQuantumSystem, self.settings
        )

    # ----- raw QRMI calls ---------------------------------------------------------------

    def calls(self, call: str, n: int) -> list[float]:
        target = self.call_target(call)
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            target()
            samples.append(time.perf_counter() - started)
        return samples

    def call_target(self, call: str) -> Any:
        if call == "is_accessible":
            return self.resource.is_accessible
        if call == "status":
            return self.resource.status
        if call == "task_status":
            task_id = self.task_id()
            return lambda: self.resource.task_status(task_id)
        if call == "task_result":
            task_id = self.task_id()
            return lambda: self.resource.task_result(task_id)
        if call == "task_status_running":
            task_id = self.long_task_id()
            return lambda: self.resource.task_status(task_id)
        raise ValueError(
            f"unknown call {call!r}: use is_accessible, status, task_status, task_result or "
            "task_status_running"
        )

    def task_id(self) -> str:
        """A finished task of this client (for ``task_status`` timings)."""
        if self.finished_task is None:
            self.finished_task = run_task(self.resource, 0.0, 0.005).task_id
        return self.finished_task

    def long_task_id(self) -> str:
        """A task of this client that keeps running (for ``task_status_running`` timings)."""
        if self.running_task is None:
            import qrmi

            params = {
                "pubs": [[BELL_QASM3, None, 16]],
                "shots": 16,
                "version": 2,
                "support_qiskit": True,
                "options": {"emulator": {"min_duration_seconds": 600}},
            }
            payload = qrmi.Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler")
            self.running_task = self.resource.task_start(payload)
        return self.running_task

    def close(self) -> None:
        """Stop the long task, if any."""
        if self.running_task is not None:
            self.resource.task_stop(self.running_task)
            self.running_task = None

    # ----- Qiskit sampler ---------------------------------------------------------------

    def sampler(self, seconds: float, shots: int, n: int) -> list[float]:
        from qrmi.primitives.ibm import SamplerV2

        isa = self.bell_isa()
        run_options = {"emulator": {"min_duration_seconds": seconds}} if seconds else {}
        sampler = SamplerV2(self.resource, options={"run_options": run_options})
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            counts = sampler.run([isa], shots=shots).result()[0].data.meas.get_counts()
            samples.append(time.perf_counter() - started)
            if sum(counts.values()) != shots:
                raise RuntimeError(f"expected {shots} shots, got {sum(counts.values())}")
        return samples

    def bell_isa(self) -> Any:
        if self.isa_circuit is None:
            from qiskit import QuantumCircuit
            from qiskit.transpiler import generate_preset_pass_manager

            from qrmi.primitives.ibm import get_target

            circuit = QuantumCircuit(2)
            circuit.h(0)
            circuit.cx(0, 1)
            circuit.measure_all()
            manager = generate_preset_pass_manager(
                optimization_level=1, target=get_target(self.resource)
            )
            self.isa_circuit = manager.run(circuit)
        return self.isa_circuit

    # ----- many tasks from threads ------------------------------------------------------

    def throughput(
        self, threads: int, tasks: int, seconds: float, poll: float, share: bool, watch: int = 0
    ) -> dict[str, Any]:
        # The reference cannot share one object between threads ("Already borrowed").
        if share:
            resources = [self.resource] * threads
        else:
            resources = [self.new_resource() for _ in range(threads)]
        for resource in resources:
            resource.is_accessible()  # token and connection, outside the timed region
        counter = iter(range(tasks))
        lock = threading.Lock()
        latencies: list[float] = []
        polls: list[int] = []
        failures: list[str] = []

        def worker(resource: Any) -> None:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                try:
                    task = run_task(resource, seconds, poll)
                except Exception as exc:  # counted and reported, never hidden
                    with lock:
                        failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    if task.status == "Completed":
                        latencies.append(task.seconds)
                        polls.append(task.polls)
                    else:
                        failures.append(task.status)

        pool = [threading.Thread(target=worker, args=(r,), daemon=True) for r in resources]
        cpu_before, watched_before = _cpu_seconds(os.getpid()), _cpu_seconds(watch)
        started = time.perf_counter()
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(DEADLINE_SECONDS)
        elapsed = time.perf_counter() - started
        return {
            "cpu": _cpu_seconds(os.getpid()) - cpu_before,
            "watched_cpu": _cpu_seconds(watch) - watched_before,
            "elapsed": elapsed,
            "completed": len(latencies),
            "failed": len(failures),
            "failures": failures[:3],
            "latencies": latencies,
            "polls": polls,
        }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far, all its threads (Linux; 0 for pid 0)."""
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Task(NamedTuple):
    """One task of :func:`run_task`: its final status, seconds taken, status calls made."""

    task_id: str
    status: str
    seconds: float
    polls: int


def run_task(resource: Any, seconds: float, poll: float) -> Task:
    """Start a Bell task, poll its status every ``poll`` seconds until final, read its result.

    The same loop for both implementations.
    """
    import qrmi

    params: dict[str, Any] = {"pubs": [[BELL_QASM3, None, 16]], "shots": 16, "version": 2}
    params["support_qiskit"] = True
    if seconds:
        params["options"] = {"emulator": {"min_duration_seconds": seconds}}
    payload = qrmi.Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler")
    started = time.perf_counter()
    task_id = resource.task_start(payload)
    deadline = started + DEADLINE_SECONDS
    status = _status_name(resource.task_status(task_id))
    polls = 1
    while status not in FINAL_STATUSES:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"task {task_id} still {status} after {DEADLINE_SECONDS} s")
        time.sleep(poll)
        status = _status_name(resource.task_status(task_id))
        polls += 1
    if status == "Completed":
        resource.task_result(task_id)
    return Task(task_id, status, time.perf_counter() - started, polls)


def _status_name(status: Any) -> str:
    # pyqrmi's TaskStatus is an IntEnum (.name); the reference's prints as TaskStatus.Completed.
    name = getattr(status, "name", None)
    return str(name) if name else str(status).rsplit(".", 1)[-1]


def handle(client: Client, command: dict[str, Any]) -> dict[str, Any]:
    op = command.get("op")
    if op == "hello":
        return implementation()
    if op == "calls":
        return {"samples": client.calls(command["call"], int(command["n"]))}
    if op == "sampler":
        samples = client.sampler(
            float(command["seconds"]), int(command["shots"]), int(command["n"])
        )
        return {"samples": samples}
    if op == "throughput":
        return client.throughput(
            int(command["threads"]),
            int(command["tasks"]),
            float(command["seconds"]),
            float(command["poll"]),
            bool(command["share"]),
            int(command.get("watch", 0)),
        )
    raise ValueError(f"unknown op {op!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} SPEC.json", file=sys.stderr)
        return 2
    # Answers go to a private copy of stdout; anything printed by libraries goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr
    warnings.simplefilter("ignore")  # the reference warns on every is_accessible()
    with open(argv[1], encoding="utf-8") as handle_:
        spec = json.load(handle_)
    client = Client(spec["name"], spec["settings"])
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("op") == "quit":
            client.close()
            break
        try:
            answer = handle(client, command)
        except Exception as exc:  # reported to the runner, which decides
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
