"""The emulator's persistent task store: one SQLite database (WAL) per state directory.

Every process that uses the same state directory (the caller that started a task, another
``qrmi`` command polling it, the Slurm helper, the worker daemon executing it) sees the same
tasks, so a task started by one process can be polled, cancelled and read by another.

Tables:

* ``tasks``: id (UUID), program id, input, device/noise/seed captured at ``task_start``,
  status (``Queued``, ``Running``, ``Completed``, ``Failed``, ``Cancelled``), result, logs,
  reason, lane, worker pid, and wall-clock timestamps ``created_at``, ``started_at``,
  ``ended_at`` (seconds since the epoch; accounting reads them). ``seq`` gives FIFO order.
* ``leases``: acquisition tokens with ``acquired_at``, ``released_at`` and ``release_count``.
  A release of a token this store never issued is recorded too (``acquired_at`` is NULL).
* ``worker``: the live worker daemon's pid, start time and heartbeat.
* ``meta``: settings the worker reads (``lanes``, ``idle_seconds``, ``retention_seconds``).

Each task also keeps the size limits and budgets captured at ``task_start`` (``limits``, the JSON
of :class:`~qrmi.backends.local_emulator.inputs.Limits`).

State changes are single conditional ``UPDATE`` statements, so concurrent writers cannot move
a task out of a final state: a late result of a cancelled task is discarded, a stop after
completion changes nothing.

A state directory that cannot be written (full disk, read-only file system, wrong owner) raises
:class:`StateDirectoryError`, whose message names the directory and the fix, from every call.
Finished tasks older than the retention period are deleted by :meth:`TaskStore.purge`.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from qrmi._uuid import uuid4_text
from qrmi.errors import QrmiError, TaskNotFoundError

__all__ = [
    "DB_NAME",
    "LeaseRecord",
    "StateDirectoryError",
    "TaskRecord",
    "TaskStore",
    "WorkerRecord",
]

DB_NAME = "tasks.sqlite3"
QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "Queued",
    "Running",
    "Completed",
    "Failed",
    "Cancelled",
)
FINAL_STATES = (COMPLETED, FAILED, CANCELLED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    program_id TEXT NOT NULL,
    input TEXT NOT NULL,
    device TEXT NOT NULL,
    noise INTEGER NOT NULL DEFAULT 0,
    seed INTEGER,
    status TEXT NOT NULL,
    result TEXT,
    logs TEXT NOT NULL DEFAULT '',
    reason TEXT,
    lane INTEGER,
    worker_pid INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    limits TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, seq);
CREATE TABLE IF NOT EXISTS leases (
    token TEXT PRIMARY KEY,
    acquired_at REAL,
    released_at REAL,
    release_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS worker (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_TASK_COLUMNS = (
    "id, program_id, input, device, noise, seed, status, result, logs, reason, lane, "
    "worker_pid, created_at, started_at, ended_at, limits"
)
# Columns added after the first release, with their type: added to older stores when opened.
_ADDED_TASK_COLUMNS = {"limits": "TEXT"}

_P = ParamSpec("_P")
_T = TypeVar("_T")


class StateDirectoryError(QrmiError, OSError):
    """The emulator's state directory cannot be written: full disk, read-only, wrong owner.

    ``exit_code`` is what the worker daemon exits with for it (``EX_CANTCREAT`` 73 for a
    directory it may not write, ``EX_IOERR`` 74 for a full disk or a failed write).
    """

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_DENIED_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


def state_directory_error(state_dir: Path, exc: BaseException) -> StateDirectoryError | None:
    """The typed error for a storage failure ``exc`` in ``state_dir``; None if it is not one."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    text = detail.lower()
    number = getattr(exc, "errno", None)
    if number in _FULL_ERRNOS or "disk is full" in text or "disk i/o error" in text:
        return StateDirectoryError(
            f"the local emulator cannot write its state directory {state_dir}: the disk is full "
            f"or a write failed ({detail}); free space there or set QRMI_LOCAL_STATE_DIR to a "
            "directory on another disk (finished tasks are deleted after "
            "QRMI_LOCAL_RETENTION_DAYS)",
            exit_code=74,
        )
    if (
        number in _DENIED_ERRNOS
        or "readonly" in text
        or "read-only" in text
        or "unable to open database" in text
    ):
        return StateDirectoryError(
            f"the local emulator cannot write its state directory {state_dir}: it is read-only "
            f"or not writable by this user ({detail}); make it writable (owner, mode, or a "
            "read-write mount) or set QRMI_LOCAL_STATE_DIR to a writable directory",
            exit_code=73,
        )
    return None


