"""Small tasks simulated in the submitting process instead of the worker's lanes.

A lane costs a task a few milliseconds whatever its size: the hand-over to the worker, the pipe
to the lane's simulation process, the store writes and the wake-up of the waiting client. A
task that Aer runs in a few milliseconds is therefore run where it is submitted, when

* its estimated simulation time is under :data:`MAX_SECONDS` (noise free, every pub a dense
  statevector of at most :data:`MAX_QUBITS` active qubits: see ``engine.small_job_seconds``), so
  that the lanes' time and memory budgets, their kill on timeout and on ``task_stop`` are never
  needed; and
* this process has the simulator imported already, or no worker runs for the state directory:
  importing it here (a fraction of a second) is then cheaper than starting a worker (seconds);
  and
* the task's budgets are not tighter than :data:`MIN_MEMORY_MB` and :data:`MIN_TIMEOUT_SECONDS`
  (tighter ones are enforced, which only the lanes can do).

``task_start`` returns once the task has ended; it is recorded in the task store like any other
(status, result, logs, usage), so every process sees it. Simulations run on a few threads of
this module that live as long as the process (qiskit must not be used from threads that come
and go, and each keeps one OpenMP team). The setting ``QRMI_LOCAL_IN_PROCESS=false`` sends every
task to the worker; the gateway always does: its process holds every QPU's credentials and
serves every job, so no job's circuit is parsed or simulated there.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from qrmi._pools import LazyPool
from qrmi.backends.local_emulator.engine import STATEVECTOR_SECONDS_PER_UNIT
from qrmi.backends.local_emulator.inputs import Limits

__all__ = [
    "MAX_INPUT_CHARS",
    "MAX_QUBITS",
    "MAX_SECONDS",
    "MIN_MEMORY_MB",
    "MIN_TIMEOUT_SECONDS",
    "Ran",
    "SmallJob",
    "may_be_small",
    "run_small",
    "within_budgets",
]

#: Longest estimated simulation run in the submitting process.
MAX_SECONDS = 0.05
#: Most active qubits of a small task's pubs (a 16 MiB statevector; ``MAX_SECONDS`` bounds the
#: gates: about 20 on 20 qubits). ``engine.small_job_seconds`` counts them exactly.
MAX_QUBITS = 20
#: Longest payload input considered at all (larger ones go to the worker unparsed here).
MAX_INPUT_CHARS = 256 * 1024
#: Simulations of this process at the same time.
THREADS = 2
#: Smallest task budgets under which a small task still runs here: an admin who sets tighter
#: ones gets them enforced, which only the lanes can do.
MIN_MEMORY_MB = 256
MIN_TIMEOUT_SECONDS = 1.0

_POOL = LazyPool(THREADS, "qrmi-emulator")


@dataclass
class Ran:
    """A task simulated here: its result or failure reason, log lines and wall-clock times."""

    started_at: float
    ended_at: float
    result: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def may_be_small(params: dict[str, Any]) -> bool:
    """Whether the pubs' OpenQASM texts may be a small task: at most :data:`MAX_QUBITS` qubits
    named and their statements within :data:`MAX_SECONDS` on a statevector of that many. A look
    at the texts alone (an upper bound), so that a large circuit reaches the worker without
    being parsed here first; ``engine.small_job_seconds`` decides on the parsed circuits."""
    pubs = params.get("pubs")
    if not isinstance(pubs, list):
        return False
    seconds = 0.0
    for pub in pubs:
        text = pub[0] if isinstance(pub, list | tuple) and pub else None
        if not isinstance(text, str):
            continue  # a QPY circuit: only the parsed circuit tells
        qubits = _qubits_named(text)
        if qubits > MAX_QUBITS:
            return False
        seconds += text.count(";") * 2.0**qubits * STATEVECTOR_SECONDS_PER_UNIT
    return seconds <= MAX_SECONDS


_QUBIT = re.compile(r"\$\d+|\b[A-Za-z_]\w*\[\d+\]")
_NOT_ACTING = re.compile(r"\s*(?:OPENQASM|include|qubit|bit|qreg|creg|input|output|barrier)\b")


def _qubits_named(text: str) -> int:
    """Indexed qubits (``q[3]``, ``$3``) named by the statements that act on qubits; the bits a
    measurement writes to are left out, so that this is at least the active qubit count."""
    named: set[str] = set()
    for statement in text.split(";"):
        if _NOT_ACTING.match(statement):
            continue
        if "measure" in statement:
            statement = statement.split("measure", 1)[1].split("->", 1)[0]
        named.update(_QUBIT.findall(statement))
    return len(named)


def within_budgets(limits: Limits) -> bool:
    """Whether the task's memory and time budgets leave room to run small tasks here."""
    return limits.memory_mb >= MIN_MEMORY_MB and limits.timeout_seconds >= MIN_TIMEOUT_SECONDS


@dataclass(frozen=True)
class SmallJob:
    """A job that may be small enough to simulate here."""

    program_id: str
    params: dict[str, Any]
    device: str
    noise: bool
    seed: int | None
    limits: Limits


def run_small(job: SmallJob) -> Ran | None:
    """Simulate ``job`` here if it is small; None when it is not (the worker runs it)."""
    return _POOL.get().submit(_run, job).result()


def _run(job: SmallJob) -> Ran | None:
    from qrmi.backends.local_emulator.worker import failure_reason

    try:
        from qrmi.backends.local_emulator import engine

        seconds = engine.small_job_seconds(
            job.program_id, job.params, device=job.device, noise=job.noise
        )
    except ImportError:  # no simulator in this environment: the worker will say so
        return None
    if seconds is None or seconds > MAX_SECONDS:
        return None
    ran = Ran(started_at=time.time(), ended_at=0.0)
    try:
        ran.result = engine.run_primitive(
            job.program_id,
            job.params,
            device=job.device,
            noise=job.noise,
            seed=job.seed,
            limits=job.limits,
            notes=ran.notes,
        )
    except Exception as exc:
        ran.error = failure_reason(exc)
    ran.ended_at = time.time()
    return ran
