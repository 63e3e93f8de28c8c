"""The IBM Quantum System fake accepts what the service accepts and refuses what it refuses,
with the service's error codes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from ibm_helpers import BELL, NON_ISA_BELL, decode, run_to_completion

from qrmi.errors import TaskNotReadyError
from qrmi.models import Payload, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.ibm_compute_service import ComputeServiceFake
from qrmi.testing.ibm_quantum_system import QuantumSystemFake

NAME = "ibm_perth"


def resource(fake: QuantumSystemFake) -> QuantumResource:
    return QuantumResource.from_config(NAME, "ibm-quantum-system", fake.settings)


def api(fake: QuantumSystemFake, method: str, path: str, body: Any = None) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {fake.iam.issuer.issue().token}",
        "Service-CRN": fake.crn,
    }
    return httpx.request(method, fake.url + path, headers=headers, json=body, timeout=30)


def job_body(job_id: str) -> dict[str, Any]:
    url = "http://127.0.0.1:9/unused"
    storage = {
        part: {"type": "s3_compatible", "presigned_url": url}
        for part in ("input", "results", "logs")
    }
    return {
        "id": job_id,
        "backend": NAME,
        "program_id": "sampler",
        "timeout_secs": 60,
        "storage": storage,
    }


def code(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, answer.json()["errors"][0]["code"]


def sampler_of(circuit: Any) -> Payload:
    params = {"pubs": [[circuit, None, 64]], "version": 2}
    if not isinstance(circuit, str):
        from qiskit_ibm_runtime import RuntimeEncoder

        return Payload.QiskitPrimitive(
            input=json.dumps(params, cls=RuntimeEncoder), program_id="sampler"
        )
    return Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler")


def test_error_codes_are_the_services(qs: QuantumSystemFake) -> None:
    missing = str(uuid.uuid4())
    assert code(api(qs, "GET", f"/v1/jobs/{missing}")) == (404, "1291")
    assert code(api(qs, "POST", f"/v1/jobs/{missing}/cancel")) == (404, "1291")
    assert code(api(qs, "GET", "/v1/backends/ibm_nowhere")) == (404, "1216")

    job_id = str(uuid.uuid4())
    assert api(qs, "POST", "/v1/jobs", job_body(job_id)).status_code == 204
    assert code(api(qs, "POST", "/v1/jobs", job_body(job_id))) == (409, "1231")
    qs.wait_idle()
    assert code(api(qs, "POST", f"/v1/jobs/{job_id}/cancel")) == (409, "1306")
    assert api(qs, "DELETE", f"/v1/jobs/{job_id}").status_code == 204
    assert code(api(qs, "GET", f"/v1/jobs/{job_id}")) == (404, "1291")

    qs.reserve(NAME)
    assert code(api(qs, "POST", "/v1/jobs", job_body(str(uuid.uuid4())))) == (423, "1233")


def test_a_running_job_cannot_be_deleted(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    params = {"pubs": [[json.loads(qs_payload())["pubs"][0][0], None, 8]], "version": 2}
    params["options"] = {"emulator": {"min_duration_seconds": 30}}
    task = qpu.task_start(Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler"))
    try:
        assert code(api(qs, "DELETE", f"/v1/jobs/{task}")) == (409, "1337")
    finally:
        qpu.task_stop(task)


def qs_payload() -> str:
    from ibm_helpers import BELL

    return json.dumps({"pubs": [[BELL, None, 8]], "version": 2})


def test_a_non_isa_circuit_fails_like_on_the_service(qs: QuantumSystemFake) -> None:
    qpu = resource(qs)
    task = qpu.task_start(sampler_of(NON_ISA_BELL))

    assert qpu.task_wait(task, 60) == TaskStatus.Failed
    with pytest.raises(TaskNotReadyError, match="code: 1517.*non-ISA.*instruction h on qubits"):
        qpu.task_result(task)


@pytest.mark.parametrize(
    ("qasm", "why"),
    [
        ("cx $0, $3;", r"cx on qubits \(0, 3\)"),  # perth couples 0-1, 1-2, 1-3, 3-5, ...
        ("ccx $0, $1, $2;", "instruction ccx"),
        ("x $7;", "8 qubits"),
    ],
)
def test_gates_off_the_coupling_map_or_basis_or_device_fail(
    qs: QuantumSystemFake, qasm: str, why: str
) -> None:
    qpu = resource(qs)
    circuit = f'OPENQASM 3.0; include "stdgates.inc"; bit[1] c; {qasm} c[0] = measure $0;'
    task = qpu.task_start(sampler_of(circuit))

    assert qpu.task_wait(task, 60) == TaskStatus.Failed
    with pytest.raises(TaskNotReadyError, match=why):
        qpu.task_result(task)


def test_qpy_circuits_from_the_runtime_encoder_are_judged_and_run(qs: QuantumSystemFake) -> None:
    from qiskit import QuantumCircuit
    from qiskit.transpiler import generate_preset_pass_manager

    from qrmi.primitives.ibm import get_backend

    qpu = resource(qs)
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()
    isa = generate_preset_pass_manager(optimization_level=1, target=get_backend(qpu).target).run(
        bell
    )

    task = run_to_completion(qpu, sampler_of(isa))
    counts = decode(qpu.task_result(task).value)[0].data.meas.get_counts()
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 64

    refused = qpu.task_start(sampler_of(bell))
    assert qpu.task_wait(refused, 60) == TaskStatus.Failed


def test_the_compute_service_fake_fails_non_isa_circuits_too(qcs: ComputeServiceFake) -> None:
    qpu = QuantumResource.from_config(NAME, "ibm-quantum-compute-service", qcs.settings)
    task = qpu.task_start(sampler_of(NON_ISA_BELL))

    assert qpu.task_wait(task, 60) == TaskStatus.Failed
    with pytest.raises(TaskNotReadyError, match="code: 1517.*non-ISA circuits"):
        qpu.task_result(task)


def test_qiskit_ibm_runtimes_own_rest_adapter_reads_the_compute_service_fakes_metrics(
    qcs: ComputeServiceFake,
) -> None:
    from qiskit_ibm_runtime.api.rest.program_job import ProgramJob
    from qiskit_ibm_runtime.api.session import RetrySession
    from requests.auth import AuthBase

    class Bearer(AuthBase):
        def __call__(self, request: Any) -> Any:
            request.headers["Authorization"] = f"Bearer {qcs.iam.issuer.issue().token}"
            request.headers["Service-CRN"] = qcs.crn
            return request

    qpu = QuantumResource.from_config(NAME, "ibm-quantum-compute-service", qcs.settings)
    task = run_to_completion(qpu, sampler_of(BELL))
    session = RetrySession(qcs.endpoint, auth=Bearer())

    metrics = ProgramJob(session, task).metadata()  # what RuntimeJobV2.usage()/metrics() read

    usage = metrics["usage"]
    assert usage["status"] == "complete"
    assert usage["qpu_charge_time_seconds"] == usage["quantum_seconds"] >= 0
    stamps = metrics["timestamps"]
    assert stamps["created"] <= stamps["running"] <= stamps["finished"]
    assert stamps["finished"].endswith("Z")
