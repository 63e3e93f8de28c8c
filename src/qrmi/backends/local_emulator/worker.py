"""The emulator's worker daemon, and the client-side calls that start and wake it.

Design: one worker process per state directory, started on demand (detached, in its own
session) by ``task_start``::

    python -m qrmi.backends.local_emulator.worker --state-dir DIR

* An exclusive ``flock`` on ``DIR/worker.lock`` guarantees that at most one worker runs; a second
  one started concurrently exits at once.
* The worker keeps qiskit imported, claims queued tasks in FIFO order up to ``lanes`` at a time
  (one thread per lane; Aer releases the GIL), writes results, and beats a heartbeat.
* Clients wake it with a datagram on the Unix socket ``DIR/wake.sock`` after queueing a task, so
  a task starts within a millisecond or so; without the socket it polls every 20 ms.
* It exits after ``idle_seconds`` with nothing queued or running. It releases the lock *before*
  its last look at the queue, so a task queued while it decided to exit is either seen by that
  look or by a client that found the lock free and started a new worker.
* On start it fails every task left ``Running`` (only a dead worker can have left them: the lock
  was free). Clients also fail a ``Running`` task whose worker process is gone or whose heartbeat
  stopped, so no task stays ``Running`` forever.

The client side (:func:`ensure_worker`, :func:`wake`) imports neither qiskit nor the engine.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from qrmi.backends.local_emulator.store import (
    CANCELLED,
    COMPLETED,
    FAILED,
    TaskRecord,
    TaskStore,
)

__all__ = [
    "HEARTBEAT_SECONDS",
    "STALE_SECONDS",
    "Worker",
    "ensure_worker",
    "main",
    "pid_alive",
    "stop_worker",
    "wake",
    "worker_is_dead",
]

logger = logging.getLogger(__name__)

LOCK_NAME = "worker.lock"
SOCKET_NAME = "wake.sock"
LOG_NAME = "worker.log"
#: How often the worker refreshes its heartbeat.
HEARTBEAT_SECONDS = 1.0
#: A heartbeat older than this means the worker is hung or gone.
STALE_SECONDS = 30.0
#: Longest wait between two looks at the queue when no wake-up arrives.
IDLE_WAIT_SECONDS = 0.5
#: Poll interval when the wake-up socket cannot be used.
POLL_SECONDS = 0.02
#: Longest emulated QPU time a payload may ask for (``options.emulator.min_duration_seconds``).
MAX_MIN_DURATION_SECONDS = 3600.0

_spawned: list[subprocess.Popen[bytes]] = []


# ----- client side ------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def worker_is_dead(store: TaskStore, task: TaskRecord) -> str | None:
    """Why the worker running ``task`` is gone, or None if it looks alive."""
    if task.worker_pid is None:
        return None
    registered = store.worker()
    if not pid_alive(task.worker_pid):
        return f"the emulator worker (pid {task.worker_pid}) died while the task was running"
    if registered is None or registered.pid != task.worker_pid:
        return f"the emulator worker (pid {task.worker_pid}) stopped while the task was running"
    if time.time() - registered.heartbeat_at > STALE_SECONDS:
        return (
            f"the emulator worker (pid {task.worker_pid}) stopped responding (no heartbeat for "
            f"{STALE_SECONDS:g} s)"
        )
    return None


def wake(state_dir: Path) -> None:
    """Tell the worker that a task is queued (best effort, never blocks)."""
    path = state_dir / SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.sendto(b"t", str(path))


def worker_running(state_dir: Path) -> bool:
    """True when a worker holds the state directory's lock."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(state_dir / LOCK_NAME, "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


def ensure_worker(state_dir: Path) -> bool:
    """Start a worker for ``state_dir`` unless one runs; True if one was started."""
    _reap()
    if worker_running(state_dir):
        return False
    log = open(state_dir / LOG_NAME, "ab")  # noqa: SIM115 - handed to the child
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd="/",
            env=_child_environment(),
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()
    _spawned.append(process)
    logger.debug("started emulator worker pid %d for %s", process.pid, state_dir)
    return True


