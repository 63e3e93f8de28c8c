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
from dataclasses import dataclass
from pathlib import Path

__all__ = ["JobRecord", "LeaseRecord", "Store", "TaskRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    uid INTEGER NOT NULL,
    token_hash TEXT UNIQUE,
    revoked_hash TEXT,
    created REAL NOT NULL,
    expires REAL,
    state TEXT NOT NULL DEFAULT 'active',
    run_id TEXT
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
CREATE TABLE IF NOT EXISTS used_credentials (
    digest TEXT PRIMARY KEY,
    forget_after REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS paused (
    qpu TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    since REAL NOT NULL
);
"""


_JOB_COLUMNS = "job_id, uid, created, expires, state, run_id"
#: Separates a job id from the number of an archived run (``1234~1``): a requeued job's
#: earlier runs keep their rows under such ids, which no Slurm job id can take.
RUN_SEPARATOR = "~"


@dataclass(frozen=True)
class JobRecord:
    """A job the gateway knows. ``state``: ``active``, ``finishing`` or ``finished``.

    ``run_id`` tells one run of the job from the next (Slurm requeues a job under the same id);
    ``None`` for a job started without one."""

    job_id: str
    uid: int
    created: float
    expires: float | None
    state: str
    qpus: tuple[str, ...]
    run_id: str | None = None


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
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Bring a store made by an older gateway up to the current schema."""
        try:
            self._db.execute("SELECT run_id FROM jobs WHERE 0 = 1").fetchall()
        except sqlite3.OperationalError:
            self._db.execute("ALTER TABLE jobs ADD COLUMN run_id TEXT")

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
        run_id: str | None = None,
    ) -> None:
        """Record a new active job; its QPUs are those of its main leases (:meth:`add_lease`)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (job_id, uid, token_hash, created, expires, run_id) "
                "VALUES (?,?,?,?,?,?)",
                (job_id, uid, token_hash, self.clock(), expires, run_id),
            )

    def set_run(self, job_id: str, run_id: str) -> None:
        """Record the run identity of a job started without one."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET run_id = ? WHERE job_id = ? AND run_id IS NULL", (run_id, job_id)
            )

    def archive_job(self, job_id: str) -> str:
        """Move the job's rows (job, leases, tasks) to ``<job_id>~<n>``, the first free ``n``,
        in one transaction, so that the id can start a new run; return the archive's id.

        The archived run keeps its revoked token hash (a copied token is answered "revoked")
        and its tasks (visible to admins, to no job).
        """
        with self._transaction() as db:
            number = 1
            while db.execute(
                "SELECT 1 FROM jobs WHERE job_id = ?", (f"{job_id}{RUN_SEPARATOR}{number}",)
            ).fetchone():
                number += 1
            archived = f"{job_id}{RUN_SEPARATOR}{number}"
            for table in ("leases", "tasks", "jobs"):
                db.execute(f"UPDATE {table} SET job_id = ? WHERE job_id = ?", (archived, job_id))
            return archived

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
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?",
                (job_id,),
            ).fetchone()
            return None if row is None else self._job(row)

    def job_by_token(self, token_hash: str) -> JobRecord | None:
        """The job whose current token hashes to ``token_hash``, or ``None``."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE token_hash = ?",
                (token_hash,),
            ).fetchone()
            return None if row is None else self._job(row)

    def job_by_revoked_token(self, token_hash: str) -> JobRecord | None:
        """The job whose revoked token hashes to ``token_hash``, or ``None``."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE revoked_hash = ?",
                (token_hash,),
            ).fetchone()
            return None if row is None else self._job(row)

    def jobs(self, state: str | None = None) -> list[JobRecord]:
        """Every job (in ``state`` when given), oldest first."""
        query = f"SELECT {_JOB_COLUMNS} FROM jobs"
        args: tuple[str, ...] = ()
        if state is not None:
            query, args = query + " WHERE state = ?", (state,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created", args).fetchall()
            return [self._job(row) for row in rows]

    def _job(self, row: tuple[str, int, float, float | None, str, str | None]) -> JobRecord:
        qpus = self._db.execute(
            "SELECT qpu FROM leases WHERE job_id = ? AND main = 1 ORDER BY rowid", (row[0],)
        ).fetchall()
        return JobRecord(row[0], row[1], row[2], row[3], row[4], tuple(q for (q,) in qpus), row[5])

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