def _storage_errors(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Turn SQLite and file-system failures of a TaskStore method into StateDirectoryError."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(*args, **kwargs)
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
            if isinstance(exc, StateDirectoryError):
                raise
            store = args[0]
            assert isinstance(store, TaskStore)
            typed = state_directory_error(store.state_dir, exc)
            if typed is None:
                raise
            raise typed from None

    return wrapper


@dataclass(frozen=True)
class TaskRecord:
    """One task as stored (timestamps are seconds since the epoch)."""

    id: str
    program_id: str
    input: str
    device: str
    noise: bool
    seed: int | None
    status: str
    result: str | None
    logs: str
    reason: str | None
    lane: int | None
    worker_pid: int | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    limits: str | None = None

    @staticmethod
    def from_row(row: sqlite3.Row) -> TaskRecord:
        """Build a record from a ``SELECT {_TASK_COLUMNS}`` row."""
        return TaskRecord(
            id=row["id"],
            program_id=row["program_id"],
            input=row["input"],
            device=row["device"],
            noise=bool(row["noise"]),
            seed=row["seed"],
            status=row["status"],
            result=row["result"],
            logs=row["logs"],
            reason=row["reason"],
            lane=row["lane"],
            worker_pid=row["worker_pid"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            limits=row["limits"],
        )


@dataclass(frozen=True)
class LeaseRecord:
    """One acquisition token; ``acquired_at`` is None for a token released but never issued."""

    token: str
    acquired_at: float | None
    released_at: float | None
    release_count: int


@dataclass(frozen=True)
class WorkerRecord:
    """The worker daemon that last registered."""

    pid: int
    started_at: float
    heartbeat_at: float


class TaskStore:
    """Access to the state directory's database; safe to share between threads and processes.

    Each thread gets its own connection; writers wait up to ``busy_timeout`` seconds for the
    database lock.
    """

    def __init__(self, state_dir: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_NAME
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._ready = False

    # ----- connections ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            conn.row_factory = sqlite3.Row
            _use_wal(conn, self._busy_timeout)
            conn.execute("PRAGMA synchronous=NORMAL")
            if not self._ready:
                conn.executescript(_SCHEMA)
                _add_missing_columns(conn)
                self._ready = True
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the database lock at once (FIFO claims stay atomic)."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ----- tasks ------------------------------------------------------------------------------

    def add_task(
        self,
        program_id: str,
        input_text: str,
        *,
        device: str,
        noise: bool,
        seed: int | None,
        limits: str | None = None,
        meta: dict[str, str] | None = None,
    ) -> str:
        """Queue a task and return its new id (``limits``: JSON of its Limits); ``meta``
        settings for the worker are stored in the same write."""
        return self._insert(
            meta,
            program_id=program_id,
            input=input_text,
            device=device,
            noise=int(noise),
            seed=seed,
            limits=limits,
            status=QUEUED,
            created_at=time.time(),
        )

    def add_finished(
        self,
        program_id: str,
        input_text: str,
        *,
        device: str,
        noise: bool,
        seed: int | None,
        limits: str | None,
        status: str,
        started_at: float,
        ended_at: float,
        result: str | None = None,
        reason: str | None = None,
        log: list[str] | None = None,
        meta: dict[str, str] | None = None,
    ) -> str:
        """Record a task that already ran (in the process that submitted it) and return its
        new id; ``log`` lines are timestamped now, ``meta`` settings written with it."""
        return self._insert(
            meta,
            program_id=program_id,
            input=input_text,
            device=device,
            noise=int(noise),
            seed=seed,
            limits=limits,
            status=status,
            result=result,
            logs="".join(_log_line(line) for line in log or []),
            reason=reason,
            worker_pid=os.getpid(),
            created_at=started_at,
            started_at=started_at,
            ended_at=ended_at,
        )

    def _insert(self, meta: dict[str, str] | None, **columns: object) -> str:
        """Insert a task of these ``columns`` (names from this module, never from input)."""
        columns["id"] = task_id = uuid4_text()
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        with self._write() as conn:
            if meta:
                conn.executemany(_SET_META, meta.items())
            conn.execute(f"INSERT INTO tasks ({names}) VALUES ({marks})", tuple(columns.values()))
        return task_id

    def get(self, task_id: str) -> TaskRecord:
        """The task ``task_id``.

        Raises:
            TaskNotFoundError: no such task in this state directory.
        """
        row = (
            self._connection()
            .execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
            .fetchone()
        )
        if row is None:
            raise TaskNotFoundError(
                f"task {task_id!r} is not known to the local emulator whose state directory is "
                f"{self.state_dir}; check the task id and the QRMI_LOCAL_STATE_DIR setting"
            )
        return TaskRecord.from_row(row)

    def status(self, task_id: str) -> str:
        """The status string of ``task_id`` (raises TaskNotFoundError)."""
        row = (
            self._connection()
            .execute("SELECT status FROM tasks WHERE id = ?", (task_id,))
            .fetchone()
        )
        if row is None:
            self.get(task_id)  # raises with the full message
        return str(row["status"])

    def tasks(self) -> list[TaskRecord]:
        """Every task, oldest first."""
        rows = self._connection().execute(f"SELECT {_TASK_COLUMNS} FROM tasks ORDER BY seq")
        return [TaskRecord.from_row(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Number of tasks per status."""
        rows = self._connection().execute("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status")
        return {row["status"]: row["n"] for row in rows}

    def claim_next(
        self,
        *,
        lane: int,
        worker_pid: int,
        log: Callable[[TaskRecord], str] | None = None,
    ) -> TaskRecord | None:
        """Move the oldest queued task to Running on ``lane`` and return it as it now is; None
        when the queue is empty. ``log`` gives a line for its logs, added in the same write."""
        with self._write() as conn:
            row = conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE status = ? ORDER BY seq LIMIT 1",
                (QUEUED,),
            ).fetchone()
            if row is None:
                return None
            claimed = dataclasses.replace(
                TaskRecord.from_row(row),
                status=RUNNING,
                lane=lane,
                worker_pid=worker_pid,
                started_at=time.time(),
            )
            line = _log_line(log(claimed)) if log is not None else ""
            conn.execute(
                "UPDATE tasks SET status = ?, lane = ?, worker_pid = ?, started_at = ?, "
                "logs = logs || ? WHERE id = ?",
                (RUNNING, lane, worker_pid, claimed.started_at, line, claimed.id),
            )
        return dataclasses.replace(claimed, logs=claimed.logs + line)

    def finish(
        self,
        task_id: str,
        status: str,
        *,
        result: str | None = None,
        reason: str | None = None,
        log: str | None = None,
        from_states: tuple[str, ...] = (RUNNING,),
    ) -> bool:
        """Move a task to a final ``status`` if it is in one of ``from_states``.

        Returns False (and changes nothing) when the task had already moved on, e.g. a result
        arriving after the task was cancelled.
        """
        line = _log_line(log) if log else ""
        marks = ", ".join("?" for _ in from_states)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE tasks SET status = ?, result = ?, reason = ?, ended_at = ?, "
                f"logs = logs || ? WHERE id = ? AND status IN ({marks})",
                (status, result, reason, time.time(), line, task_id, *from_states),
            )
        return cursor.rowcount == 1

    def cancel(self, task_id: str, reason: str = "cancelled by task_stop") -> bool:
        """Cancel a queued or running task; False if it was already final."""
        return self.finish(
            task_id, CANCELLED, reason=reason, log=reason, from_states=(QUEUED, RUNNING)
        )

    def append_log(self, task_id: str, message: str) -> None:
        """Add a timestamped line to the task's logs."""
        with self._write() as conn:
            conn.execute(
                "UPDATE tasks SET logs = logs || ? WHERE id = ?", (_log_line(message), task_id)
            )

    def fail_running(self, reason: str, *, worker_pid: int | None = None) -> list[str]:
        """Fail Running tasks (of ``worker_pid``, or all) whose worker is gone; return their ids."""
        with self._write() as conn:
            if worker_pid is None:
                rows = conn.execute("SELECT id FROM tasks WHERE status = ?", (RUNNING,))
            else:
                rows = conn.execute(
                    "SELECT id FROM tasks WHERE status = ? AND worker_pid = ?",
                    (RUNNING, worker_pid),
                )
            ids = [row["id"] for row in rows]
            now = time.time()
            for task_id in ids:
                conn.execute(
                    "UPDATE tasks SET status = ?, reason = ?, ended_at = ?, logs = logs || ? "
                    "WHERE id = ? AND status = ?",
                    (FAILED, reason, now, _log_line(reason), task_id, RUNNING),
                )
        return ids

    def purge(self, older_than_seconds: float, *, now: float | None = None) -> int:
        """Delete finished tasks and released leases that ended ``older_than_seconds`` ago.

        Returns the number of tasks deleted. The file is compacted when most of it is free.
        """
        cutoff = (time.time() if now is None else now) - older_than_seconds
        marks = ", ".join("?" for _ in FINAL_STATES)
        with self._write() as conn:
            deleted = conn.execute(
                f"DELETE FROM tasks WHERE status IN ({marks}) AND ended_at < ?",
                (*FINAL_STATES, cutoff),
            ).rowcount
            conn.execute("DELETE FROM leases WHERE released_at < ?", (cutoff,))
        if deleted:
            self._compact()
        return int(deleted)

    def _compact(self) -> None:
        conn = self._connection()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        if pages >= 256 and free * 2 > pages:
            conn.execute("VACUUM")

    # ----- leases -----------------------------------------------------------------------------

    def acquire_lease(self) -> str:
        """Record a new lease and return its token."""
        token = uuid4_text()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO leases (token, acquired_at) VALUES (?, ?)", (token, time.time())
            )
        return token

    def release_lease(self, token: str) -> bool:
        """Count a release of ``token``; True the first time it is released."""
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                "SELECT release_count FROM leases WHERE token = ?", (token,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO leases (token, released_at, release_count) VALUES (?, ?, 1)",
                    (token, now),
                )
                return False
            conn.execute(
                "UPDATE leases SET release_count = release_count + 1, "
                "released_at = COALESCE(released_at, ?) WHERE token = ?",
                (now, token),
            )
        return int(row["release_count"]) == 0

    def lease(self, token: str) -> LeaseRecord | None:
        """The lease ``token``, or None."""
        row = (
            self._connection().execute("SELECT * FROM leases WHERE token = ?", (token,)).fetchone()
        )
        return None if row is None else _lease(row)

    def leases(self) -> list[LeaseRecord]:
        """Every lease, oldest acquisition first."""
        rows = self._connection().execute("SELECT * FROM leases ORDER BY acquired_at, token")
        return [_lease(row) for row in rows]

    # ----- worker and settings ----------------------------------------------------------------

    def register_worker(self, pid: int) -> None:
        """Record ``pid`` as the live worker."""
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO worker (id, pid, started_at, heartbeat_at) "
                "VALUES (1, ?, ?, ?)",
                (pid, now, now),
            )

    def heartbeat(self, pid: int) -> None:
        """Refresh the worker's heartbeat."""
        with self._write() as conn:
            conn.execute("UPDATE worker SET heartbeat_at = ? WHERE pid = ?", (time.time(), pid))

    def unregister_worker(self, pid: int) -> None:
        """Forget the worker ``pid`` (it is exiting)."""
        with self._write() as conn:
            conn.execute("DELETE FROM worker WHERE pid = ?", (pid,))

    def worker(self) -> WorkerRecord | None:
        """The registered worker, or None."""
        row = self._connection().execute("SELECT * FROM worker WHERE id = 1").fetchone()
        if row is None:
            return None
        return WorkerRecord(row["pid"], row["started_at"], row["heartbeat_at"])

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting for the worker."""
        with self._write() as conn:
            conn.execute(_SET_META, (key, value))

    def get_meta(self, key: str) -> str | None:
        """A stored setting, or None."""
        row = self._connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])


_SET_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"


def _lease(row: sqlite3.Row) -> LeaseRecord:
    return LeaseRecord(row["token"], row["acquired_at"], row["released_at"], row["release_count"])


def _log_line(message: str) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    return f"{stamp}Z {message}\n"


def _use_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Put the database in WAL mode (once per file: the mode is persistent).

    The switch needs the file to itself, and SQLite answers "database is locked" at once, not
    after its busy timeout, when another process opening a new store holds it: retry until
    ``timeout``, as the busy timeout would."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        else:
            return  # "wal", or a file system without WAL keeps its journal: still correct
        time.sleep(0.01)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    present = {row["name"] for row in conn.execute("PRAGMA table_info(tasks)")}
    for name, kind in _ADDED_TASK_COLUMNS.items():
        if name not in present:
            try:
                conn.execute(f"ALTER TABLE tasks ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as exc:  # another process added it meanwhile
                if "duplicate column" not in str(exc):
                    raise


def _wrap_public_methods() -> None:
    """Apply :func:`_storage_errors` to every public method of TaskStore."""
    for name, value in list(vars(TaskStore).items()):
        if callable(value) and not name.startswith("_") and not hasattr(value, "__wrapped__"):
            setattr(TaskStore, name, _storage_errors(value))


_wrap_public_methods()