def _child_environment() -> dict[str, str]:
    # The worker must import this very copy of qrmi, even when it is not installed.
    package_root = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ)
    paths = [package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def stop_worker(state_dir: Path, *, timeout: float = 10.0) -> list[int]:
    """Stop the worker of ``state_dir`` (SIGTERM, then SIGKILL at the deadline); return its pids.

    Also stops workers this process started for ``state_dir`` that have not registered yet.
    Tasks it was running are failed by the next worker or by the next status poll.
    """
    pids = {p.pid for p in _spawned if str(state_dir) in p.args}  # type: ignore[operator]
    registered = TaskStore(state_dir).worker() if (state_dir / "tasks.sqlite3").exists() else None
    if registered is not None:
        pids.add(registered.pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive_after_reap(pid) for pid in pids):
        if time.monotonic() >= deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    _reap()
    return sorted(pids)


def _alive_after_reap(pid: int) -> bool:
    _reap()
    return pid_alive(pid)


def _reap() -> None:
    """Collect exit statuses of workers this process started (no zombies)."""
    for process in list(_spawned):
        if process.poll() is not None:
            _spawned.remove(process)


# ----- the daemon -------------------------------------------------------------------------------


class Worker:
    """Executes the queued tasks of one state directory (see the module docstring)."""

    def __init__(
        self,
        store: TaskStore,
        lock: IO[bytes],
        *,
        execute: Callable[[TaskRecord], str] | None = None,
    ) -> None:
        self.store = store
        self.state_dir = store.state_dir
        self.pid = os.getpid()
        self._lock = lock
        self._execute = execute or _execute_with_engine
        self._lanes: dict[int, threading.Thread] = {}
        self._done: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._sock: socket.socket | None = None
        self._last_beat = 0.0

    def serve(self) -> None:
        """Run until idle for ``idle_seconds``."""
        self._start()
        idle_since = time.monotonic()
        while self.state_dir.is_dir():
            self._reap_lanes()
            self._claim()
            self._beat()
            if self._lanes or self.store.counts().get("Queued"):
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= self._idle_seconds():
                if not self._stop_or_continue():
                    return
                idle_since = time.monotonic()
            self._wait()
        self._shutdown()

    # ----- lifecycle -------------------------------------------------------------------------

    def _start(self) -> None:
        self.store.register_worker(self.pid)
        for task_id in self.store.fail_running(
            "the emulator worker that was running this task died; start the task again"
        ):
            logger.warning("task %s failed: its previous worker died", task_id)
        self._bind()
        self._warm_up()

    def _warm_up(self) -> None:
        # Import qiskit and Aer now so that the first task does not pay for it.
        if self._execute is _execute_with_engine:
            with contextlib.suppress(ImportError):
                import qrmi.backends.local_emulator._simulate  # noqa: F401

    def _bind(self) -> None:
        path = self.state_dir / SOCKET_NAME
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(path))
        except OSError as exc:  # e.g. a path longer than the 108 bytes AF_UNIX allows
            logger.warning("no wake-up socket (%s); polling every %g s", exc, POLL_SECONDS)
            sock.close()
            return
        self._sock = sock

    def _unbind(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / SOCKET_NAME).unlink()

    def _stop_or_continue(self) -> bool:
        """Give up the lock, then look at the queue once more; True to keep serving."""
        self.store.unregister_worker(self.pid)
        self._unbind()
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        if not self.store.counts().get("Queued"):
            return False
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another worker took over
        self._start()
        return True

    def _shutdown(self) -> None:
        for thread in self._lanes.values():
            thread.join(timeout=5.0)
        with contextlib.suppress(Exception):
            self.store.unregister_worker(self.pid)
        self._unbind()

    def _idle_seconds(self) -> float:
        raw = self.store.get_meta("idle_seconds")
        return float(raw) if raw is not None else 60.0

    def _max_lanes(self) -> int:
        raw = self.store.get_meta("lanes")
        return max(1, int(raw)) if raw is not None else 2

    # ----- the loop ----------------------------------------------------------------------------

    def _beat(self) -> None:
        now = time.monotonic()
        if now - self._last_beat >= HEARTBEAT_SECONDS:
            self.store.heartbeat(self.pid)
            self._last_beat = now

    def _reap_lanes(self) -> None:
        while not self._done.empty():
            self._lanes.pop(self._done.get(), None)
        for lane, thread in list(self._lanes.items()):
            if not thread.is_alive():
                del self._lanes[lane]

    def _claim(self) -> None:
        lanes = self._max_lanes()
        while len(self._lanes) < lanes:
            lane = min(set(range(lanes)) - set(self._lanes))
            task = self.store.claim_next(lane=lane, worker_pid=self.pid)
            if task is None:
                return
            thread = threading.Thread(
                target=self._run_task, args=(task, lane), name=f"lane-{lane}", daemon=True
            )
            self._lanes[lane] = thread
            thread.start()

    def _wait(self) -> None:
        if self._sock is None:
            time.sleep(POLL_SECONDS)
            return
        self._sock.settimeout(IDLE_WAIT_SECONDS)
        try:
            self._sock.recv(64)
            self._sock.setblocking(False)
            while True:  # drain wake-ups that arrived together
                self._sock.recv(64)
        except (TimeoutError, BlockingIOError):
            pass

    def _run_task(self, task: TaskRecord, lane: int) -> None:
        started = time.monotonic()
        self.store.append_log(
            task.id,
            f"started on lane {lane} (device {task.device}, noise {'on' if task.noise else 'off'}"
            f", seed {task.seed})",
        )
        try:
            result = self._execute(task)
            self._hold(task, started)
        except Exception as exc:
            reason = _reason(exc)
            self.store.finish(task.id, FAILED, reason=reason, log=f"failed: {reason}")
        else:
            took = time.monotonic() - started
            if not self.store.finish(
                task.id, COMPLETED, result=result, log=f"completed in {took:.3f} s"
            ):
                logger.info("task %s was cancelled while running; result discarded", task.id)
        finally:
            self._done.put(lane)
            wake(self.state_dir)  # let the loop claim the next task on this lane at once

    def _hold(self, task: TaskRecord, started: float) -> None:
        """Keep the task Running for its requested emulated QPU time (stops if cancelled)."""
        deadline = started + _min_duration(task)
        while time.monotonic() < deadline:
            if self.store.status(task.id) == CANCELLED:
                return
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def _min_duration(task: TaskRecord) -> float:
    import json

    try:
        options = json.loads(task.input).get("options") or {}
        value = float((options.get("emulator") or {}).get("min_duration_seconds") or 0.0)
    except (ValueError, TypeError, AttributeError):
        return 0.0
    return min(max(value, 0.0), MAX_MIN_DURATION_SECONDS)


