"""The gateway's durable state: jobs, their token hashes, leases and task ownership.

One SQLite file in WAL mode (embedded, nothing to set up). Every change is committed before the
gateway answers, so a gateway killed at any point and started again on the same file knows every
job, lease and task it had acknowledged. Job tokens are stored only as SHA-256 hashes.

Thread-safe: one connection guarded by a lock (the gateway's calls to the store are short; the
slow vendor calls happen outside it).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "JobRecord",
    "LeaseRecord",
    "OpenTask",
    "QueuedTask",
    "Store",
    "TaskRecord",
    "UsageRecord",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    uid INTEGER NOT NULL,
    token_hash TEXT UNIQUE,
    revoked_hash TEXT,
    created REAL NOT NULL,
    expires REAL,
    state TEXT NOT NULL DEFAULT 'active',
    user_name TEXT,
    account TEXT,
    partition_name TEXT
);
CREATE TABLE IF NOT EXISTS leases (
    job_id TEXT NOT NULL,
    qpu TEXT NOT NULL,
    token TEXT NOT NULL,
    main INTEGER NOT NULL DEFAULT 0,
    released REAL,
    PRIMARY KEY (qpu, token)
);
CREATE INDEX IF NOT EXISTS leases_by_job ON leases (job_id);
CREATE TABLE IF NOT EXISTS tasks (
    qpu TEXT NOT NULL,
    task_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (qpu, task_id)
);
CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks (job_id);
CREATE TABLE IF NOT EXISTS usage (
    qpu TEXT NOT NULL,
    task_id TEXT NOT NULL,
    slurm_job_id TEXT NOT NULL,
    uid INTEGER NOT NULL,
    user_name TEXT,
    account TEXT,
    partition_name TEXT,
    qpu_type TEXT NOT NULL,
    payload_kind TEXT NOT NULL,
    program TEXT,
    shots INTEGER,
    input_bytes INTEGER NOT NULL,
    submitted REAL NOT NULL,
    started REAL,
    ended REAL,
    state TEXT NOT NULL,
    quantum_seconds REAL,
    usage_source TEXT,
    result_bytes INTEGER,
    PRIMARY KEY (qpu, task_id)
);
CREATE INDEX IF NOT EXISTS usage_by_job ON usage (slurm_job_id);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage (submitted);
CREATE TABLE IF NOT EXISTS used_credentials (
    digest TEXT PRIMARY KEY,
    forget_after REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS paused (
    qpu TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    since REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_open ON usage (qpu, ended);
CREATE INDEX IF NOT EXISTS usage_by_user ON usage (user_name, qpu, submitted);
CREATE INDEX IF NOT EXISTS usage_by_account ON usage (account, qpu, submitted);
CREATE TABLE IF NOT EXISTS task_queue (
    qpu TEXT NOT NULL,
    task_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    enqueued DOUBLE PRECISION NOT NULL,
    weight DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL,
    payload TEXT,
    claimed DOUBLE PRECISION,
    vendor_task_id TEXT,
    error TEXT,
    PRIMARY KEY (qpu, task_id)
);
CREATE INDEX IF NOT EXISTS task_queue_waiting ON task_queue (qpu, state, seq);
CREATE INDEX IF NOT EXISTS task_queue_order ON task_queue (qpu, seq);
CREATE TABLE IF NOT EXISTS fair_share (
    qpu TEXT NOT NULL,
    job_id TEXT NOT NULL,
    virtual_pass DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (qpu, job_id)
);
CREATE TABLE IF NOT EXISTS fair_share_clock (
    qpu TEXT PRIMARY KEY,
    virtual_time DOUBLE PRECISION NOT NULL
);
"""


@dataclass(frozen=True)
class JobRecord:
    """A job the gateway knows. ``state``: ``active``, ``finishing`` or ``finished``."""

    job_id: str
    uid: int
    created: float
    expires: float | None
    state: str
    qpus: tuple[str, ...]
    user_name: str | None = None
    account: str | None = None
    partition: str | None = None


