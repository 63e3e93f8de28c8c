"""The gateway's store, on SQLite and on PostgreSQL: it keeps everything across a reopen, tokens
only as hashes, order without ``rowid``; two stores on one database (two replicas) see each
other's writes, release a lease once and share one job lock."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest

from qrmi.gateway.auth import hash_token, new_token
from qrmi.gateway.store import Store, StoreUnavailableError, describe_location
from qrmi.testing.postgres import PostgresServer, postgres_bindir


def test_everything_survives_a_reopen(store_location: str | Path) -> None:
    token = new_token()
    store = Store(store_location)
    store.add_job("9", 1000, hash_token(token), expires=None)
    store.add_lease("9", "emu", "lease-1", main=True)
    store.add_task("emu", "task-1", "9")
    store.pause("emu2", "maintenance")
    store.close()

    reopened = Store(store_location)

    job = reopened.job_by_token(hash_token(token))
    assert job is not None and (job.job_id, job.uid, job.qpus) == ("9", 1000, ("emu",))
    assert [lease.token for lease in reopened.leases("9", held_only=True)] == ["lease-1"]
    task = reopened.task("emu", "task-1")
    assert task is not None and task.job_id == "9"
    assert reopened.paused("emu2") == "maintenance"
    reopened.close()


def test_tokens_are_stored_only_hashed_in_a_private_file(tmp_path: Path) -> None:
    token = new_token()
    store = Store(tmp_path / "gateway.db")
    store.add_job("9", 1000, hash_token(token), expires=None)
    store.close()

    on_disk = b"".join(path.read_bytes() for path in tmp_path.iterdir())

    assert token.encode() not in on_disk
    assert (tmp_path / "gateway.db").stat().st_mode & 0o077 == 0


def test_postgresql_stores_tokens_only_hashed(postgres: PostgresServer, postgres_url: str) -> None:
    token = new_token()
    store = Store(postgres_url)
    store.add_job("9", 1000, hash_token(token), expires=None)
    store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # every page written to the data files
    assert postgres.directory is not None

    on_disk = b"".join(
        path.read_bytes() for path in postgres.directory.rglob("*") if path.is_file()
    )

    assert hash_token(token).encode() in on_disk  # the scan does see the table
    assert token.encode() not in on_disk


def test_a_lease_is_released_once(store_location: str | Path) -> None:
    store = Store(store_location)
    store.add_job("9", 1000, hash_token(new_token()), expires=None)
    store.add_lease("9", "emu", "lease-1", main=True)

    assert store.mark_released("emu", "lease-1") is True
    assert store.mark_released("emu", "lease-1") is False
    store.close()


def test_a_revoked_token_is_told_apart_from_an_unknown_one(store_location: str | Path) -> None:
    token = new_token()
    store = Store(store_location)
    store.add_job("9", 1000, hash_token(token), expires=None)
    assert store.active_job_id(hash_token(token)) == "9"

    store.revoke_token("9")

    assert store.job_by_token(hash_token(token)) is None
    assert store.active_job_id(hash_token(token)) is None
    revoked = store.job_by_revoked_token(hash_token(token))
    assert revoked is not None and revoked.job_id == "9"
    store.close()


def test_leases_and_tasks_keep_their_order(store_location: str | Path) -> None:
    store = Store(store_location)
    store.add_job("9", 1000, hash_token(new_token()), expires=None)
    store.add_job("10", 1000, hash_token(new_token()), expires=None)
    for qpu in ("zeta", "alpha", "mu"):
        store.add_lease("9", qpu, f"lease-{qpu}", main=True)
    store.add_lease("10", "alpha", "other-job", main=True)
    store.add_lease("9", "alpha", "extra", main=False)
    store.add_lease("9", "alpha", "extra", main=False)  # recorded once
    for task_id in ("t-c", "t-a", "t-b"):
        store.add_task("alpha", task_id, "9")

    job = store.job("9")

    assert job is not None and job.qpus == ("zeta", "alpha", "mu")
    assert [lease.token for lease in store.leases("9")] == [
        "lease-zeta",
        "lease-alpha",
        "lease-mu",
        "extra",
    ]
    assert [task.task_id for task in store.tasks("9")] == ["t-c", "t-a", "t-b"]
    assert [job.job_id for job in store.jobs()] == ["9", "10"]
    assert [job.job_id for job in store.jobs("active")] == ["9", "10"]
    store.close()


def test_a_task_id_reused_on_a_qpu_belongs_to_the_last_job(store_location: str | Path) -> None:
    store = Store(store_location)
    store.add_task("emu", "task-1", "9")
    store.add_task("emu", "task-1", "10")

    task = store.task("emu", "task-1")

    assert task is not None and task.job_id == "10"
    assert [t.job_id for t in store.tasks()] == ["10"]
    store.close()


def test_a_credential_is_accepted_once(store_location: str | Path) -> None:
    store = Store(store_location)

    assert store.use_credential("digest-1", forget_after=store.clock() + 60) is True
    assert store.use_credential("digest-1", forget_after=store.clock() + 60) is False
    store.close()


def test_a_file_of_the_first_release_keeps_its_rows_and_their_order(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE jobs (job_id TEXT PRIMARY KEY, uid INTEGER NOT NULL, token_hash TEXT UNIQUE,
            revoked_hash TEXT, created REAL NOT NULL, expires REAL,
            state TEXT NOT NULL DEFAULT 'active');
        CREATE TABLE leases (job_id TEXT NOT NULL, qpu TEXT NOT NULL, token TEXT NOT NULL,
            main INTEGER NOT NULL DEFAULT 0, released REAL, PRIMARY KEY (qpu, token));
        CREATE INDEX leases_by_job ON leases (job_id);
        CREATE TABLE tasks (qpu TEXT NOT NULL, task_id TEXT NOT NULL, job_id TEXT NOT NULL,
            created REAL NOT NULL, PRIMARY KEY (qpu, task_id));
        INSERT INTO jobs (job_id, uid, token_hash, created) VALUES ('9', 1000, 'h', 1.0);
        INSERT INTO leases (job_id, qpu, token, main) VALUES ('9', 'zeta', 'l1', 1);
        INSERT INTO leases (job_id, qpu, token, main) VALUES ('9', 'alpha', 'l2', 1);
        INSERT INTO tasks VALUES ('zeta', 't1', '9', 5.0);
        """
    )
    old.close()

    store = Store(path)
    store.add_lease("9", "mu", "l3", main=True)
    store.add_task("zeta", "t2", "9")

    job = store.job_by_token("h")
    assert job is not None and job.qpus == ("zeta", "alpha", "mu")
    assert [task.task_id for task in store.tasks("9")] == ["t1", "t2"]
    store.close()


