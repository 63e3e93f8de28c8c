"""Root's MUNGE credential is bound to the whole request: method, path and body."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from qrmi.backends._munge import Munge
from qrmi.gateway.auth import MUNGE_HEADER, munge_binding
from qrmi.gateway.client import finish_job, start_job
from qrmi.gateway.testing import LocalGateway
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's")


def _body(job_id: str, qpus: list[str], uid: int = 1000) -> bytes:
    return json.dumps({"job_id": job_id, "uid": uid, "qpus": qpus, "time_limit": 60}).encode()


def _post(gateway: LocalGateway, credential: str, body: bytes) -> httpx.Response:
    headers = {MUNGE_HEADER: credential, "Content-Type": "application/json"}
    return httpx.post(f"{gateway.url}/v1/jobs", content=body, headers=headers)


def test_a_credential_captured_in_flight_is_refused_with_another_body(
    gateway: LocalGateway, munge: MungeDaemon
) -> None:
    """Someone who captures the helper's start of job 130 (for uid 1000, QPU emu) cannot turn
    it into a start of the same job for another uid or more QPUs before it arrives."""
    sent = _body("130", ["emu"])

    for forged in (_body("130", ["emu", "emu2"]), _body("130", ["emu"], uid=0)):
        captured = Munge(munge.socket).encode(munge_binding("POST", "/v1/jobs/130", sent))
        refused = _post(gateway, captured, forged)

        assert refused.status_code == 401
        assert "made for another request" in refused.json()["error"]["message"]
    assert gateway.service is not None and gateway.service.store.job("130") is None
    genuine = Munge(munge.socket).encode(munge_binding("POST", "/v1/jobs/130", sent))
    assert _post(gateway, genuine, sent).status_code == 201


def test_a_credential_without_the_body_digest_is_refused(
    gateway: LocalGateway, munge: MungeDaemon
) -> None:
    credential = Munge(munge.socket).encode(b"qrmi-gateway POST /v1/jobs/131")

    refused = _post(gateway, credential, _body("131", ["emu"]))

    assert refused.status_code == 401
    assert "sha256:<hex of the exact body sent>" in refused.json()["error"]["message"]


def test_the_job_end_is_bound_to_its_body_too(gateway: LocalGateway, munge: MungeDaemon) -> None:
    start_job(gateway.url, "132", 1000, ["emu"], 60, run_id="r1", munge_socket=munge.socket)
    credential = Munge(munge.socket).encode(munge_binding("DELETE", "/v1/jobs/132"))

    refused = httpx.request(
        "DELETE",
        f"{gateway.url}/v1/jobs/132",
        content=b'{"run_id": "r1"}',
        headers={MUNGE_HEADER: credential, "Content-Type": "application/json"},
    )

    assert refused.status_code == 401
    assert finish_job(gateway.url, "132", run_id="r1", munge_socket=munge.socket)["released"] == [
        "emu"
    ]
