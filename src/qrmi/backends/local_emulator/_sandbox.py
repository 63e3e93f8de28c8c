"""Simulations in a bounded child process, one per execution lane of the emulator's worker.

Aer cannot be interrupted from Python, and a hostile or unlucky circuit can ask for more memory
than the host has. So the worker does not simulate in its own process: each lane keeps one warm
child (qiskit imported once, then reused task after task, so a tiny task pays a pipe round trip,
not a process start) that runs :func:`~qrmi.backends.local_emulator.engine.run_primitive` under

* a memory budget: before each task the child sets its own ``RLIMIT_AS`` to its current size plus
  ``limits.memory_mb`` (Aer also gets it as ``max_memory_mb``), so an allocation beyond it fails
  inside the child, never in the worker or elsewhere on the host;
* a time budget: the lane waits at most ``limits.timeout_seconds`` for the answer, then kills the
  child (SIGKILL) and starts a fresh one;
* cancellation: a task cancelled while it simulates has its child killed, which frees the lane at
  once instead of when Aer finishes.

Protocol on a socket pair (``multiprocessing.connection`` framing): the child sends ``ready``;
then per task the parent sends a JSON header and the input text, and the child answers ``R`` +
JSON notes followed by the result text, or ``E`` + the failure reason.

Children are started from the worker's main thread (``PR_SET_PDEATHSIG`` is tied to the thread
that started a child, and the child must die with the worker, not with a lane's thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from qrmi.backends.local_emulator.inputs import Limits

__all__ = ["OPENMP_DEFAULTS", "Outcome", "Sandbox", "child_environment"]

#: Longest wait for a new child to import qiskit and say ``ready`` (not part of a task's budget).
READY_SECONDS = 180.0
#: How often a lane looks whether its running task was cancelled.
CANCEL_CHECK_SECONDS = 0.25
#: A child whose copy of Aer's never-cleared MPS log exceeds this many characters is replaced.
RECYCLE_MPS_LOG_CHARS = 64 * 2**20


@dataclass
class Outcome:
    """What one task's simulation gave: a result, or the reason it failed."""

    result: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    cancelled: bool = False


@dataclass(frozen=True)
class Job:
    """One simulation request."""

    program_id: str
    input: str
    device: str
    noise: bool
    seed: int | None
    limits: Limits