# ----- two stores on one PostgreSQL database: two gateway replicas ------------------------------


def test_replicas_see_each_others_writes(postgres_url: str) -> None:
    one, two = Store(postgres_url), Store(postgres_url)
    token = new_token()
    one.add_job("9", 1000, hash_token(token), expires=None)
    one.add_lease("9", "emu", "lease-1", main=True)

    two.revoke_token("9")

    assert one.active_job_id(hash_token(token)) is None
    assert two.mark_released("emu", "lease-1") is True
    assert one.mark_released("emu", "lease-1") is False
    assert two.use_credential("digest-1", forget_after=two.clock() + 60) is True
    assert one.use_credential("digest-1", forget_after=one.clock() + 60) is False
    one.close()
    two.close()


def test_a_job_lock_is_held_across_replicas(postgres_url: str) -> None:
    one, two = Store(postgres_url), Store(postgres_url)
    entered = threading.Event()

    def start_on_two() -> None:
        with two.job_lock("9"):
            entered.set()

    with one.job_lock("9"):
        waiter = threading.Thread(target=start_on_two)
        waiter.start()
        with two.job_lock("10"):  # another job's lock is free
            pass
        assert not entered.wait(0.5)
    waiter.join(30)

    assert entered.is_set()
    one.close()
    two.close()


