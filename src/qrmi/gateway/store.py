"""The gateway's durable state: jobs, their token hashes, leases and task ownership.

Two databases hold it, chosen by the location given to :class:`Store`:

* a file path: one SQLite file in WAL mode (embedded, nothing to set up), for one gateway;
* a ``postgresql://`` URL: a PostgreSQL database (psycopg 3, a connection pool), which several
  gateway replicas share: a job started through one is served by all of them.

Every change is committed before the gateway answers, so a gateway killed at any point and
started again (or a replica taking over) knows every job, lease and task it had acknowledged.
Job tokens are stored only as SHA-256 hashes.

The SQL is written once for both: ``?`` placeholders (translated for psycopg),
``INSERT ... ON CONFLICT``, explicit ordering columns (no ``rowid``), and types both accept. A
method reads or writes with::

    with self._transaction() as db:
        row = db.execute("SELECT ... WHERE job_id = ?", (job_id,)).fetchone()

Thread-safe: SQLite uses one connection guarded by a lock (the gateway's calls to the store are
short; the slow vendor calls happen outside it); PostgreSQL a pool of connections.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qrmi.errors import ServiceUnavailableError

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = [
    "JobRecord",
    "LeaseRecord",
    "OpenTask",
    "QueuedTask",
    "Store",
    "StoreUnavailableError",
    "TaskRecord",
    "UsageRecord",
    "describe_location",
    "is_postgres_url",
]

#: Split on ``;`` into statements. Types that SQLite and PostgreSQL both accept: TEXT, BIGINT,
#: INTEGER, DOUBLE PRECISION for times (PostgreSQL's REAL has 24 bits: seconds since 1970
#: would lose minutes); no AUTOINCREMENT or ``rowid`` (order by a column of the row's own).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    uid BIGINT NOT NULL,
    token_hash TEXT UNIQUE,
    revoked_hash TEXT,
    created DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION,
    state TEXT NOT NULL DEFAULT 'active',
    user_name TEXT,
    account TEXT,
    partition_name TEXT,
    run_id TEXT,
    reservation TEXT
);
CREATE TABLE IF NOT EXISTS leases (
    job_id TEXT NOT NULL,
    qpu TEXT NOT NULL,
    token TEXT NOT NULL,
    main INTEGER NOT NULL DEFAULT 0,
    released DOUBLE PRECISION,
    seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (qpu, token)
);
CREATE INDEX IF NOT EXISTS leases_by_job ON leases (job_id);
CREATE INDEX IF NOT EXISTS leases_in_order ON leases (job_id, seq);
CREATE INDEX IF NOT EXISTS jobs_by_revoked_hash ON jobs (revoked_hash);
CREATE TABLE IF NOT EXISTS tasks (
    qpu TEXT NOT NULL,
    task_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    seq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (qpu, task_id)
);
CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks (job_id);
CREATE INDEX IF NOT EXISTS tasks_in_order ON tasks (job_id, seq);
CREATE TABLE IF NOT EXISTS usage (
    qpu TEXT NOT NULL,
    task_id TEXT NOT NULL,
    slurm_job_id TEXT NOT NULL,
    uid BIGINT NOT NULL,
    user_name TEXT,
    account TEXT,
    partition_name TEXT,
    qpu_type TEXT NOT NULL,
    payload_kind TEXT NOT NULL,
    program TEXT,
    shots INTEGER,
    input_bytes BIGINT NOT NULL,
    submitted DOUBLE PRECISION NOT NULL,
    started DOUBLE PRECISION,
    ended DOUBLE PRECISION,
    state TEXT NOT NULL,
    quantum_seconds DOUBLE PRECISION,
    usage_source TEXT,
    result_bytes BIGINT,
    PRIMARY KEY (qpu, task_id)
);
CREATE INDEX IF NOT EXISTS usage_by_job ON usage (slurm_job_id);
CREATE INDEX IF NOT EXISTS usage_by_time ON usage (submitted);
CREATE TABLE IF NOT EXISTS used_credentials (
    digest TEXT PRIMARY KEY,
    forget_after DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS paused (
    qpu TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL
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
CREATE TABLE IF NOT EXISTS admin_sessions (
    digest TEXT PRIMARY KEY,
    expires DOUBLE PRECISION NOT NULL
)
"""

