"""A vendor's reported usage reaches the gateway's usage record (source ``vendor``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.conftest import BELL
from qrmi.gateway.client import finish_job, start_job
from qrmi.gateway.testing import LocalGateway
from qrmi.models import Payload, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.ibm_compute_service import ComputeServiceFake
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's")

QPU, QPU_TYPE = "ibm_perth", "ibm-quantum-compute-service"


@pytest.fixture
def ibm_gateway(
    tmp_path: Path, munge: MungeDaemon
) -> Iterator[tuple[LocalGateway, ComputeServiceFake]]:
    fake = ComputeServiceFake(check_isa=False).start()  # the Bell circuit is not ISA
    config = {"resources": [{"name": QPU, "type": QPU_TYPE, "environment": fake.settings}]}
    gateway = LocalGateway(config, tmp_path / "gateway", munge_socket=munge.socket).start()
    try:
        yield gateway, fake
    finally:
        gateway.stop()
        fake.close()


def test_the_vendors_quantum_seconds_land_in_the_usage_record(
    ibm_gateway: tuple[LocalGateway, ComputeServiceFake], munge: MungeDaemon
) -> None:
    gateway, fake = ibm_gateway
    _, variables = start_job(gateway.url, "400", 1000, [QPU], 3600, munge_socket=munge.socket)
    qpu = QuantumResource(QPU, QPU_TYPE, environ=variables)
    params = {"pubs": [[BELL, None, 50]], "version": 2}
    params["options"] = {"emulator": {"min_duration_seconds": 0.3}}
    task = qpu.task_start(Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler"))
    assert qpu.task_wait(task, 60) == TaskStatus.Completed

    answer = finish_job(gateway.url, "400", munge_socket=munge.socket)

    assert gateway.service is not None
    (record,) = gateway.service.store.usage(slurm_job_id="400")
    vendor = fake.requests(f"/api/v1/jobs/{task}/metrics", "GET")
    job = fake.queue.get(task)
    assert job is not None and job.started_at is not None and job.finished_at is not None
    assert vendor, "the gateway asked the vendor what the task cost"
    assert record.task_id == task and record.state == "Completed"
    assert record.usage_source == "vendor"
    assert record.quantum_seconds == round(job.finished_at - job.started_at, 3)
    assert answer["usage"]["qpu_seconds"] == record.quantum_seconds
