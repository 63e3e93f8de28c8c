"""A requeued job (the same Slurm job id, a new run) starts afresh on the gateway."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import httpx
import pytest

from gateway.conftest import bell
from qrmi.errors import TaskNotFoundError
from qrmi.gateway.client import finish_job, start_job
from qrmi.gateway.service import GatewayError
from qrmi.gateway.store import Store
from qrmi.gateway.testing import LocalGateway
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's")

FIRST, SECOND = "2026-12-01T07:00:00", "2026-12-01T07:03:10"


def _status(gateway: LocalGateway, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{gateway.url}/v1/qpus/emu/status", headers=headers)


def _start(gateway: LocalGateway, munge: MungeDaemon, run_id: str | None) -> tuple[str, dict]:
    return start_job(
        gateway.url, "140", 1000, ["emu"], 600, run_id=run_id, munge_socket=munge.socket
    )


def test_a_requeued_jobs_next_run_starts_and_the_first_runs_token_is_refused(
    gateway: LocalGateway, munge: MungeDaemon
) -> None:
    first_token, first = _start(gateway, munge, FIRST)
    task = QuantumResource("emu", "local-emulator", environ=first).task_start(bell())
    finish_job(gateway.url, "140", run_id=FIRST, munge_socket=munge.socket)

    second_token, second = _start(gateway, munge, SECOND)

    assert second_token != first_token
    assert _status(gateway, second_token).status_code == 200
    refused = _status(gateway, first_token)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    with pytest.raises(TaskNotFoundError):  # the first run's task is not the second run's
        QuantumResource("emu", "local-emulator", environ=second).task_status(task)
    assert gateway.service is not None
    jobs = {job.job_id: job for job in gateway.service.store.jobs()}
    assert jobs["140~1"].state == "finished" and jobs["140~1"].run_id == FIRST
    assert jobs["140"].state == "active" and jobs["140"].run_id == SECOND
    assert [t.job_id for t in gateway.service.store.tasks() if t.task_id == task] == ["140~1"]


def test_a_later_step_of_the_same_run_keeps_the_leases(
    gateway: LocalGateway, munge: MungeDaemon
) -> None:
    _, first = _start(gateway, munge, FIRST)
    _, again = _start(gateway, munge, FIRST)

    assert again["emu_QRMI_JOB_ACQUISITION_TOKEN"] == first["emu_QRMI_JOB_ACQUISITION_TOKEN"]
    assert gateway.service is not None
    assert [job.job_id for job in gateway.service.store.jobs()] == ["140"]


def test_an_ended_run_is_never_revived(gateway: LocalGateway, munge: MungeDaemon) -> None:
    _start(gateway, munge, FIRST)
    finish_job(gateway.url, "140", munge_socket=munge.socket)
    assert gateway.service is not None

    for run_id in (FIRST, None):
        with pytest.raises(GatewayError, match="has ended"):
            gateway.service.start_job("140", 1000, ["emu"], 600, run_id)


def test_a_new_run_ends_a_previous_run_left_active_exactly_once(
    gateway: LocalGateway, munge: MungeDaemon
) -> None:
    """The node of the first run died: its end never reached the gateway."""
    first_token, first = _start(gateway, munge, FIRST)
    lease = first["emu_QRMI_JOB_ACQUISITION_TOKEN"]

    second_token, second = _start(gateway, munge, SECOND)

    assert _status(gateway, first_token).status_code == 401
    assert second["emu_QRMI_JOB_ACQUISITION_TOKEN"] != lease
    assert gateway.service is not None
    archived = gateway.service.store.lease("emu", lease)
    assert archived is not None and archived.job_id == "140~1" and archived.released is not None
    # The first run's Epilog, late, ends nothing of the second run.
    late = finish_job(gateway.url, "140", run_id=FIRST, munge_socket=munge.socket)
    assert late["already_finished"] is True
    assert _status(gateway, second_token).status_code == 200


def test_runs_are_numbered_and_survive_a_restart(gateway: LocalGateway, munge: MungeDaemon) -> None:
    for run in range(3):
        _start(gateway, munge, f"run{run}")
        gateway.restart()
    assert gateway.service is not None
    assert sorted(job.job_id for job in gateway.service.store.jobs()) == [
        "140",
        "140~1",
        "140~2",
    ]


def test_a_malformed_run_id_is_refused(gateway: LocalGateway) -> None:
    assert gateway.service is not None
    with pytest.raises(GatewayError, match="run_id"):
        gateway.service.start_job("141", 1000, ["emu"], 60, "x" * 65)


def test_a_store_of_an_older_gateway_gains_the_run_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, uid INTEGER NOT NULL, token_hash TEXT "
            "UNIQUE, revoked_hash TEXT, created REAL NOT NULL, expires REAL, state TEXT NOT "
            "NULL DEFAULT 'active')"
        )
        db.execute("INSERT INTO jobs (job_id, uid, created) VALUES ('7', 1000, 0)")
    db.close()

    store = Store(path)

    job = store.job("7")
    assert job is not None and job.run_id is None
    store.set_run("7", FIRST)
    assert (store.job("7") or job).run_id == FIRST
