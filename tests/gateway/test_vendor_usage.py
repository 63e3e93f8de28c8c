"""A vendor's reported usage reaches the gateway's usage record (source ``vendor``)."""

from __future__ import annotations

import json
import os

import pytest

from gateway.conftest import BELL, QCS_QPU, QCS_TYPE
from qrmi.gateway.client import finish_job, start_job
from qrmi.gateway.testing import LocalGateway
from qrmi.models import Payload, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.ibm_compute_service import ComputeServiceFake
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's")


def test_the_vendors_quantum_seconds_land_in_the_usage_record(
    qcs_gateway: tuple[LocalGateway, ComputeServiceFake], munge: MungeDaemon
) -> None:
    gateway, fake = qcs_gateway
    _, variables = start_job(gateway.url, "400", 1000, [QCS_QPU], 3600, munge_socket=munge.socket)
    qpu = QuantumResource(QCS_QPU, QCS_TYPE, environ=variables)
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
