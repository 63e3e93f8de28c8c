"""The polling routes answered outside FastAPI give exactly FastAPI's answers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.conftest import bell, emulator_config
from qrmi.backends.local_emulator.worker import stop_worker
from qrmi.gateway.app import create_app
from qrmi.gateway.testing import LocalGateway
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon
from qrmi.testing.server import FakeServer

Answer = tuple[int, str | None, bytes]


@pytest.fixture
def gateway(tmp_path: Path, munge: MungeDaemon) -> Iterator[LocalGateway]:
    """A gateway over emulators of its own: no other test's task changes the QPU's status."""
    state = tmp_path / "emulators"
    config = emulator_config(state)
    with LocalGateway(config, tmp_path / "gateway", munge_socket=munge.socket) as served:
        try:
            yield served
        finally:
            for name in ("emu", "emu2"):
                stop_worker(state / name)


@pytest.fixture
def reference(gateway: LocalGateway) -> Iterator[str]:
    """The same service served with every route through FastAPI."""
    assert gateway.service is not None
    server = FakeServer(create_app(gateway.service, fast_routes=False), name="reference").start()
    try:
        yield str(server.url)
    finally:
        server.stop()


def _answers(base: str, requests: list[tuple[str, str | None]]) -> list[Answer]:
    answers = []
    with httpx.Client(base_url=base) as client:
        for path, authorization in requests:
            headers = {"Authorization": authorization} if authorization is not None else {}
            answer = client.get(path, headers=headers)
            answers.append((answer.status_code, answer.headers.get("content-type"), answer.content))
    return answers


def _wait_running(job: QuantumResource, task: str) -> None:
    deadline = time.monotonic() + 60
    while job.task_status(task) != TaskStatus.Running:
        assert time.monotonic() < deadline, "the task did not start running"
        time.sleep(0.05)


def test_polls_get_the_same_answers_as_through_fastapi(
    gateway: LocalGateway, reference: str
) -> None:
    owner, variables = gateway.open_job("301", qpus=["emu"])
    other, _ = gateway.open_job("302", qpus=["emu"])
    revoked, _ = gateway.open_job("303", qpus=["emu"])
    assert gateway.service is not None
    gateway.service.finish_job("303")

    job = QuantumResource("emu", "local-emulator", environ=variables)
    task = job.task_start(bell(seconds=30))
    try:
        _wait_running(job, task)  # then the task's and the QPU's status stay put for 30 s
        requests = [
            (f"/v1/qpus/emu/tasks/{task}", f"Bearer {owner}"),
            (f"/v1/qpus/emu/tasks/{task}", f"bearer {owner}"),
            (f"/v1/qpus/emu/tasks/{task}", f"Bearer {other}"),
            ("/v1/qpus/emu/tasks/no-such-task", f"Bearer {owner}"),
            ("/v1/qpus/emu/status", f"Bearer {owner}"),
            ("/v1/qpus/emu/accessible", f"Bearer {owner}"),
            ("/v1/qpus/emu2/status", f"Bearer {owner}"),
            ("/v1/qpus/nowhere/accessible", f"Bearer {owner}"),
            ("/v1/qpus/emu/status", None),
            ("/v1/qpus/emu/status", f"Basic {owner}"),
            ("/v1/qpus/emu/status", "Bearer forged"),
            ("/v1/qpus/emu/status", f"Bearer {revoked}"),
            (f"/v1/qpus/emu/tasks/{task}?unused=1", f"Bearer {owner}"),
        ]
        fast = _answers(gateway.url, requests)
        through_fastapi = _answers(reference, requests)
    finally:
        job.task_stop(task)

    assert fast == through_fastapi
    assert b'"status":"Running"' in fast[0][2]
    statuses = [status for status, _, _ in fast]
    assert statuses == [200, 200, 404, 404, 200, 200, 403, 404, 401, 401, 401, 401, 200]
    assert b"revoked" in fast[11][2]


def test_a_poll_with_a_body_or_another_method_is_left_to_fastapi(gateway: LocalGateway) -> None:
    token, _ = gateway.open_job("304", qpus=["emu"])
    with httpx.Client(base_url=gateway.url) as client:
        answer = client.post("/v1/qpus/emu/status", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 405
    assert answer.json()["error"]["type"] == "MethodNotAllowed"