class Sandbox:
    """The child process of one lane; :meth:`start` from the main thread, :meth:`run` from any."""

    def __init__(self, lane: int) -> None:
        self.lane = lane
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._ready = False

    @property
    def alive(self) -> bool:
        """True while the child runs."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the child unless it runs (returns at once; the child warms up on its own)."""
        if self.alive:
            return
        self.close()
        parent, child = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, "--fd", str(child.fileno())],
                stdin=subprocess.DEVNULL,
                pass_fds=(child.fileno(),),
                cwd="/",
                env=child_environment(),
            )
        finally:
            child.close()
        self._conn = Connection(parent.detach())
        self._ready = False

    def run(self, job: Job, *, cancelled: Callable[[], bool]) -> Outcome:
        """Simulate ``job`` in the child within its budgets; kill the child if it overruns."""
        if self._process is None or self._conn is None:
            return Outcome(error="the emulator's simulation process was not started")
        conn = self._conn
        try:
            if not self._wait_ready(conn):
                return Outcome(error=self._death("while starting"))
            conn.send_bytes(json.dumps(_header(job)).encode())
            conn.send_bytes(job.input.encode("utf-8", "surrogatepass"))
            return self._answer(conn, job, cancelled)
        except (EOFError, OSError):
            return Outcome(error=self._death("during the simulation", job.limits))

    def close(self) -> None:
        """Kill the child (if any) and forget it."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5.0)
            self._process = None

    # ----- internals ---------------------------------------------------------------------------

    def _wait_ready(self, conn: Connection) -> bool:
        if self._ready:
            return True
        if not conn.poll(READY_SECONDS):
            return False
        self._ready = conn.recv_bytes() == b"ready"
        return self._ready

    def _answer(self, conn: Connection, job: Job, cancelled: Callable[[], bool]) -> Outcome:
        deadline = time.monotonic() + job.limits.timeout_seconds
        while not conn.poll(min(CANCEL_CHECK_SECONDS, max(0.0, deadline - time.monotonic()))):
            if cancelled():
                self.close()
                return Outcome(cancelled=True)
            if time.monotonic() >= deadline:
                self.close()
                return Outcome(
                    error=f"the simulation exceeded the task's time budget of "
                    f"{job.limits.timeout_seconds:g} s (QRMI_LOCAL_TASK_TIMEOUT_SECONDS) and was "
                    "stopped; use fewer gates, shots or loop iterations, or ask the admin for a "
                    "larger budget"
                )
        kind = conn.recv_bytes(job.limits.memory_mb * 2**20 + 1024)
        if kind[:1] == b"E":
            return Outcome(error=kind[1:].decode("utf-8", "replace"))
        answer = json.loads(kind[1:].decode())
        result = conn.recv_bytes(job.limits.memory_mb * 2**20 + 1024).decode()
        if answer.get("recycle"):
            self.close()  # the worker's main thread starts a fresh child for the next task
        return Outcome(result=result, notes=list(answer.get("notes") or []))

    def _death(self, when: str, limits: Limits | None = None) -> str:
        process = self._process
        self.close()
        code = process.returncode if process is not None else None
        if code is not None and code < 0:
            how = f"was killed by signal {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        budget = (
            f"; the circuit may need more than the task's memory budget of {limits.memory_mb} MiB "
            "(QRMI_LOCAL_TASK_MEMORY_MB)"
            if limits is not None
            else ""
        )
        return f"the emulator's simulation process {how} {when}{budget}"


def _header(job: Job) -> dict[str, object]:
    return {
        "program_id": job.program_id,
        "device": job.device,
        "noise": job.noise,
        "seed": job.seed,
        "limits": json.loads(job.limits.to_json()),
    }


#: OpenMP settings of the simulation processes unless the environment sets its own. Aer's
#: OpenMP threads otherwise spin after each parallel region; each Aer job runs on a new
#: Python thread with a new thread team, so the spinning teams of earlier jobs and of the
#: other lanes take the cores from the running one (a Bell circuit: 2 ms with, 7 to 11 ms
#: without, on 2 cores).
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def child_environment() -> dict[str, str]:
    """This process's environment, with this very copy of qrmi first on ``PYTHONPATH`` (the
    worker and its simulation processes must import it even when it is not installed) and
    :data:`OPENMP_DEFAULTS` where the environment does not set them."""
    package_root = str(Path(__file__).resolve().parents[3])
    env = {**OPENMP_DEFAULTS, **os.environ}
    paths = [package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


# ----- the child --------------------------------------------------------------------------------


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the worker died before prctl took effect
        os._exit(0)


def _address_space_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def _memory_budget(megabytes: int) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``megabytes`` MiB."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space_bytes() + megabytes * 2**20
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield None
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _serve(conn: Connection) -> None:
    from qrmi.backends.local_emulator import _simulate  # warm up before "ready"
    from qrmi.backends.local_emulator.engine import run_primitive
    from qrmi.backends.local_emulator.worker import failure_reason

    conn.send_bytes(b"ready")
    while True:
        try:
            header = json.loads(conn.recv_bytes())
            text = conn.recv_bytes().decode("utf-8", "surrogatepass")
        except EOFError:
            return
        limits = Limits.from_json(json.dumps(header["limits"]))
        notes: list[str] = []
        try:
            with _memory_budget(limits.memory_mb):
                result = run_primitive(
                    header["program_id"],
                    json.loads(text),
                    device=header["device"],
                    noise=header["noise"],
                    seed=header["seed"],
                    limits=limits,
                    notes=notes,
                )
        except MemoryError:
            reason = (
                "the simulation needed more than the task's memory budget of "
                f"{limits.memory_mb} MiB (QRMI_LOCAL_TASK_MEMORY_MB); use fewer qubits, bits, "
                "shots or parameter sets"
            )
            conn.send_bytes(b"E" + reason.encode())
            continue
        except Exception as exc:
            conn.send_bytes(b"E" + _budget_reason(failure_reason(exc), limits).encode())
            continue
        recycle = _simulate.mps_log_size() > RECYCLE_MPS_LOG_CHARS
        conn.send_bytes(b"R" + json.dumps({"notes": notes, "recycle": recycle}).encode())
        conn.send_bytes(result.encode())


#: How running out of the task's address space shows besides MemoryError: Aer's C++
#: allocation failures, and a thread whose stack no longer fits (Python's own wording).
_OUT_OF_MEMORY = ("bad_alloc", "insufficient memory", "can't start new thread")


def _budget_reason(reason: str, limits: Limits) -> str:
    if any(sign in reason.lower() for sign in _OUT_OF_MEMORY):
        return (
            f"{reason} (more than the task's memory budget of {limits.memory_mb} MiB, "
            "QRMI_LOCAL_TASK_MEMORY_MB)"
        )
    return reason


def main(argv: list[str] | None = None) -> int:
    """``python -m qrmi.backends.local_emulator._sandbox --fd N`` (started by :class:`Sandbox`)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "--fd":
        print("usage: python -m qrmi.backends.local_emulator._sandbox --fd N", file=sys.stderr)
        return 2
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when a child stops
    conn = Connection(int(args[1]))
    try:
        _serve(conn)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
