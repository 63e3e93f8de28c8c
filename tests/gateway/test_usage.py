"""Usage records: every task through the gateway is recorded at its start and completed once
it is final, by a status call, a wait, or the job's end."""

from __future__ import annotations

import json
import os

import pytest

from gateway.conftest import bell
from qrmi.gateway.client import finish_job, start_job
from qrmi.gateway.testing import LocalGateway
from qrmi.gateway.usage import payload_facts, task_cost
from qrmi.models import Payload, TaskStatus, TaskUsage
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's")

ACCOUNTING = {"user": "alice", "account": "physics", "partition": "qpu"}


def test_tasks_are_recorded_with_who_ran_them_and_how_they_ended(
    gateway: LocalGateway, munge: MungeDaemon
) -> None:
    _, variables = start_job(
        gateway.url, "300", 1000, ["emu"], 3600, munge_socket=munge.socket, accounting=ACCOUNTING
    )
    qpu = QuantumResource("emu", "local-emulator", environ=variables)
    done = qpu.task_start(bell(shots=200))
    assert qpu.task_wait(done, 60) == TaskStatus.Completed
    result = qpu.task_result(done)
    left_running = qpu.task_start(bell(seconds=60))

    answer = finish_job(gateway.url, "300", munge_socket=munge.socket)

    assert answer["usage"]["tasks"] == 2
    records = {r.task_id: r for r in gateway.service.store.usage(slurm_job_id="300")}
    first, second = records[done], records[left_running]
    assert (first.user_name, first.account, first.partition) == ("alice", "physics", "qpu")
    assert (first.qpu, first.qpu_type, first.uid) == ("emu", "local-emulator", 1000)
    assert (first.payload_kind, first.program, first.shots) == ("QiskitPrimitive", "sampler", 200)
    assert first.state == "Completed" and first.ended is not None
    assert first.result_bytes == len(result.value)
    assert first.input_bytes == len(bell(shots=200).input)
    assert second.state == "Cancelled" and second.ended is not None
    assert first.submitted <= second.submitted <= second.ended


def test_a_record_survives_a_gateway_restart_and_is_completed_after_it(
    gateway: LocalGateway, munge: MungeDaemon
) -> None:
    _, variables = start_job(gateway.url, "301", 1000, ["emu"], 3600, munge_socket=munge.socket)
    qpu = QuantumResource("emu", "local-emulator", environ=variables)
    task = qpu.task_start(bell())

    gateway.restart()
    assert qpu.task_wait(task, 60) == TaskStatus.Completed
    (record,) = gateway.service.store.usage(slurm_job_id="301")

    assert record.task_id == task and record.state == "Completed"
    assert record.user_name is None  # started without accounting facts: still recorded


def test_a_job_start_with_a_malformed_account_is_refused(
    gateway: LocalGateway, munge: MungeDaemon
) -> None:
    from qrmi.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="account"):
        start_job(
            gateway.url,
            "302",
            1000,
            ["emu"],
            3600,
            munge_socket=munge.socket,
            accounting={"account": "phys;rm -rf /"},
        )


def test_payload_facts_state_shots_where_the_payload_says() -> None:
    iqm = Payload.IQMServer(iqmjson=json.dumps({"circuits": [], "shots": 300}))
    felis = Payload.AliceBobFelis(human_qir="qir", input_params=json.dumps({"nbShots": 50}))
    pasqal = Payload.PasqalCloud(sequence="{}", job_runs=70)
    no_shots = Payload.QiskitPrimitive(input=json.dumps({"pubs": [["c"]]}), program_id="sampler")
    default = Payload.QiskitPrimitive(
        input=json.dumps({"pubs": [["c"], ["d", None, 5]], "shots": 10}), program_id="sampler"
    )

    assert payload_facts(iqm).shots == 300
    assert payload_facts(felis).shots == 50
    assert payload_facts(pasqal).shots == 70
    assert payload_facts(no_shots).shots is None
    assert payload_facts(default).shots == 15
    assert payload_facts(Payload.QiskitPrimitive(input="not json", program_id="x")).shots is None


def test_the_cost_prefers_what_the_vendor_reports() -> None:
    assert task_cost(TaskUsage(quantum_seconds=2.5, running_seconds=9.0), 0.0, 10.0) == (
        2.5,
        "vendor",
    )
    assert task_cost(TaskUsage(running_seconds=9.0), 0.0, 10.0) == (9.0, "vendor-running")
    assert task_cost(None, 4.0, 10.0) == (6.0, "gateway")
    assert task_cost(None, None, 10.0) == (None, None)
