"""The IBM Quantum System fake set for load (what the throughput benchmark uses): its own
process, httptools, result reuse, the job routes answered before FastAPI, kept ISA verdicts;
each still answers as the service does."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import httpx
import pytest

from qrmi.errors import ConfigError
from qrmi.models import Payload, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing import FakeServer
from qrmi.testing.ibm_quantum_system import QuantumSystemFake, QuantumSystemFakeProcess
from qrmi.testing.ibm_shared import FakeDevice, isa_violation

NAME = "ibm_perth"
# An ISA circuit of fake_perth (h = rz sx rz on qubit 0, cx on the coupled pair 0-1).
BELL = (
    'OPENQASM 3.0;\ninclude "stdgates.inc";\nbit[2] meas;\n'
    "rz(pi/2) $0;\nsx $0;\nrz(pi/2) $0;\ncx $0, $1;\nmeas[0] = measure $0;\nmeas[1] = measure $1;\n"
)
NON_ISA = 'OPENQASM 3.0; include "stdgates.inc"; bit[1] c; h $0; c[0] = measure $0;'


def bell_payload(shots: int = 64) -> Payload:
    params = {"pubs": [[BELL, None, shots]], "version": 2}
    return Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler")


def resource(settings: dict[str, str]) -> QuantumResource:
    return QuantumResource.from_config(NAME, "ibm-quantum-system", settings)


def api(fake: QuantumSystemFake, method: str, path: str, body: Any = None) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {fake.iam.issuer.issue().token}",
        "Service-CRN": fake.crn,
    }
    return httpx.request(method, fake.url + path, headers=headers, json=body, timeout=30)


async def hello(scope: Any, receive: Any, send: Any) -> None:
    """A bare ASGI app answering ``hello``."""
    if scope["type"] != "http":
        return
    await receive()
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello"})


def test_a_fake_server_on_httptools_records_and_injects_faults() -> None:
    with FakeServer(hello, http="httptools") as server:
        server.faults.fail(503, times=1, path="/x")

        first = httpx.get(server.url + "/x?a=1", timeout=10)
        second = httpx.get(server.url + "/x", timeout=10)

        assert (first.status_code, second.status_code, second.text) == (503, 200, "hello")
        recorded = server.requests("/x", method="GET")
        assert [(r.query, r.status) for r in recorded] == [("a=1", 503), ("", 200)]


def test_a_fake_server_refuses_an_unknown_http_implementation() -> None:
    with pytest.raises(ConfigError, match="h11, httptools"):
        FakeServer(hello, http="hyper")


def test_the_job_routes_answer_as_the_fastapi_app_would() -> None:
    with QuantumSystemFake(http="httptools") as fake:
        missing = str(uuid.uuid4())
        answer = api(fake, "GET", f"/v1/jobs/{missing}")
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["errors"][0]["code"] == "1291"
        assert api(fake, "DELETE", f"/v1/jobs/{missing}").json()["errors"][0]["code"] == "1291"
        # Not the job routes: FastAPI answers (no route, method not allowed).
        assert api(fake, "GET", f"/v1/jobs/{missing}/more").status_code == 404
        assert api(fake, "PUT", f"/v1/jobs/{missing}").status_code == 405
        # No token: refused before anything else, as on the other routes.
        assert httpx.get(f"{fake.url}/v1/jobs/{missing}", timeout=10).status_code == 401
        assert api(fake, "POST", "/v1/jobs", {"id": "not-a-uuid"}).status_code == 400


def test_with_result_reuse_equal_inputs_get_the_first_jobs_result() -> None:
    with QuantumSystemFake(light_s3=True, reuse_results=True) as fake:
        qpu = resource(fake.settings)
        tasks = []
        for _ in range(2):  # one after the other: the second finds the first's result
            tasks.append(qpu.task_start(bell_payload()))
            assert qpu.task_wait(tasks[-1], 60) == TaskStatus.Completed
        results = [qpu.task_result(task).value for task in tasks]

        assert results[0] == results[1]
        assert json.loads(results[0])["__type__"] == "PrimitiveResult"
        assert {f"logs_{task}.json" for task in tasks} <= set(fake.s3.keys())


def test_with_a_direct_store_jobs_use_the_store_in_memory() -> None:
    with QuantumSystemFake(light_s3=True, direct_store=True) as fake:
        qpu = resource(fake.settings)
        task = qpu.task_start(bell_payload())
        assert qpu.task_wait(task, 60) == TaskStatus.Completed

        assert json.loads(qpu.task_result(task).value)["__type__"] == "PrimitiveResult"
        assert b"job completed" in fake.s3.read(f"logs_{task}.json")
        by_fake = [r for r in fake.s3.requests() if "urllib" in r.headers.get("user-agent", "")]
        assert by_fake == []


def test_the_isa_verdict_kept_for_a_circuit_names_each_pubs_index() -> None:
    device = FakeDevice(NAME, "fake_perth")
    params = {"pubs": [[BELL, None, 8], [NON_ISA, None, 8]]}

    first = isa_violation(params, device)
    again = isa_violation({"pubs": [[NON_ISA, None, 8]]}, device)

    assert first is not None and first.startswith("pub 1: the instruction h on qubits (0,)")
    assert again is not None and again.startswith("pub 0: the instruction h on qubits (0,)")
    assert isa_violation({"pubs": [[BELL, None, 8]]}, device) is None


def test_the_fake_in_its_own_process_runs_tasks_and_ends_with_stop() -> None:
    fake = QuantumSystemFakeProcess(
        devices={NAME: "fake_perth"}, light_s3=True, http="httptools", reuse_results=True
    )
    with fake:
        pid = fake.pid
        qpu = resource(fake.settings)
        task = qpu.task_start(bell_payload())
        assert qpu.task_wait(task, 60) == TaskStatus.Completed
        assert qpu.task_result(task).value
        assert fake.cpu_seconds() > 0
        with open(f"/proc/{pid}/environ", "rb") as environ:
            assert b"OMP_WAIT_POLICY=" in environ.read()
    assert not os.path.exists(f"/proc/{pid}/stat") or _is_zombie_or_gone(pid)
    with pytest.raises(RuntimeError, match="call start"):
        fake.settings  # noqa: B018


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