def test_a_job_lock_dies_with_its_holder(postgres_url: str) -> None:
    one, two = Store(postgres_url), Store(postgres_url)
    got_it = False
    with psycopg.connect(postgres_url, autocommit=True) as admin, one.job_lock("9"):
        # The holder's connection dies, as when its gateway is killed: the lock is freed.
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks "
            "WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
        )
        with two.job_lock("9"):
            got_it = True

    assert got_it
    one.close()
    two.close()


def test_an_unreachable_database_is_a_clear_error_without_the_password(
    postgres: PostgresServer,
) -> None:
    url = f"postgresql://qrmi:hunter2@127.0.0.1:{postgres.port}/no_such_database"

    with pytest.raises(StoreUnavailableError, match="no_such_database") as caught:
        Store(url)

    assert "hunter2" not in str(caught.value)
    assert describe_location(url) == (
        f"postgresql://qrmi:***@127.0.0.1:{postgres.port}/no_such_database"
    )


def test_a_database_gone_mid_run_is_store_unavailable(postgres: PostgresServer) -> None:
    server = PostgresServer(fsync=False).start()  # a server of its own, to stop
    try:
        store = Store(server.create_database("gone"))
        store.add_job("9", 1000, hash_token(new_token()), expires=None)
    finally:
        server.stop()

    with pytest.raises(StoreUnavailableError, match="unavailable"):
        store.job("9")
    store.close()


def test_a_store_reconnects_after_its_database_restarts(postgres: PostgresServer) -> None:
    server = PostgresServer(fsync=False).start()  # a server of its own, to restart
    try:
        store = Store(server.create_database("restarted"))
        store.add_job("9", 1000, hash_token(new_token()), expires=None)
        server.restart()  # every connection of the pool is cut

        found, refusals = None, 0
        while found is None and refusals < 20:
            try:
                found = store.job("9")
            except StoreUnavailableError:  # a connection cut by the restart: 503, retried
                refusals += 1

        assert found is not None and found.job_id == "9"
        store.add_job("10", 1000, hash_token(new_token()), expires=None)
        store.close()
    finally:
        server.stop()


def test_the_documented_backup_and_restore_bring_a_job_back(
    postgres_url: str, tmp_path: Path
) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "gateway.md").read_text()
    recipe = next(b for b in re.findall(r"^```sh\n(.*?)^```$", doc, re.S | re.M) if "pg_dump" in b)
    documented_url = "postgresql://qrmi-gw@db.example.org:5432/qrmi_gateway"
    script = recipe.replace(documented_url, postgres_url).replace("/var/backups/", f"{tmp_path}/")
    backup, restore = script.split("pg_restore")
    store = Store(postgres_url)
    store.add_job("9", 1000, hash_token(new_token()), expires=None)
    store.add_lease("9", "emu", "lease-1", main=True)
    environment = {"PATH": f"{postgres_bindir()}:{os.environ['PATH']}"}

    subprocess.run(["bash", "-c", backup], env=environment, check=True, timeout=120)
    store.delete_job("9")
    store.add_job("10", 1000, hash_token(new_token()), expires=None)
    subprocess.run(["bash", "-c", "pg_restore" + restore], env=environment, check=True, timeout=120)

    assert [job.job_id for job in store.jobs()] == ["9"]
    assert [lease.token for lease in store.leases("9")] == ["lease-1"]
    store.close()


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("postgresql://gw:s3cret@db:5432/qrmi", "postgresql://gw:***@db:5432/qrmi"),
        ("postgresql://gw:s3%40c/ret@db/qrmi", "postgresql://gw:***@db/qrmi"),
        (
            "postgresql://gw@db/qrmi?password=s3cret&sslmode=require",
            "postgresql://gw@db/qrmi?password=***&sslmode=require",
        ),
        ("postgres:///qrmi?host=/run/postgresql", "postgres:///qrmi?host=/run/postgresql"),
        ("/var/lib/qrmi-gateway/gateway.db", "/var/lib/qrmi-gateway/gateway.db"),
    ],
)
def test_a_store_is_described_without_its_password(location: str, shown: str) -> None:
    assert describe_location(location) == shown