def _execute_with_engine(task: TaskRecord) -> str:
    import json

    from qrmi.backends.local_emulator.engine import run_primitive

    params: Any = json.loads(task.input)
    return run_primitive(
        task.program_id, params, device=task.device, noise=task.noise, seed=task.seed
    )


def _reason(exc: BaseException) -> str:
    from qrmi.errors import QrmiError

    message = " ".join(str(exc).split())
    if isinstance(exc, QrmiError) and message:
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# ----- entry point ------------------------------------------------------------------------------


def _take_lock(path: Path, attempts: int = 20) -> IO[bytes] | None:
    """Open and lock ``path``; retry briefly because clients probe the lock for microseconds."""
    lock = open(path, "a+b")  # noqa: SIM115 - held for the life of the worker
    for _ in range(attempts):
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            time.sleep(0.01)
    lock.close()
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m qrmi.backends.local_emulator.worker --state-dir DIR``."""
    parser = argparse.ArgumentParser(description="pyqrmi local emulator worker")
    parser.add_argument("--state-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s worker[%(process)d] %(levelname)s %(message)s"
    )
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = _take_lock(state_dir / LOCK_NAME)
    if lock is None:
        return 0  # another worker serves this state directory
    try:
        Worker(TaskStore(state_dir), lock).serve()
    finally:
        lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
