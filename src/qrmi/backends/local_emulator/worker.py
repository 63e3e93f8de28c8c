"""The emulator's worker daemon, and the client-side calls that start and wake it.

Design: one worker process per state directory, started on demand (detached, in its own
session) by ``task_start``::

    python -m qrmi.backends.local_emulator.worker --state-dir DIR

* An exclusive ``flock`` on ``DIR/worker.lock`` guarantees that at most one worker runs; a second
  one started concurrently exits at once.
* The worker claims queued tasks in FIFO order up to ``lanes`` at a time (one thread per lane)
  and writes results. Each lane simulates in its own warm child process (qiskit imported once),
  bounded by the task's time and memory budgets (see
  :mod:`~qrmi.backends.local_emulator._sandbox`), so no task can take the worker or the host
  down, and a cancelled task frees its lane at once.
* A heartbeat thread refreshes the worker's heartbeat every second whatever the lanes do, so
  a long simulation is never mistaken for a hung worker.
* Finished tasks older than the retention period (``retention_seconds`` in the store's meta)
  are deleted at start and every hour.
* A state directory it cannot write (full disk, read-only) makes it log the reason and exit
  with status 73 (not writable) or 74 (full); clients that started it turn that into
  :class:`~qrmi.backends.local_emulator.store.StateDirectoryError` instead of waiting forever.
* Clients wake it with a datagram on the Unix socket ``DIR/wake.sock`` after queueing a task, so
  a task starts within a millisecond or so; without the socket it polls every 20 ms. In turn it
  notifies the clients waiting for a task when the task ends (see
  :mod:`~qrmi.backends.local_emulator._notify`), so they need not poll.
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

from qrmi.backends.local_emulator import _notify
from qrmi.backends.local_emulator._sandbox import Job, Outcome, Sandbox, child_environment
from qrmi.backends.local_emulator.inputs import Limits
from qrmi.backends.local_emulator.store import (
    CANCELLED,
    COMPLETED,
    FAILED,
    StateDirectoryError,
    TaskRecord,
    TaskStore,
    state_directory_error,
)

__all__ = [
    "HEARTBEAT_SECONDS",
    "STALE_SECONDS",
    "Worker",
    "ensure_worker",
    "failure_reason",
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
#: How often finished tasks past their retention are deleted.
PURGE_EVERY_SECONDS = 3600.0
#: Retention when the store has none recorded (seven days).
DEFAULT_RETENTION_SECONDS = 7 * 86400.0

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
    """True when a worker holds the state directory's lock.

    Raises:
        StateDirectoryError: the state directory cannot be created or written.
    """
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = open(state_dir / LOCK_NAME, "a+b")  # noqa: SIM115 - closed below
    except OSError as exc:
        typed = state_directory_error(state_dir, exc)
        if typed is None:
            raise
        raise typed from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


def ensure_worker(state_dir: Path) -> bool:
    """Start a worker for ``state_dir`` unless one runs; True if one was started.

    Raises:
        StateDirectoryError: the state directory cannot be written, or the last worker this
            process started for it exited because it could not write it.
    """
    _reap(state_dir)
    if worker_running(state_dir):
        return False
    try:
        log = open(state_dir / LOG_NAME, "ab")  # noqa: SIM115 - handed to the child
    except OSError as exc:
        typed = state_directory_error(state_dir, exc)
        if typed is None:
            raise
        raise typed from None
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd="/",
            env=child_environment(),
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()
    _spawned.append(process)
    logger.debug("started emulator worker pid %d for %s", process.pid, state_dir)
    return True


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


def _reap(state_dir: Path | None = None) -> None:
    """Collect exit statuses of workers this process started (no zombies).

    Raises:
        StateDirectoryError: a worker of ``state_dir`` exited because it could not write it.
    """
    failed: int | None = None
    for process in list(_spawned):
        code = process.poll()
        if code is None:
            continue
        _spawned.remove(process)
        serves = state_dir is not None and str(state_dir) in process.args  # type: ignore[operator]
        if serves and code in _STORAGE_EXITS:
            failed = code
    if failed is not None:
        message = _STORAGE_EXITS[failed].format(state_dir=state_dir)
        raise StateDirectoryError(message, exit_code=failed)


_STORAGE_EXITS = {
    73: "the local emulator's worker cannot write its state directory {state_dir} (read-only or "
    "not writable by this user; see its worker.log); make it writable or set "
    "QRMI_LOCAL_STATE_DIR to a writable directory",
    74: "the local emulator's worker cannot write its state directory {state_dir}: the disk is "
    "full or a write failed (see its worker.log); free space there or set QRMI_LOCAL_STATE_DIR "
    "to a directory on another disk",
}


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
        self._sandboxed = execute is None
        self._lanes: dict[int, threading.Thread] = {}
        self._sandboxes: dict[int, Sandbox] = {}
        self._done: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._sock: socket.socket | None = None
        self._beating = threading.Event()
        self._storage_failure: StateDirectoryError | None = None
        self._purged_at = float("-inf")

    def serve(self) -> None:
        """Run until idle for ``idle_seconds``.

        Raises:
            StateDirectoryError: the state directory cannot be written (the caller exits with
                its ``exit_code``).
        """
        try:
            self._serve()
        finally:
            self._beating.clear()
            for sandbox in self._sandboxes.values():
                sandbox.close()

    def _serve(self) -> None:
        self._start()
        idle_since = time.monotonic()
        while self.state_dir.is_dir():
            if self._storage_failure is not None:
                raise self._storage_failure
            self._reap_lanes()
            self._claim()
            self._purge()
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
            _notify.notify(self.state_dir, task_id)
        self._bind()
        self._start_heartbeat()
        self._warm_up()

    def _warm_up(self) -> None:
        # Start the lanes' simulation processes now so that the first task does not wait for
        # qiskit to import.
        if self._sandboxed:
            for lane in range(self._max_lanes()):
                self._sandbox(lane)

    def _sandbox(self, lane: int) -> Sandbox:
        """The lane's simulation process, started (from this, the main thread) if needed."""
        sandbox = self._sandboxes.setdefault(lane, Sandbox(lane))
        sandbox.start()
        return sandbox

    def _start_heartbeat(self) -> None:
        if self._beating.is_set():
            return
        self._beating.set()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()

    def _heartbeat(self) -> None:
        """Refresh the heartbeat every HEARTBEAT_SECONDS, independently of the simulations."""
        while self._beating.is_set():
            try:
                self.store.heartbeat(self.pid)
            except StateDirectoryError as exc:
                self._storage_failure = exc
            except Exception:  # a locked database now and then must not stop the beat
                logger.exception("heartbeat failed")
            time.sleep(HEARTBEAT_SECONDS)
        self.store.close()

    def _purge(self) -> None:
        now = time.monotonic()
        if now - self._purged_at < PURGE_EVERY_SECONDS:
            return
        self._purged_at = now
        raw = self.store.get_meta("retention_seconds")
        retention = float(raw) if raw is not None else DEFAULT_RETENTION_SECONDS
        deleted = self.store.purge(retention)
        if deleted:
            logger.info("deleted %d finished tasks older than %g s", deleted, retention)
        swept = _notify.sweep(self.state_dir)
        if swept:
            logger.info("removed %d sockets of clients that stopped waiting", swept)

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
        self._beating.clear()
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
            task = self.store.claim_next(lane=lane, worker_pid=self.pid, log=_started_line)
            if task is None:
                return
            if self._sandboxed:
                self._sandbox(lane)
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
        try:
            self._run_and_record(task, lane)
        except StateDirectoryError as exc:
            logger.error("task %s: %s", task.id, exc)
            self._storage_failure = exc
        except Exception:  # never leave a lane thread dead without a trace
            logger.exception("task %s: the lane failed", task.id)
        finally:
            _notify.notify(self.state_dir, task.id)  # waiting clients look at the store now
            self._done.put(lane)
            wake(self.state_dir)  # let the loop claim the next task on this lane at once

    def _run_and_record(self, task: TaskRecord, lane: int) -> None:
        started = time.monotonic()
        outcome = self._simulate(task, lane)
        for note in outcome.notes:
            self.store.append_log(task.id, note)
        if outcome.cancelled:
            logger.info("task %s was cancelled while running; its simulation was stopped", task.id)
            return
        if outcome.error is not None:
            self.store.finish(task.id, FAILED, reason=outcome.error, log=f"failed: {outcome.error}")
            return
        self._hold(task, started)
        took = time.monotonic() - started
        if not self.store.finish(
            task.id, COMPLETED, result=outcome.result, log=f"completed in {took:.3f} s"
        ):
            logger.info("task %s was cancelled while running; result discarded", task.id)

    def _simulate(self, task: TaskRecord, lane: int) -> Outcome:
        if not self._sandboxed:
            try:
                return Outcome(result=self._execute(task))
            except Exception as exc:
                return Outcome(error=failure_reason(exc))
        job = Job(
            task.program_id,
            task.input,
            task.device,
            task.noise,
            task.seed,
            Limits.from_json(task.limits),
        )
        return self._sandboxes[lane].run(
            job, cancelled=lambda: self.store.status(task.id) == CANCELLED
        )

    def _hold(self, task: TaskRecord, started: float) -> None:
        """Keep the task Running for its requested emulated QPU time (stops if cancelled)."""
        deadline = started + _min_duration(task)
        while time.monotonic() < deadline:
            if self.store.status(task.id) == CANCELLED:
                return
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def _started_line(task: TaskRecord) -> str:
    """The log line written when a lane takes the task (in the claim's own write)."""
    return (
        f"started on lane {task.lane} (device {task.device}, noise "
        f"{'on' if task.noise else 'off'}, seed {task.seed})"
    )


def _min_duration(task: TaskRecord) -> float:
    import json

    if "min_duration_seconds" not in task.input:
        return 0.0  # not asked for: no need to parse a possibly large input again
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


def failure_reason(exc: BaseException) -> str:
    """One line for a task's log and reason: the message of a QrmiError, else type: message."""
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
    try:
        return _serve_state_dir(state_dir)
    except StateDirectoryError as exc:
        logger.error("%s", exc)
        return exc.exit_code


def _serve_state_dir(state_dir: Path) -> int:
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = _take_lock(state_dir / LOCK_NAME)
    except OSError as exc:
        typed = state_directory_error(state_dir, exc)
        if typed is None:
            raise
        raise typed from None
    if lock is None:
        return 0  # another worker serves this state directory
    try:
        Worker(TaskStore(state_dir), lock).serve()
    finally:
        lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
