"""Two ``qrmi gateway`` replicas on one PostgreSQL store serve the same jobs: a job's client and
the helper's start and end go on with the other replica when one is killed; a token revoked
through one is refused by the other at once; a job's start is serialised across them."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.conftest import bell, emulator_config
from qrmi.errors import AuthenticationFailedError
from qrmi.gateway.client import finish_job, start_job
from qrmi.gateway.store import Store
from qrmi.gateway.testing import GatewayProcess
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's")


@pytest.fixture
def replicas(
    tmp_path: Path, emulators: Path, munge: MungeDaemon, postgres_url: str
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    config = tmp_path / "qrmi_config.json"
    config.write_text(json.dumps(emulator_config(emulators)))
    config.chmod(0o600)
    started = []
    try:
        for name in ("one", "two"):
            replica = GatewayProcess(
                config, store=postgres_url, log=tmp_path / f"{name}.log", munge_socket=munge.socket
            )
            started.append(replica.start())
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.kill()


def _task_starts(replica: GatewayProcess, at_least: int = 0) -> int:
    """Task starts in the replica's access log; waits a little for ``at_least`` of them (the
    access line is written once the answer has gone out, so it may trail the client)."""
    deadline = time.monotonic() + 5
    while True:
        lines = replica.log.read_text().splitlines()
        records = [json.loads(line) for line in lines if line]
        count = sum(
            1
            for r in records
            if r.get("method") == "POST" and r.get("path") == "/v1/qpus/emu/tasks"
        )
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def test_a_job_goes_on_when_its_replica_is_killed(
    replicas: tuple[GatewayProcess, GatewayProcess], munge: MungeDaemon
) -> None:
    one, two = replicas
    both = f"{one.url},{two.url}"
    _, variables = start_job(both, "601", 1000, ["emu"], 3600, munge_socket=munge.socket)
    assert variables["QRMI_GATEWAY_URL"] == both
    qpu = QuantumResource("emu", "local-emulator", environ=variables)
    running = qpu.task_start(bell(seconds=2))
    assert (_task_starts(one, 1), _task_starts(two)) == (1, 0)  # the first listed serves

    one.kill()

    assert qpu.task_wait(running, 60) == TaskStatus.Completed
    assert qpu.task_result(running).json()["__type__"] == "PrimitiveResult"
    another = qpu.task_start(bell())
    assert qpu.task_wait(another, 60) == TaskStatus.Completed
    assert _task_starts(two, 1) == 1
    report = finish_job(both, "601", munge_socket=munge.socket)
    assert report["released"] == ["emu"]


def test_the_helper_starts_a_job_on_the_replica_that_is_up(
    replicas: tuple[GatewayProcess, GatewayProcess], munge: MungeDaemon
) -> None:
    one, two = replicas
    one.kill()

    _, variables = start_job(
        f"{one.url},{two.url}", "602", 1000, ["emu"], 3600, munge_socket=munge.socket
    )

    assert QuantumResource("emu", "local-emulator", environ=variables).is_accessible()
    assert finish_job(f"{one.url},{two.url}", "602", munge_socket=munge.socket)["released"] == [
        "emu"
    ]


def test_a_token_revoked_through_one_replica_is_refused_by_the_other(
    replicas: tuple[GatewayProcess, GatewayProcess], munge: MungeDaemon
) -> None:
    one, two = replicas
    _, on_one = start_job(one.url, "603", 1000, ["emu"], 3600, munge_socket=munge.socket)
    on_two = {**on_one, "QRMI_GATEWAY_URL": two.url}
    qpu = QuantumResource("emu", "local-emulator", environ=on_two)
    assert qpu.is_accessible()  # replica two now knows (and caches) the token

    start_job(one.url, "603", 1000, ["emu"], 3600, munge_socket=munge.socket)  # a new token

    with pytest.raises(AuthenticationFailedError, match="revoked"):
        qpu.is_accessible()

    _, renewed = start_job(one.url, "603", 1000, ["emu"], 3600, munge_socket=munge.socket)
    qpu = QuantumResource("emu", "local-emulator", environ={**renewed, "QRMI_GATEWAY_URL": two.url})
    assert qpu.is_accessible()

    finish_job(one.url, "603", munge_socket=munge.socket)

    with pytest.raises(AuthenticationFailedError, match="revoked"):
        qpu.is_accessible()


def test_starts_of_one_job_on_two_replicas_hold_its_qpu_once(
    replicas: tuple[GatewayProcess, GatewayProcess], munge: MungeDaemon, postgres_url: str
) -> None:
    one, two = replicas
    for job_id in ("611", "612", "613"):
        tokens: dict[str, str] = {}

        def start(
            replica: GatewayProcess, job_id: str = job_id, tokens: dict[str, str] = tokens
        ) -> None:
            token, _ = start_job(
                replica.url, job_id, 1000, ["emu"], 3600, munge_socket=munge.socket
            )
            tokens[replica.url] = token

        threads = [threading.Thread(target=start, args=(r,)) for r in (one, two)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        assert len(tokens) == 2  # both starts answered
        store = Store(postgres_url)
        assert [lease.qpu for lease in store.leases(job_id)] == ["emu"]
        store.close()
        live = [
            httpx.get(
                f"{one.url}/v1/qpus/emu/status", headers={"Authorization": f"Bearer {token}"}
            ).status_code
            for token in tokens.values()
        ]
        assert sorted(live) == [200, 401]  # the later start's token replaced the earlier one
        finish_job(two.url, job_id, munge_socket=munge.socket)