#: Columns added after the first release: (table, column, definition, fill). Files made before
#: get them on open; ``seq`` is filled from SQLite's ``rowid`` so the old rows keep their order.
_ADDED_COLUMNS = (
    ("leases", "seq", "BIGINT NOT NULL DEFAULT 0", "rowid"),
    ("tasks", "seq", "BIGINT NOT NULL DEFAULT 0", "rowid"),
    ("jobs", "user_name", "TEXT", None),
    ("jobs", "account", "TEXT", None),
    ("jobs", "partition_name", "TEXT", None),
    ("jobs", "run_id", "TEXT", None),
    ("jobs", "reservation", "TEXT", None),
)

#: A job with its main QPUs in one statement (one round trip to PostgreSQL).
_JOB_SELECT = (
    "SELECT j.job_id, j.uid, j.created, j.expires, j.state, l.qpu, j.user_name, j.account, "
    "j.partition_name, j.run_id, j.reservation FROM jobs j LEFT JOIN leases l "
    "ON l.job_id = j.job_id "
    "AND l.main = 1"
)
#: The next ordinal of a job's leases or tasks, in the statement that inserts the row.
_NEXT_SEQ = "COALESCE(MAX(seq), 0) + 1"
#: Key of the advisory lock that serialises schema creation by replicas starting together.
_SCHEMA_LOCK = 0x71726D69  # "qrmi"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StoreUnavailableError(ServiceUnavailableError):
    """The store cannot be opened or reached (unusable path, database down or refusing us).

    The gateway answers it with HTTP 503, so that clients retry, or try another replica."""


class Cursor(Protocol):
    """What :meth:`Session.execute` returns (an sqlite3 or psycopg cursor)."""

    @property
    def rowcount(self) -> int:
        """Rows an INSERT, UPDATE or DELETE changed."""
        ...

    def fetchone(self) -> Any:
        """The next row (a tuple), or ``None``."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        ...


class Session(Protocol):
    """A transaction's connection: ``execute(sql, args)`` with ``?`` placeholders."""

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> Cursor:
        """Run one statement."""
        ...


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
    user_name: str | None = None
    account: str | None = None
    partition: str | None = None
    run_id: str | None = None
    #: The Slurm reservation the job runs in (a dedicated window gets the vendor's exclusive
    #: mode), as slurmctld has it.
    reservation: str | None = None


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