@dataclass(frozen=True)
class UsageRecord:
    """One task's accounting record: who ran what on which QPU, when, and what it cost.

    ``quantum_seconds`` is the vendor's billed QPU time when its API reports one
    (``usage_source`` ``"vendor"``), else the vendor-side running time (``"vendor-running"``),
    else the running time the gateway observed (``"gateway"``); ``None`` while unknown.
    ``state`` is a :class:`~qrmi.TaskStatus` name; ``ended`` is set once it is final.
    """

    qpu: str
    task_id: str
    slurm_job_id: str
    uid: int
    user_name: str | None
    account: str | None
    partition: str | None
    qpu_type: str
    payload_kind: str
    program: str | None
    shots: int | None
    input_bytes: int
    submitted: float
    started: float | None = None
    ended: float | None = None
    state: str = "Queued"
    quantum_seconds: float | None = None
    usage_source: str | None = None
    result_bytes: int | None = None


_JOB_SELECT = (
    "SELECT job_id, uid, created, expires, state, user_name, account, partition_name FROM jobs"
)
_USAGE_COLUMNS = (
    "qpu, task_id, slurm_job_id, uid, user_name, account, partition_name, qpu_type, "
    "payload_kind, program, shots, input_bytes, submitted, started, ended, state, "
    "quantum_seconds, usage_source, result_bytes"
)


@dataclass(frozen=True)
class LeaseRecord:
    """A vendor lease held for a job; ``main`` marks the one acquired at job start."""

    job_id: str
    qpu: str
    token: str
    main: bool
    released: float | None


@dataclass(frozen=True)
class TaskRecord:
    """Which job started a task on which QPU."""

    qpu: str
    task_id: str
    job_id: str
    created: float


@dataclass(frozen=True)
class QueuedTask:
    """A task the gateway holds in its own queue (fair sharing), by the id the client knows.

    ``state``: ``queued`` (waiting for a lane), ``dispatching`` (being submitted),
    ``dispatched`` (the vendor has it as ``vendor_task_id``), ``cancelled`` or ``failed``
    (``error`` says why). ``payload`` is the task's JSON payload while it waits.
    """

    qpu: str
    task_id: str
    job_id: str
    seq: int
    enqueued: float
    weight: float
    state: str
    payload: str | None = None
    vendor_task_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class OpenTask:
    """An unfinished task (its usage record is open): ``queue_state`` is its state in the
    gateway's queue (``None``: started directly); ``vendor_task_id`` the vendor's id when known."""

    task_id: str
    job_id: str
    queue_state: str | None
    vendor_task_id: str | None
    submitted: float = 0.0

    @property
    def at_vendor(self) -> bool:
        """True when the vendor has the task (it occupies a lane or the vendor's queue)."""
        return self.queue_state in (None, "dispatching", "dispatched")


_QUEUE_COLUMNS = (
    "qpu, task_id, job_id, seq, enqueued, weight, state, payload, vendor_task_id, error"
)


