"""Payloads and checks shared by the IBM backend tests."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from typing import Any

import httpx

from qrmi.models import Payload, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.ibm_quantum_system import QuantumSystemFake

# ISA circuits of the fakes' default device (fake_perth: cx, id, rz, sx, x; qubits 0-1
# coupled): IBM's services refuse anything else. h = rz(pi/2) sx rz(pi/2) up to a phase.
BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; bit[2] meas; rz(pi/2) $0; sx $0; rz(pi/2) $0; '
    "cx $0, $1; meas[0] = measure $0; meas[1] = measure $1;"
)
BELL_STATE = 'OPENQASM 3.0; include "stdgates.inc"; rz(pi/2) $0; sx $0; rz(pi/2) $0; cx $0, $1;'
#: The textbook Bell circuit: not in any IBM device's instruction set.
NON_ISA_BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; bit[2] meas; qubit[2] q; h q[0]; cx q[0], q[1]; '
    "meas[0] = measure q[0]; meas[1] = measure q[1];"
)


def sampler(*, shots: int = 64, seconds: float = 0.0, **extra: Any) -> Payload:
    """A Bell sampler job; ``seconds`` keeps it on the fake QPU that long."""
    params: dict[str, Any] = {"pubs": [[BELL, None, shots]], "version": 2, **extra}
    if seconds:
        params["options"] = {"emulator": {"min_duration_seconds": seconds}}
    return Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler")


def estimator() -> Payload:
    """<ZZ> and <XX> of a Bell state (both 1)."""
    params = {"pubs": [[BELL_STATE, ["ZZ", "XX"], None, 0.01]], "version": 2}
    return Payload.QiskitPrimitive(input=json.dumps(params), program_id="estimator")


def broken_sampler() -> Payload:
    """Valid JSON whose circuit is not OpenQASM: the job fails on the service."""
    params = {"pubs": [["this is not a circuit", None, 10]], "version": 2}
    return Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler")


def run_to_completion(qpu: QuantumResource, payload: Payload) -> str:
    """Start ``payload`` on ``qpu``, assert it completes within 60 s; its task id."""
    task = qpu.task_start(payload)
    assert qpu.task_wait(task, 60) == TaskStatus.Completed, qpu.task_logs(task)
    return task


def decode(text: str) -> Any:
    """The PrimitiveResult, decoded as qiskit-ibm-runtime does."""
    from qiskit_ibm_runtime.decoders.result_decoder import ResultDecoder

    return ResultDecoder.decode(text)


def assert_no_secret(secrets: Iterable[str], texts: Iterable[str]) -> None:
    """No secret occurs in any text."""
    wanted = [s for s in secrets if s]
    for text in texts:
        for secret in wanted:
            assert secret not in text, f"a credential leaked into: {text[:200]}"


def log_texts(records: Iterable[logging.LogRecord]) -> list[str]:
    """Every log record's message, plus its exception text if any."""
    texts = []
    for record in records:
        texts.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(str(record.exc_info[1]))
    return texts


def service_request(
    fake: QuantumSystemFake, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    """A request to the fake as another client of the same service instance."""
    headers = {
        "Authorization": f"Bearer {fake.iam.issuer.issue().token}",
        "Service-CRN": fake.crn,
    }
    return httpx.request(method, fake.url + path, headers=headers, timeout=30, **kwargs)


def foreign_job(fake: QuantumSystemFake, backend: str, *, in_our_bucket: bool = False) -> str:
    """A job of another client on ``backend``, run to its end. Its input is not in our bucket,
    or, ``in_our_bucket``, it names an ``input_{id}.json`` there that holds no input of ours
    (another user of the same bucket)."""
    job_id = str(uuid.uuid4())
    urls = dict.fromkeys(("input", "results", "logs"), "http://127.0.0.1:9/unused")
    if in_our_bucket:
        endpoint = fake.settings["QRMI_IBM_QS_S3_ENDPOINT"]
        urls["input"] = f"{endpoint}/{fake.s3.bucket}/input_{job_id}.json"
    body = {
        "id": job_id,
        "backend": backend,
        "program_id": "sampler",
        "timeout_secs": 60,
        "storage": {
            part: {"type": "s3_compatible", "presigned_url": url} for part, url in urls.items()
        },
    }
    assert service_request(fake, "POST", "/v1/jobs", json=body).status_code == 204
    fake.wait_idle()
    return job_id
