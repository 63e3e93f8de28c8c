"""``qrmi gateway --workers N``: several processes on one port and one store (SQLite or
PostgreSQL), seen from outside as one gateway: jobs, token revocation, admin sessions and
metrics are shared, a killed worker is replaced, and SIGTERM stops them all."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.conftest import GatewayProcess, bell, emulator_config, free_port
from qrmi.errors import AuthenticationFailedError
from qrmi.gateway.auth import hash_token, new_token
from qrmi.gateway.client import finish_job, start_job
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's")

ADMIN = new_token()


@pytest.fixture
def workers(
    tmp_path: Path, emulators: Path, munge: MungeDaemon, store_location: str | Path
) -> Iterator[GatewayProcess]:
    config = tmp_path / "qrmi_config.json"
    config.write_text(json.dumps(emulator_config(emulators)))
    admins = tmp_path / "admins"
    admins.write_text(hash_token(ADMIN) + "\n")
    port = free_port()
    args = [
        "--config", str(config),
        "--listen", f"127.0.0.1:{port}",
        "--store", str(store_location),
        "--munge-socket", munge.socket,
        "--admin-token-file", str(admins),
        "--workers", "2",
    ]  # fmt: skip
    gateway = GatewayProcess(args, f"http://127.0.0.1:{port}", tmp_path / "gateway.log")
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop(signal.SIGKILL)


def _children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _answering_workers(gateway: GatewayProcess, job_id: str) -> set[int]:
    records = [json.loads(line) for line in gateway.log.read_text().splitlines() if line]
    return {r["worker"] for r in records if r.get("job_id") == job_id and "worker" in r}


def _on_new_connections(url: str, headers: dict[str, str], calls: int) -> list[int]:
    """Statuses of ``calls`` GETs, each on a connection of its own (spread over the workers)."""
    return [httpx.get(url, headers=headers).status_code for _ in range(calls)]


def test_workers_share_jobs_and_a_revoked_token_is_refused_by_all(
    workers: GatewayProcess, munge: MungeDaemon
) -> None:
    token, variables = start_job(workers.url, "601", 1000, ["emu"], 3600, munge_socket=munge.socket)
    qpu = QuantumResource("emu", "local-emulator", environ=variables)
    task = qpu.task_start(bell())
    assert qpu.task_wait(task, 60) == TaskStatus.Completed
    status_url = f"{workers.url}/v1/qpus/emu/tasks/{task}"
    bearer = {"Authorization": f"Bearer {token}"}
    assert set(_on_new_connections(status_url, bearer, 40)) == {200}
    assert _answering_workers(workers, "601") == {0, 1}  # both cached the token

    finish_job(workers.url, "601", munge_socket=munge.socket)

    assert set(_on_new_connections(status_url, bearer, 20)) == {401}
    with pytest.raises(AuthenticationFailedError, match="revoked"):
        qpu.task_status(task)


def test_an_admin_session_and_the_metrics_are_the_same_on_every_worker(
    workers: GatewayProcess,
) -> None:
    login = httpx.post(f"{workers.url}/admin/login", data={"token": ADMIN})
    cookie = {"qrmi_admin_session": login.cookies["qrmi_admin_session"]}
    pages = [httpx.get(f"{workers.url}/admin", cookies=cookie).status_code for _ in range(10)]
    forged = {"Authorization": f"Bearer {new_token()}"}
    refused = _on_new_connections(f"{workers.url}/v1/qpus/emu/status", forged, 12)

    def counted() -> float:
        text = httpx.get(f"{workers.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
        return sum(
            sample.value
            for family in text_string_to_metric_families(text.text)
            for sample in family.samples
            if sample.name == "qrmi_gateway_errors_total"
            and sample.labels == {"type": "InvalidTokenError", "status": "401"}
        )

    assert pages == [200] * 10
    assert refused == [401] * 12
    assert [counted() for _ in range(6)] == [12.0] * 6


def test_a_killed_worker_is_replaced_and_sigterm_stops_them_all(
    workers: GatewayProcess, munge: MungeDaemon
) -> None:
    assert workers.process is not None
    supervisor = workers.process.pid
    first = _children(supervisor)
    assert len(first) == 2
    os.kill(min(first), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        len(_children(supervisor)) < 2 or min(first) in _children(supervisor)
    ):
        time.sleep(0.1)
    assert len(_children(supervisor) - first) == 1
    token, _ = start_job(workers.url, "602", 1000, ["emu"], 3600, munge_socket=munge.socket)
    assert token
    assert set(_on_new_connections(f"{workers.url}/v1/health", {}, 10)) == {200}
    remaining = _children(supervisor)

    assert workers.stop() == 0

    assert not [pid for pid in remaining if Path(f"/proc/{pid}").exists()]
    assert "worker 0 (pid" in workers.log.read_text() or "worker 1 (pid" in workers.log.read_text()
