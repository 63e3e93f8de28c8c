"""The gateway's store keeps everything across a reopen, and tokens only as hashes."""

from __future__ import annotations

from pathlib import Path

from qrmi.gateway.auth import hash_token, new_token
from qrmi.gateway.store import Store


def test_everything_survives_a_reopen(tmp_path: Path) -> None:
    token = new_token()
    store = Store(tmp_path / "gateway.db")
    store.add_job("9", 1000, hash_token(token), expires=None)
    store.add_lease("9", "emu", "lease-1", main=True)
    store.add_task("emu", "task-1", "9")
    store.pause("emu2", "maintenance")
    store.close()

    reopened = Store(tmp_path / "gateway.db")

    job = reopened.job_by_token(hash_token(token))
    assert job is not None and (job.job_id, job.uid, job.qpus) == ("9", 1000, ("emu",))
    assert [lease.token for lease in reopened.leases("9", held_only=True)] == ["lease-1"]
    task = reopened.task("emu", "task-1")
    assert task is not None and task.job_id == "9"
    assert reopened.paused("emu2") == "maintenance"


def test_tokens_are_stored_only_hashed(tmp_path: Path) -> None:
    token = new_token()
    store = Store(tmp_path / "gateway.db")
    store.add_job("9", 1000, hash_token(token), expires=None)
    store.close()

    on_disk = b"".join(path.read_bytes() for path in tmp_path.iterdir())

    assert token.encode() not in on_disk
    assert (tmp_path / "gateway.db").stat().st_mode & 0o077 == 0


def test_a_lease_is_released_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "gateway.db")
    store.add_job("9", 1000, hash_token(new_token()), expires=None)
    store.add_lease("9", "emu", "lease-1", main=True)

    assert store.mark_released("emu", "lease-1") is True
    assert store.mark_released("emu", "lease-1") is False


def test_a_revoked_token_is_told_apart_from_an_unknown_one(tmp_path: Path) -> None:
    token = new_token()
    store = Store(tmp_path / "gateway.db")
    store.add_job("9", 1000, hash_token(token), expires=None)

    store.revoke_token("9")

    assert store.job_by_token(hash_token(token)) is None
    revoked = store.job_by_revoked_token(hash_token(token))
    assert revoked is not None and revoked.job_id == "9"