def is_postgres_url(location: str | Path) -> bool:
    """True when ``location`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(_POSTGRES_SCHEMES)


def describe_location(location: str | Path) -> str:
    """``location`` fit for logs and messages: a URL's password is replaced by ``***``."""
    text = str(location)
    if not is_postgres_url(text):
        return text
    scheme, rest = text.split("://", 1)
    head, question, query = rest.partition("?")
    userinfo, at, after = head.rpartition("@")  # a badly quoted password may hold "@" or "/"
    if at and ":" in userinfo:
        head = f"{userinfo.split(':', 1)[0]}:***@{after}"
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", query)
    return f"{scheme}://{head}{question}{query}"


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
    """The store at ``location``: a SQLite file path (created with mode 0600 if missing) or a
    ``postgresql://user@host:port/dbname`` URL (the database must exist; the tables are
    created on first use). ``pool_size`` bounds the PostgreSQL connections of this process;
    ``processes`` is how many gateway worker processes share a SQLite store.

    Raises:
        StoreUnavailableError: the database cannot be opened (the message says why, without
            the password).
    """

    def __init__(
        self,
        location: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        pool_size: int = 16,
        processes: int = 1,
    ) -> None:
        self.clock = clock
        self.location = describe_location(location)
        self._backend: _Sqlite | _Postgres
        if is_postgres_url(location):
            self.kind = "postgresql"
            self.path: Path | None = None
            self._backend = _Postgres(str(location), pool_size)
        else:
            self.kind = "sqlite"
            self.path = Path(location)
            self._backend = _Sqlite(self.path, processes=processes)
        self._processes = processes

    @property
    def shared(self) -> bool:
        """True when other gateway processes may write this store (PostgreSQL, or SQLite
        served by several worker processes)."""
        return self.kind == "postgresql" or self._processes > 1

    @property
    def remote(self) -> bool:
        """True when every read is a round trip to a database server (PostgreSQL); a SQLite
        read is a local file read, cheap enough for the event loop."""
        return self.kind == "postgresql"

    def close(self) -> None:
        """Close the database."""
        self._backend.close()

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._backend.transaction() as db:
            yield db

    @contextmanager
    def job_lock(self, job_id: str) -> Iterator[None]:
        """Hold the job's lock across gateway processes (a PostgreSQL advisory lock, or a
        file lock next to a SQLite store served by several workers; both are released if this
        process dies). The caller holds its in-process lock for the job first."""
        with self._backend.job_lock(job_id):
            yield

    # ----- admin page sessions -----------------------------------------------------------------

    def open_admin_session(self, digest: str, expires: float, *, limit: int) -> None:
        """Record a session (by its id's hash) until ``expires``; expired sessions go, and the
        ones ending first while ``limit`` sessions are open."""
        with self._transaction() as db:
            db.execute("DELETE FROM admin_sessions WHERE expires <= ?", (self.clock(),))
            (count,) = db.execute("SELECT COUNT(*) FROM admin_sessions").fetchone()
            if count >= limit:
                db.execute(
                    "DELETE FROM admin_sessions WHERE digest IN "
                    "(SELECT digest FROM admin_sessions ORDER BY expires LIMIT ?)",
                    (count - limit + 1,),
                )
            db.execute(
                "INSERT INTO admin_sessions (digest, expires) VALUES (?, ?)", (digest, expires)
            )

    def admin_session_live(self, digest: str) -> bool:
        """Whether the session with this hash is open and not expired."""
        with self._backend.read() as db:
            row = db.execute(
                "SELECT expires FROM admin_sessions WHERE digest = ?", (digest,)
            ).fetchone()
        return row is not None and float(row[0]) > self.clock()

    def close_admin_session(self, digest: str) -> None:
        """End the session with this hash (unknown ones are ignored)."""
        with self._transaction() as db:
            db.execute("DELETE FROM admin_sessions WHERE digest = ?", (digest,))

    # ----- jobs --------------------------------------------------------------------------------

    def add_job(
        self,
        job_id: str,
        uid: int,
        token_hash: str,
        expires: float | None,
        run_id: str | None = None,
        *,
        user_name: str | None = None,
        account: str | None = None,
        partition: str | None = None,
        reservation: str | None = None,
    ) -> None:
        """Record a new active job; its QPUs are those of its main leases (:meth:`add_lease`)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (job_id, uid, token_hash, created, expires, run_id, user_name, "
                "account, partition_name, reservation) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    job_id,
                    uid,
                    token_hash,
                    self.clock(),
                    expires,
                    run_id,
                    user_name,
                    account,
                    partition,
                    reservation,
                ),
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
        return self._one_job("j.job_id = ?", job_id)

    def job_by_token(self, token_hash: str) -> JobRecord | None:
        """The job whose current token hashes to ``token_hash``, or ``None``."""
        return self._one_job("j.token_hash = ?", token_hash)

    def job_by_revoked_token(self, token_hash: str) -> JobRecord | None:
        """The job whose revoked token hashes to ``token_hash``, or ``None``."""
        return self._one_job("j.revoked_hash = ?", token_hash)

    def active_job_id(self, token_hash: str) -> str | None:
        """The id of the active job whose current token hashes to ``token_hash``, or ``None``:
        one indexed lookup, for checking a cached token on every call."""
        with self._backend.read() as db:
            row = db.execute(
                "SELECT job_id FROM jobs WHERE token_hash = ? AND state = 'active'",
                (token_hash,),
            ).fetchone()
        return None if row is None else str(row[0])

    def jobs(self, state: str | None = None) -> list[JobRecord]:
        """Every job (in ``state`` when given), oldest first."""
        query = _JOB_SELECT
        args: tuple[str, ...] = ()
        if state is not None:
            query, args = query + " WHERE j.state = ?", (state,)
        with self._backend.read() as db:
            rows = db.execute(query + " ORDER BY j.created, j.job_id, l.seq", args).fetchall()
        return _jobs_from(rows)

    def _one_job(self, condition: str, value: str) -> JobRecord | None:
        with self._backend.read() as db:
            rows = db.execute(f"{_JOB_SELECT} WHERE {condition} ORDER BY l.seq", (value,))
            found = _jobs_from(rows.fetchall())
        return found[0] if found else None

    # ----- leases ------------------------------------------------------------------------------

    def add_lease(self, job_id: str, qpu: str, token: str, *, main: bool) -> None:
        """Record a vendor lease held for ``job_id``."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO leases (job_id, qpu, token, main, seq) "
                f"SELECT ?, ?, ?, ?, {_NEXT_SEQ} FROM leases WHERE job_id = ? "
                "ON CONFLICT (qpu, token) DO NOTHING",
                (job_id, qpu, token, int(main), job_id),
            )

    def leases(self, job_id: str, *, held_only: bool = False) -> list[LeaseRecord]:
        """The job's leases, in the order they were acquired."""
        query = "SELECT job_id, qpu, token, main, released FROM leases WHERE job_id = ?"
        if held_only:
            query += " AND released IS NULL"
        with self._backend.read() as db:
            rows = db.execute(query + " ORDER BY seq, qpu, token", (job_id,)).fetchall()
        return [LeaseRecord(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    def lease(self, qpu: str, token: str) -> LeaseRecord | None:
        """The lease ``token`` on ``qpu``, or ``None``."""
        with self._backend.read() as db:
            r = db.execute(
                "SELECT job_id, qpu, token, main, released FROM leases WHERE qpu = ? AND token = ?",
                (qpu, token),
            ).fetchone()
        return None if r is None else LeaseRecord(r[0], r[1], r[2], bool(r[3]), r[4])

    def mark_released(self, qpu: str, token: str) -> bool:
        """Mark the lease released; False when it already was (so a release happens once, also
        when two gateways race: the second UPDATE finds ``released`` set)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE leases SET released = ? WHERE qpu = ? AND token = ? AND released IS NULL",
                (self.clock(), qpu, token),
            )
            return cursor.rowcount == 1

    # ----- tasks -------------------------------------------------------------------------------

    def add_task(
        self, qpu: str, task_id: str, job_id: str, usage: UsageRecord | None = None
    ) -> None:
        """Record that ``job_id`` started ``task_id`` on ``qpu``, with the task's usage record
        when given (one transaction: one disk sync per task start)."""
        with self._transaction() as db:
            if usage is not None:
                _insert_usage(db, usage)
            db.execute(
                "INSERT INTO tasks (qpu, task_id, job_id, created, seq) "
                f"SELECT ?, ?, ?, ?, {_NEXT_SEQ} FROM tasks WHERE job_id = ? "
                "ON CONFLICT (qpu, task_id) DO UPDATE SET job_id = excluded.job_id, "
                "created = excluded.created, seq = excluded.seq",
                (qpu, task_id, job_id, self.clock(), job_id),
            )

    def task(self, qpu: str, task_id: str) -> TaskRecord | None:
        """Who owns ``task_id`` on ``qpu``, or ``None``."""
        with self._backend.read() as db:
            row = db.execute(
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
        with self._backend.read() as db:
            rows = db.execute(query + " ORDER BY created, seq, task_id", args).fetchall()
        return [TaskRecord(*row) for row in rows]

    # ----- usage records -----------------------------------------------------------------------

    def add_usage(self, record: UsageRecord) -> None:
        """Record a task the moment it is started (so no job end can lose it)."""
        with self._transaction() as db:
            _insert_usage(db, record)

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
        with self._backend.read() as db:
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
        with self._backend.read() as db:
            rows = db.execute(
                f"SELECT {_USAGE_COLUMNS} FROM usage{where} ORDER BY submitted, task_id", args
            ).fetchall()
        return [UsageRecord(*row) for row in rows]

    # ----- MUNGE replay guard, pauses ----------------------------------------------------------

    def use_credential(self, digest: str, forget_after: float) -> bool:
        """Record a credential as used; False when it was used before (a replay), by this
        gateway or another one on the same database."""
        with self._transaction() as db:
            db.execute("DELETE FROM used_credentials WHERE forget_after < ?", (self.clock(),))
            cursor = db.execute(
                "INSERT INTO used_credentials (digest, forget_after) VALUES (?,?) "
                "ON CONFLICT (digest) DO NOTHING",
                (digest, forget_after),
            )
            return cursor.rowcount == 1

    def pause(self, qpu: str, reason: str) -> None:
        """Refuse new tasks on ``qpu`` until :meth:`resume`."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO paused (qpu, reason, since) VALUES (?,?,?) ON CONFLICT (qpu) "
                "DO UPDATE SET reason = excluded.reason, since = excluded.since",
                (qpu, reason, self.clock()),
            )

    def resume(self, qpu: str) -> None:
        """Accept tasks on ``qpu`` again."""
        with self._transaction() as db:
            db.execute("DELETE FROM paused WHERE qpu = ?", (qpu,))

    def paused(self, qpu: str) -> str | None:
        """The reason ``qpu`` is paused, or ``None``."""
        with self._backend.read() as db:
            row = db.execute("SELECT reason FROM paused WHERE qpu = ?", (qpu,)).fetchone()
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

    def __repr__(self) -> str:
        return f"Store({self.location!r})"


def _jobs_from(rows: list[Any]) -> list[JobRecord]:
    """Jobs from ``_JOB_SELECT`` rows (one per main lease, or one with no QPU), in row order."""
    found: dict[str, tuple[Any, list[str]]] = {}
    for row in rows:
        qpus = found.setdefault(row[0], (row, []))[1]
        if row[5] is not None:
            qpus.append(row[5])
    return [
        JobRecord(head[0], head[1], head[2], head[3], head[4], tuple(qpus), *head[6:11])
        for head, qpus in found.values()
    ]


def _insert_usage(db: Session, record: UsageRecord) -> None:
    values = tuple(getattr(record, f.name) for f in fields(UsageRecord))
    db.execute(
        f"INSERT INTO usage ({_USAGE_COLUMNS}) VALUES ({','.join('?' * len(values))}) "
        "ON CONFLICT (qpu, task_id) DO NOTHING",
        values,
    )


def _statements(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


# ----- SQLite ------------------------------------------------------------------------------------


class _Sqlite:
    """One connection in autocommit mode; transactions are ``BEGIN IMMEDIATE`` (they take the
    write lock at once, so two writers never deadlock upgrading a read lock)."""

    def __init__(self, path: Path, *, processes: int = 1) -> None:
        self._lock = threading.Lock()
        # Worker processes sharing the file serialise a job's start and end with flock(2) on
        # one of these files (a new descriptor per hold: flock excludes descriptors, so threads
        # of one process exclude each other too, and the kernel drops it if the process dies).
        self._job_locks = None if processes < 2 else path.with_name(path.name + ".locks")
        try:
            self._create_private(path)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            with self.transaction() as db:
                _add_missing_columns(self._db)
                for statement in _statements(_SCHEMA):
                    db.execute(statement)
            if self._job_locks is not None:
                self._job_locks.mkdir(mode=0o700, exist_ok=True)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailableError(f"cannot open the SQLite store {path}: {exc}") from None

    @staticmethod
    def _create_private(path: Path) -> None:
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Single-statement reads need no transaction (each statement sees one snapshot)."""
        with self._lock:
            yield self._db

    @contextmanager
    def job_lock(self, job_id: str) -> Iterator[None]:
        if self._job_locks is None:  # one process: the service's in-process lock is enough
            yield
            return
        bucket = self._job_locks / f"{_lock_key(job_id) % _LOCK_FILES:04d}"
        fd = os.open(bucket, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


#: Lock files of a multi-process SQLite store: jobs sharing one only wait for each other.
_LOCK_FILES = 1024


def _add_missing_columns(db: sqlite3.Connection) -> None:
    for table, column, definition, fill in _ADDED_COLUMNS:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall()}
        if columns and column not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            if fill is not None:
                db.execute(f"UPDATE {table} SET {column} = {fill}")


# ----- PostgreSQL --------------------------------------------------------------------------------


class _Postgres:
    """A psycopg connection pool; every connection is in autocommit mode, so a read is one
    round trip and a write runs in an explicit transaction."""

    def __init__(self, url: str, pool_size: int) -> None:
        try:
            import psycopg  # noqa: F401  # checked here, used by the methods
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise StoreUnavailableError(
                "a postgresql:// store needs psycopg 3 and psycopg-pool: "
                "pip install 'pyqrmi[gateway]'"
            ) from None
        self._url = url
        self._where = describe_location(url)
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _statements(_SCHEMA):
                conn.execute(statement)
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True},
            name="qrmi-gateway-store",
            timeout=10.0,  # waiting longer for a connection: answer 503, the client retries
            open=True,
        )

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        try:
            return psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"cannot connect to the PostgreSQL store {self._where}: {_first_line(exc)}. "
                "Check that PostgreSQL runs there, that the database exists and that this "
                "user may log in (password in ~/.pgpass or PGPASSWORD)"
            ) from None

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._unavailable_as_503(), self._pool.connection() as conn, conn.transaction():
            yield _PgSession(conn)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._unavailable_as_503(), self._pool.connection() as conn:
            yield _PgSession(conn)

    @contextmanager
    def _unavailable_as_503(self) -> Iterator[None]:
        """A lost or refused connection (database restarting, pool exhausted) becomes
        :class:`StoreUnavailableError`: the call may be retried, here or on another replica."""
        import psycopg

        try:
            yield
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(
                f"the gateway's PostgreSQL store {self._where} is unavailable: "
                f"{_first_line(exc)}; retry shortly"
            ) from None

    @contextmanager
    def job_lock(self, job_id: str) -> Iterator[None]:
        """A session advisory lock on a connection of its own: held while the caller makes
        slow vendor calls (so not a pooled connection that other calls wait for), and dropped
        by PostgreSQL when the connection closes, also when this process is killed."""
        import psycopg

        key = _lock_key(job_id)
        with self._connect() as conn:
            with self._unavailable_as_503():
                conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                with contextlib.suppress(psycopg.Error):  # a lost connection released it
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


class _PgSession:
    """A psycopg connection taking the store's ``?`` placeholders."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Sequence[Any] = (), /) -> Cursor:
        return self._conn.execute(_to_psycopg(sql), args)


@functools.lru_cache(maxsize=512)
def _to_psycopg(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled). The store's SQL has no
    ``?`` inside string literals."""
    return sql.replace("%", "%%").replace("?", "%s")


def _lock_key(job_id: str) -> int:
    """A signed 64-bit advisory-lock key for the job, apart from :data:`_SCHEMA_LOCK`."""
    digest = hashlib.sha256(b"qrmi-gateway-job:" + job_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
