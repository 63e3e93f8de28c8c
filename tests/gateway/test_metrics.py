"""``GET /metrics``: Prometheus text scraped after real tasks ran through the gateway, parsed with
prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.conftest import MakeGateway, bell
from qrmi.backends._munge import Munge
from qrmi.config import Config, ResourceDef
from qrmi.errors import TaskNotReadyError
from qrmi.gateway.auth import MUNGE_HEADER, hash_token, munge_binding, new_token
from qrmi.gateway.metrics import ErrorCounter, GatewayMetrics
from qrmi.gateway.testing import LocalGateway
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the gateway's fixtures are root's")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(gateway: LocalGateway, admin_token: str) -> Samples:
    answer = httpx.get(
        f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {admin_token}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_running(qpu: QuantumResource, task: str) -> None:
    deadline = time.monotonic() + 60
    while qpu.task_status(task) != TaskStatus.Running:
        assert time.monotonic() < deadline, "the task never ran"
        time.sleep(0.05)


@pytest.fixture
def admin_token() -> str:
    return new_token()


@pytest.fixture
def gateway(make_gateway: MakeGateway, admin_token: str) -> LocalGateway:
    return make_gateway(admin_hashes=frozenset({hash_token(admin_token)}))


def test_a_scrape_counts_the_tasks_queues_and_vendor_calls_of_real_jobs(
    gateway: LocalGateway, admin_token: str
) -> None:
    _, variables = gateway.open_job("401", qpus=["emu"])
    qpu = QuantumResource("emu", "local-emulator", environ=variables)
    for _ in range(2):
        assert qpu.task_wait(qpu.task_start(bell()), 60) == TaskStatus.Completed
    long = qpu.task_start(bell(seconds=60))
    wait_running(qpu, long)
    with pytest.raises(TaskNotReadyError):
        qpu.task_result(long)

    running = scrape(gateway, admin_token)
    qpu.task_stop(long)
    assert qpu.task_wait(long, 60) == TaskStatus.Cancelled
    after = scrape(gateway, admin_token)

    assert value(running, "qrmi_gateway_jobs", state="active") == 1
    assert value(running, "qrmi_gateway_tasks_started_total", qpu="emu") == 3
    assert value(running, "qrmi_gateway_tasks_ended_total", qpu="emu", state="Completed") == 2
    assert value(running, "qrmi_gateway_tasks", qpu="emu", state="Running") == 1
    assert value(running, "qrmi_gateway_tasks", qpu="emu2", state="Running") == 0
    assert value(running, "qrmi_gateway_qpu_queue_depth", qpu="emu", source="gateway") == 1
    assert value(running, "qrmi_gateway_qpu_queue_depth", qpu="emu", source="vendor") == 0
    assert value(running, "qrmi_gateway_qpu_lanes", qpu="emu") == 1
    assert value(running, "qrmi_gateway_qpu_lanes_busy", qpu="emu") == 1
    online = {"qpu": "emu", "type": "local-emulator", "status": "online"}
    assert value(running, "qrmi_gateway_qpu_status", **online) == 1
    task_starts = {"qpu": "emu", "operation": "task_start"}
    assert value(running, "qrmi_gateway_vendor_call_seconds_count", **task_starts) == 3
    assert value(running, "qrmi_gateway_vendor_call_seconds_sum", **task_starts) > 0
    slowest = value(running, "qrmi_gateway_vendor_call_seconds_bucket", le="60.0", **task_starts)
    assert slowest == 3
    not_ready = {"qpu": "emu", "operation": "task_result", "type": "TaskNotReadyError"}
    assert value(running, "qrmi_gateway_vendor_errors_total", **not_ready) == 1
    assert value(running, "qrmi_gateway_errors_total", type="TaskNotReadyError", status="409") == 1

    assert value(after, "qrmi_gateway_tasks_ended_total", qpu="emu", state="Cancelled") == 1
    assert value(after, "qrmi_gateway_tasks", qpu="emu", state="Running") == 0
    assert value(after, "qrmi_gateway_qpu_queue_depth", qpu="emu", source="gateway") == 0


def test_error_answers_are_counted_by_type_and_status(
    gateway: LocalGateway, admin_token: str
) -> None:
    token, _ = gateway.open_job("402", qpus=["emu"])
    job = {"Authorization": f"Bearer {token}"}

    unknown = httpx.get(f"{gateway.url}/v1/qpus/emu/tasks/no-such-task", headers=job)
    forged = httpx.get(f"{gateway.url}/v1/qpus/emu/status", headers={"Authorization": "Bearer x"})
    not_held = httpx.get(f"{gateway.url}/v1/qpus/emu2/status", headers=job)
    samples = scrape(gateway, admin_token)

    assert (unknown.status_code, forged.status_code, not_held.status_code) == (404, 401, 403)
    assert value(samples, "qrmi_gateway_errors_total", type="TaskNotFoundError", status="404") == 1
    assert value(samples, "qrmi_gateway_errors_total", type="InvalidTokenError", status="401") == 1
    assert value(samples, "qrmi_gateway_errors_total", type="AccessDeniedError", status="403") == 1
    assert value(samples, "qrmi_gateway_quota_refusals_total") == 0


def test_metrics_need_an_admin_token_or_roots_munge_credential(
    gateway: LocalGateway, admin_token: str, munge: MungeDaemon
) -> None:
    job_token, _ = gateway.open_job("403", qpus=["emu"])
    url = f"{gateway.url}/metrics"

    anonymous = httpx.get(url)
    as_job = httpx.get(url, headers={"Authorization": f"Bearer {job_token}"})
    credential = Munge(munge.socket).encode(munge_binding("GET", "/metrics"))
    as_root = httpx.get(url, headers={MUNGE_HEADER: credential})

    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "InvalidTokenError"
    assert as_job.status_code == 401
    assert "admin token is not valid" in as_job.json()["error"]["message"]
    assert as_root.status_code == 200
    assert "qrmi_gateway_jobs" in as_root.text
    assert job_token not in as_root.text


def test_a_quota_refusal_from_any_route_is_counted_by_its_error_type() -> None:
    # The quota checks answer QuotaExceededError like every typed error: {"error": {"type"}}.
    metrics = GatewayMetrics()

    async def refusing_app(scope: Any, receive: Any, send: Any) -> None:
        body = b'{"error":{"type":"QuotaExceededError","message":"over 3600 s of ibm_fez"}}'
        await send({"type": "http.response.start", "status": 429, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def two_requests() -> list[int]:
        transport = httpx.ASGITransport(app=ErrorCounter(refusing_app, metrics))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return [(await client.post("/v1/qpus/fez/tasks")).status_code for _ in range(2)]

    assert asyncio.run(two_requests()) == [429, 429]
    refused = metrics.registry.get_sample_value("qrmi_gateway_quota_refusals_total")
    by_type = metrics.registry.get_sample_value(
        "qrmi_gateway_errors_total", {"type": "QuotaExceededError", "status": "429"}
    )
    assert (refused, by_type) == (2, 2)


def test_the_job_side_and_the_cli_do_not_load_prometheus_client() -> None:
    code = (
        "import sys, qrmi.backends.gateway, qrmi.cli.app, qrmi.gateway.service;"
        "print('prometheus_client' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False"


def test_a_hanging_vendor_shows_as_unknown_without_stalling_the_scrape(
    tmp_path: Path, admin_token: str
) -> None:
    from qrmi.testing.ibm_quantum_system import QuantumSystemFake

    with QuantumSystemFake(light_s3=True) as fake:
        rdef = ResourceDef("ibm_perth", fake.resource_type, False, dict(fake.settings))
        fake.faults.latency(120, path="/v1/backends*")  # far longer than a scrape may wait
        admin = frozenset({hash_token(admin_token)})
        config = Config(resource_map={"ibm_perth": rdef})
        with LocalGateway(config, tmp_path, admin_hashes=admin) as gateway:
            samples = scrape(gateway, admin_token)
            page = httpx.get(
                f"{gateway.url}/admin",
                headers={"Authorization": f"Bearer {admin_token}"},
                timeout=30,
            )

    hanging = {"qpu": "ibm_perth", "type": "ibm-quantum-system"}
    assert value(samples, "qrmi_gateway_qpu_status", status="unknown", **hanging) == 1
    assert value(samples, "qrmi_gateway_qpu_status", status="online", **hanging) == 0
    assert value(samples, "qrmi_gateway_qpu_lanes", qpu="ibm_perth") is None
    assert page.status_code == 200
    assert '<span class="badge unknown">unknown</span>' in page.text
    assert "no answer yet" in page.text