class Store:
    """The SQLite store at ``path`` (created with mode 0600 if missing)."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._create_private(self.path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    @staticmethod
    def _create_private(path: Path) -> None:
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ----- jobs --------------------------------------------------------------------------------

    def add_job(
        self,
        job_id: str,
        uid: int,
        token_hash: str,
        expires: float | None,
        *,
        user_name: str | None = None,
        account: str | None = None,
        partition: str | None = None,
    ) -> None:
        """Record a new active job; its QPUs are those of its main leases (:meth:`add_lease`)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (job_id, uid, token_hash, created, expires, user_name, "
                "account, partition_name) VALUES (?,?,?,?,?,?,?,?)",
                (job_id, uid, token_hash, self.clock(), expires, user_name, account, partition),
            )

    def set_token(self, job_id: str, token_hash: str) -> None:
        """Replace the job's token hash (a repeated job start mints a new token)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET revoked_hash = token_hash, token_hash = ? WHERE job_id = ?",
                (token_hash, job_id),
            )

    def revoke_token(self, job_id: str) -> None:
        """Revoke the job's token; its hash is kept to say "revoked" rather than "unknown"."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET revoked_hash = COALESCE(token_hash, revoked_hash), "
                "token_hash = NULL WHERE job_id = ?",
                (job_id,),
            )

    def delete_job(self, job_id: str) -> None:
        """Forget a job whose start failed (its leases were released), so it may start again."""
        with self._transaction() as db:
            db.execute("DELETE FROM leases WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM tasks WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def set_state(self, job_id: str, state: str) -> None:
        """Move the job to ``state``."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = ? WHERE job_id = ?", (state, job_id))

    def job(self, job_id: str) -> JobRecord | None:
        """The job ``job_id``, or ``None``."""
        with self._lock:
            row = self._db.execute(
                _JOB_SELECT + " WHERE job_id = ?",
                (job_id,),
            ).fetchone()
            return None if row is None else self._job(row)

    def job_by_token(self, token_hash: str) -> JobRecord | None:
        """The job whose current token hashes to ``token_hash``, or ``None``."""
        with self._lock:
            row = self._db.execute(
                _JOB_SELECT + " WHERE token_hash = ?",
                (token_hash,),
            ).fetchone()
            return None if row is None else self._job(row)

    def job_by_revoked_token(self, token_hash: str) -> JobRecord | None:
        """The job whose revoked token hashes to ``token_hash``, or ``None``."""
        with self._lock:
            row = self._db.execute(
                _JOB_SELECT + " WHERE revoked_hash = ?",
                (token_hash,),
            ).fetchone()
            return None if row is None else self._job(row)

    def jobs(self, state: str | None = None) -> list[JobRecord]:
        """Every job (in ``state`` when given), oldest first."""
        query = _JOB_SELECT
        args: tuple[str, ...] = ()
        if state is not None:
            query, args = query + " WHERE state = ?", (state,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created", args).fetchall()
            return [self._job(row) for row in rows]

    def _job(self, row: tuple[Any, ...]) -> JobRecord:
        qpus = self._db.execute(
            "SELECT qpu FROM leases WHERE job_id = ? AND main = 1 ORDER BY rowid", (row[0],)
        ).fetchall()
        job_id, uid, created, expires, state, user_name, account, partition = row
        return JobRecord(
            job_id,
            uid,
            created,
            expires,
            state,
            tuple(q for (q,) in qpus),
            user_name,
            account,
            partition,
        )

    # ----- leases ------------------------------------------------------------------------------

    def add_lease(self, job_id: str, qpu: str, token: str, *, main: bool) -> None:
        """Record a vendor lease held for ``job_id``."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO leases (job_id, qpu, token, main) VALUES (?,?,?,?)",
                (job_id, qpu, token, int(main)),
            )

    def leases(self, job_id: str, *, held_only: bool = False) -> list[LeaseRecord]:
        """The job's leases, in the order they were acquired."""
        query = "SELECT job_id, qpu, token, main, released FROM leases WHERE job_id = ?"
        if held_only:
            query += " AND released IS NULL"
        with self._lock:
            rows = self._db.execute(query + " ORDER BY rowid", (job_id,)).fetchall()
        return [LeaseRecord(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    def lease(self, qpu: str, token: str) -> LeaseRecord | None:
        """The lease ``token`` on ``qpu``, or ``None``."""
        with self._lock:
            r = self._db.execute(
                "SELECT job_id, qpu, token, main, released FROM leases WHERE qpu = ? AND token = ?",
                (qpu, token),
            ).fetchone()
        return None if r is None else LeaseRecord(r[0], r[1], r[2], bool(r[3]), r[4])

    def mark_released(self, qpu: str, token: str) -> bool:
        """Mark the lease released; False when it already was (so a release happens once)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE leases SET released = ? WHERE qpu = ? AND token = ? AND released IS NULL",
                (self.clock(), qpu, token),
            )
            return cursor.rowcount == 1

    # ----- tasks -------------------------------------------------------------------------------

    def add_task(self, qpu: str, task_id: str, job_id: str) -> None:
        """Record that ``job_id`` started ``task_id`` on ``qpu``."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO tasks (qpu, task_id, job_id, created) VALUES (?,?,?,?)",
                (qpu, task_id, job_id, self.clock()),
            )

    def task(self, qpu: str, task_id: str) -> TaskRecord | None:
        """Who owns ``task_id`` on ``qpu``, or ``None``."""
        with self._lock:
            row = self._db.execute(
                "SELECT qpu, task_id, job_id, created FROM tasks WHERE qpu = ? AND task_id = ?",
                (qpu, task_id),
            ).fetchone()
        return None if row is None else TaskRecord(*row)

    def tasks(self, job_id: str | None = None) -> list[TaskRecord]:
        """Every task (of ``job_id`` when given), oldest first."""
        query = "SELECT qpu, task_id, job_id, created FROM tasks"
        args: tuple[str, ...] = ()
        if job_id is not None:
            query, args = query + " WHERE job_id = ?", (job_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created, rowid", args).fetchall()
        return [TaskRecord(*row) for row in rows]

    # ----- usage records -----------------------------------------------------------------------

    def add_usage(self, record: UsageRecord) -> None:
        """Record a task the moment it is started (so no job end can lose it)."""
        values = tuple(getattr(record, f.name) for f in fields(UsageRecord))
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO usage ({_USAGE_COLUMNS}) VALUES ({','.join('?' * len(values))}) "
                "ON CONFLICT (qpu, task_id) DO NOTHING",
                values,
            )

    def mark_usage_running(self, qpu: str, task_id: str, when: float) -> None:
        """Note when the gateway first saw the task running."""
        with self._transaction() as db:
            db.execute(
                "UPDATE usage SET started = ?, state = 'Running' "
                "WHERE qpu = ? AND task_id = ? AND started IS NULL AND ended IS NULL",
                (when, qpu, task_id),
            )

    def end_usage(
        self,
        qpu: str,
        task_id: str,
        *,
        state: str,
        ended: float,
        quantum_seconds: float | None,
        usage_source: str | None,
    ) -> bool:
        """Record the task's final state and cost; False when it was recorded before."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE usage SET state = ?, ended = ?, quantum_seconds = ?, usage_source = ? "
                "WHERE qpu = ? AND task_id = ? AND ended IS NULL",
                (state, ended, quantum_seconds, usage_source, qpu, task_id),
            )
            return cursor.rowcount == 1

    def set_result_bytes(self, qpu: str, task_id: str, size: int) -> None:
        """Record the size of the task's result."""
        with self._transaction() as db:
            db.execute(
                "UPDATE usage SET result_bytes = ? WHERE qpu = ? AND task_id = ?",
                (size, qpu, task_id),
            )

    def usage_of(self, qpu: str, task_id: str) -> UsageRecord | None:
        """The usage record of one task, or ``None``."""
        with self._transaction() as db:
            row = db.execute(
                f"SELECT {_USAGE_COLUMNS} FROM usage WHERE qpu = ? AND task_id = ?",
                (qpu, task_id),
            ).fetchone()
        return None if row is None else UsageRecord(*row)

    def usage(
        self,
        *,
        slurm_job_id: str | None = None,
        start: float | None = None,
        end: float | None = None,
        open_only: bool = False,
    ) -> list[UsageRecord]:
        """Usage records (of one Slurm job; submitted in ``[start, end)``), oldest first."""
        conditions, args = [], []
        for condition, value in (
            ("slurm_job_id = ?", slurm_job_id),
            ("submitted >= ?", start),
            ("submitted < ?", end),
        ):
            if value is not None:
                conditions.append(condition)
                args.append(value)
        if open_only:
            conditions.append("ended IS NULL")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {_USAGE_COLUMNS} FROM usage{where} ORDER BY submitted, task_id", args
            ).fetchall()
        return [UsageRecord(*row) for row in rows]

    # ----- MUNGE replay guard, pauses ----------------------------------------------------------

    def use_credential(self, digest: str, forget_after: float) -> bool:
        """Record a credential as used; False when it was used before (a replay)."""
        with self._transaction() as db:
            db.execute("DELETE FROM used_credentials WHERE forget_after < ?", (self.clock(),))
            cursor = db.execute(
                "INSERT OR IGNORE INTO used_credentials (digest, forget_after) VALUES (?,?)",
                (digest, forget_after),
            )
            return cursor.rowcount == 1

    def pause(self, qpu: str, reason: str) -> None:
        """Refuse new tasks on ``qpu`` until :meth:`resume`."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO paused (qpu, reason, since) VALUES (?,?,?)",
                (qpu, reason, self.clock()),
            )

    def resume(self, qpu: str) -> None:
        """Accept tasks on ``qpu`` again."""
        with self._transaction() as db:
            db.execute("DELETE FROM paused WHERE qpu = ?", (qpu,))

    def paused(self, qpu: str) -> str | None:
        """The reason ``qpu`` is paused, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT reason FROM paused WHERE qpu = ?", (qpu,)).fetchone()
        return None if row is None else str(row[0])

    # ----- quotas ------------------------------------------------------------------------------

    def qpu_seconds_used(self, qpu: str, kind: str, name: str, since: float) -> float:
        """QPU seconds of the tasks a user (``kind`` ``user``) or an account submitted on
        ``qpu`` since ``since`` (unfinished tasks count nothing yet)."""
        column = {"user": "user_name", "account": "account"}[kind]
        with self._transaction() as db:
            row = db.execute(
                f"SELECT COALESCE(SUM(quantum_seconds), 0) FROM usage WHERE qpu = ? AND "
                f"{column} = ? AND submitted >= ?",
                (qpu, name, since),
            ).fetchone()
        return float(row[0])

    def usage_since(self, since: float) -> list[tuple[str, str | None, str | None, float]]:
        """``(qpu, user, account, qpu_seconds)`` totals of the tasks submitted since ``since``."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT qpu, user_name, account, COALESCE(SUM(quantum_seconds), 0) FROM usage "
                "WHERE submitted >= ? GROUP BY qpu, user_name, account",
                (since,),
            ).fetchall()
        return [(r[0], r[1], r[2], float(r[3])) for r in rows]

    def job_task_count(self, job_id: str, qpu: str) -> int:
        """How many tasks the Slurm job started on ``qpu``."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM usage WHERE slurm_job_id = ? AND qpu = ?", (job_id, qpu)
            ).fetchone()
        return int(row[0])

    def open_tasks(self, qpu: str, job_id: str | None = None) -> list[OpenTask]:
        """The unfinished tasks on ``qpu`` (of one job), oldest first."""
        query = (
            "SELECT u.task_id, u.slurm_job_id, q.state, q.vendor_task_id, u.submitted FROM usage u "
            "LEFT JOIN task_queue q ON q.qpu = u.qpu AND q.task_id = u.task_id "
            "WHERE u.qpu = ? AND u.ended IS NULL"
        )
        args: tuple[str, ...] = (qpu,)
        if job_id is not None:
            query, args = query + " AND u.slurm_job_id = ?", (qpu, job_id)
        with self._transaction() as db:
            rows = db.execute(query + " ORDER BY u.submitted, u.task_id", args).fetchall()
        return [OpenTask(*row) for row in rows]

    # ----- the fair-share queue ----------------------------------------------------------------

    def enqueue(
        self, qpu: str, task_id: str, job_id: str, payload: str, weight: float, when: float
    ) -> None:
        """Hold a task in the gateway's queue of ``qpu``. A job that had nothing waiting starts
        at the QPU's virtual time, so it gets the next turn rather than a catch-up burst."""
        with self._transaction() as db:
            waiting = db.execute(
                "SELECT COUNT(*) FROM task_queue WHERE qpu = ? AND job_id = ? "
                "AND state IN ('queued', 'dispatching')",
                (qpu, job_id),
            ).fetchone()[0]
            if not waiting:
                row = db.execute(
                    "SELECT virtual_time FROM fair_share_clock WHERE qpu = ?", (qpu,)
                ).fetchone()
                db.execute(
                    "INSERT INTO fair_share (qpu, job_id, virtual_pass) VALUES (?,?,?) "
                    "ON CONFLICT (qpu, job_id) DO UPDATE SET virtual_pass = CASE "
                    "WHEN fair_share.virtual_pass < excluded.virtual_pass "
                    "THEN excluded.virtual_pass ELSE fair_share.virtual_pass END",
                    (qpu, job_id, 0.0 if row is None else float(row[0])),
                )
            seq = db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM task_queue WHERE qpu = ?", (qpu,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO task_queue (qpu, task_id, job_id, seq, enqueued, weight, state, "
                "payload) VALUES (?,?,?,?,?,?,'queued',?)",
                (qpu, task_id, job_id, seq, when, weight, payload),
            )

    def queued_task(self, qpu: str, task_id: str) -> QueuedTask | None:
        """The queue entry of ``task_id`` (without its payload), or ``None``."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT qpu, task_id, job_id, seq, enqueued, weight, state, NULL, "
                "vendor_task_id, error FROM task_queue WHERE qpu = ? AND task_id = ?",
                (qpu, task_id),
            ).fetchone()
        return None if row is None else QueuedTask(*row)

    def queue_load(self, qpu: str) -> tuple[int, int]:
        """``(at_vendor, waiting)``: unfinished tasks the vendor has on ``qpu``, and tasks
        waiting in the gateway's queue."""
        with self._transaction() as db:
            at_vendor = db.execute(
                "SELECT COUNT(*) FROM usage u LEFT JOIN task_queue q "
                "ON q.qpu = u.qpu AND q.task_id = u.task_id "
                "WHERE u.qpu = ? AND u.ended IS NULL AND (q.state IS NULL OR q.state <> 'queued')",
                (qpu,),
            ).fetchone()[0]
            waiting = db.execute(
                "SELECT COUNT(*) FROM task_queue WHERE qpu = ? AND state = 'queued'", (qpu,)
            ).fetchone()[0]
        return int(at_vendor), int(waiting)

    def waiting_ahead(self, qpu: str, seq: int) -> int:
        """How many tasks wait in ``qpu``'s queue since before the task of ordinal ``seq``."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM task_queue WHERE qpu = ? AND state = 'queued' AND seq < ?",
                (qpu, seq),
            ).fetchone()
        return int(row[0])

    def backlogged_qpus(self) -> list[str]:
        """The QPUs with tasks waiting in the gateway's queue."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT DISTINCT qpu FROM task_queue WHERE state = 'queued' ORDER BY qpu"
            ).fetchall()
        return [row[0] for row in rows]

    def claim_next(self, qpu: str, *, fair: bool = True) -> QueuedTask | None:
        """Take the next waiting task of ``qpu`` (of an active job) for submission: with
        ``fair``, the oldest task of the job with the lowest virtual pass (stride scheduling:
        each dispatch advances the job's pass by 1/weight, so backlogged jobs take turns in
        proportion to their weights); without, the oldest task of all. ``None``: none waits."""
        order = "COALESCE(f.virtual_pass, 0), q.seq" if fair else "q.seq"
        with self._transaction() as db:
            row = db.execute(
                "SELECT q.qpu, q.task_id, q.job_id, q.seq, q.enqueued, q.weight, q.state, "
                "q.payload, q.vendor_task_id, q.error, COALESCE(f.virtual_pass, 0) "
                "FROM task_queue q JOIN jobs j ON j.job_id = q.job_id "
                "LEFT JOIN fair_share f ON f.qpu = q.qpu AND f.job_id = q.job_id "
                f"WHERE q.qpu = ? AND q.state = 'queued' AND j.state = 'active' ORDER BY {order} "
                "LIMIT 1",
                (qpu,),
            ).fetchone()
            if row is None:
                return None
            entry, virtual_pass = QueuedTask(*row[:10]), float(row[10])
            claimed = db.execute(
                "UPDATE task_queue SET state = 'dispatching', claimed = ? "
                "WHERE qpu = ? AND task_id = ? AND state = 'queued'",
                (self.clock(), qpu, entry.task_id),
            )
            if claimed.rowcount != 1:  # another gateway on a shared store took it first
                return None
            db.execute(
                "INSERT INTO fair_share_clock (qpu, virtual_time) VALUES (?,?) "
                "ON CONFLICT (qpu) DO UPDATE SET virtual_time = excluded.virtual_time",
                (qpu, virtual_pass),
            )
            db.execute(
                "UPDATE fair_share SET virtual_pass = ? WHERE qpu = ? AND job_id = ?",
                (virtual_pass + 1.0 / entry.weight, qpu, entry.job_id),
            )
        return entry

    def mark_dispatched(self, qpu: str, task_id: str, vendor_task_id: str) -> bool:
        """The vendor took the task as ``vendor_task_id`` (its payload is dropped). False when
        it was cancelled while being submitted (the caller stops it at the vendor)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE task_queue SET state = 'dispatched', vendor_task_id = ?, payload = NULL "
                "WHERE qpu = ? AND task_id = ? AND state = 'dispatching'",
                (vendor_task_id, qpu, task_id),
            )
            return cursor.rowcount == 1

    def mark_requeued(self, qpu: str, task_id: str) -> None:
        """Put a task whose submission failed transiently back at its place in the queue."""
        with self._transaction() as db:
            db.execute(
                "UPDATE task_queue SET state = 'queued', claimed = NULL "
                "WHERE qpu = ? AND task_id = ? AND state = 'dispatching'",
                (qpu, task_id),
            )

    def end_queued(self, qpu: str, task_id: str, state: str, error: str | None = None) -> bool:
        """End a task that has not reached the vendor: ``cancelled`` or ``failed``. False when
        it was no longer waiting (it was dispatched meanwhile)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE task_queue SET state = ?, error = ?, payload = NULL "
                "WHERE qpu = ? AND task_id = ? AND state IN ('queued', 'dispatching')",
                (state, error, qpu, task_id),
            )
            return cursor.rowcount == 1

    def stale_dispatches(self, qpu: str, claimed_before: float) -> list[str]:
        """Tasks claimed for submission before ``claimed_before`` and never marked dispatched
        (their gateway died mid-submission)."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT task_id FROM task_queue WHERE qpu = ? AND state = 'dispatching' "
                "AND claimed < ?",
                (qpu, claimed_before),
            ).fetchall()
        return [row[0] for row in rows]
