"""The OQTOPUS fake answers like the service's User API router: statuses, messages, storage."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from qrmi.testing.oqtopus import OqtopusFake

BELL = 'OPENQASM 3;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\nh q[0];\ncx q[0], q[1];\n'
BELL += "c = measure q;\n"
REQUEST = {"device_id": "anemone", "job_type": "sampling", "shots": 10}


@pytest.fixture(scope="module")
def fake() -> Iterator[OqtopusFake]:
    with OqtopusFake(seed=1) as server:
        yield server


@pytest.fixture
def api(fake: OqtopusFake) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, headers={"q-api-token": fake.token}) as client:
        yield client
    fake.set_available("anemone", True)


def zipped(document: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("input.json", json.dumps(document))
    return buffer.getvalue()


def register(api: httpx.Client, upload: dict[str, Any] | None = None) -> str:
    answer = api.post("/jobs").json()
    if upload is not None:
        form = answer["presigned_url"]
        files = {"file": ("input.zip", zipped(upload), "application/zip")}
        stored = httpx.post(form["url"], data=form["fields"], files=files)
        assert stored.status_code == 204, stored.text
    return str(answer["job_id"])


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing Q-API-Token"),
        ({"q-api-token": "no-dot"}, "Malformed Q-API-Token"),
        ({"q-api-token": "id.wrong-secret"}, "Invalid API token"),
    ],
)
def test_a_bad_token_is_unauthorized(
    fake: OqtopusFake, headers: dict[str, str], message: str
) -> None:
    answer = httpx.get(fake.url + "/devices", headers=headers)
    assert (answer.status_code, answer.json()) == (401, {"message": message})


def test_a_user_not_approved_is_forbidden(api: httpx.Client, fake: OqtopusFake) -> None:
    fake.approved = False
    try:
        answer = api.get("/devices")
    finally:
        fake.approved = True
    assert (answer.status_code, answer.json()) == (403, {"message": "User is not approved"})


def test_a_registered_job_shows_only_its_id_and_status(api: httpx.Client) -> None:
    job_id = register(api)
    assert api.get(f"/jobs/{job_id}").json() == {"job_id": job_id, "status": "registered"}


def test_submit_checks_in_the_service_order(api: httpx.Client, fake: OqtopusFake) -> None:
    missing = api.post("/jobs/no-such-job/submit", json=REQUEST)
    assert (missing.status_code, missing.json()) == (404, {"message": NOT_FOUND})

    job_id = register(api)
    unknown = api.post(f"/jobs/{job_id}/submit", json={**REQUEST, "device_id": "kawasaki"})
    assert (unknown.status_code, unknown.json()["message"]) == (400, "device not found")
    not_uploaded = api.post(f"/jobs/{job_id}/submit", json=REQUEST)
    assert not_uploaded.status_code == 400
    assert not_uploaded.json()["message"] == f"job information input for {job_id} job not found"

    fake.set_available("anemone", False)
    ready = register(api, {"program": [BELL]})
    unavailable = api.post(f"/jobs/{ready}/submit", json=REQUEST)
    assert unavailable.json()["message"] == "device anemone is not available"
    fake.set_available("anemone", True)

    assert api.post(f"/jobs/{ready}/submit", json=REQUEST).json() == {"message": "job submitted"}
    again = api.post(f"/jobs/{ready}/submit", json=REQUEST)
    assert again.status_code == 400
    assert "not in valid status for submission" in again.json()["message"]


def test_a_body_the_request_model_refuses_is_fastapi_422_before_any_lookup(
    api: httpx.Client,
) -> None:
    answer = api.post("/jobs/no-such-job/submit", json={**REQUEST, "shots": 0})
    assert answer.status_code == 422
    (detail,) = answer.json()["detail"]
    assert detail["loc"] == ["body", "shots"] and detail["input"] == 0


def test_cancel_and_delete_follow_the_job_status(api: httpx.Client, fake: OqtopusFake) -> None:
    job_id = register(api, {"program": [BELL]})
    fake.jobs.hold()
    try:
        api.post(f"/jobs/{job_id}/submit", json=REQUEST)
        running = api.delete(f"/jobs/{job_id}")
        assert running.status_code == 400
        assert "not in valid status for deletion" in running.json()["message"]
        accepted = api.post(f"/jobs/{job_id}/cancel").json()
        assert accepted == {"message": "cancel request accepted"}
        assert api.post(f"/jobs/{job_id}/cancel").status_code == 200  # cancelled: accepted
    finally:
        fake.jobs.resume()
    assert api.get(f"/jobs/{job_id}/status").json() == {"job_id": job_id, "status": "cancelled"}
    assert api.delete(f"/jobs/{job_id}").json() == {"message": "job deleted"}
    assert api.get(f"/jobs/{job_id}").status_code == 404


def test_a_finished_job_cannot_be_cancelled_and_its_result_downloads(
    api: httpx.Client, fake: OqtopusFake
) -> None:
    job_id = register(api, {"program": [BELL]})
    api.post(f"/jobs/{job_id}/submit", json=REQUEST)
    assert fake.jobs.wait_idle(60)

    refused = api.post(f"/jobs/{job_id}/cancel")
    assert refused.status_code == 400
    assert "not in valid status for cancellation" in refused.json()["message"]
    job = api.get(f"/jobs/{job_id}").json()
    assert job["name"] == "" and "message" not in job["job_info"]
    archive = zipfile.ZipFile(io.BytesIO(httpx.get(job["job_info"]["result"]).content))
    result = json.loads(archive.read(archive.namelist()[0]))
    assert sum(result["sampling"]["counts"].values()) == 10


def test_storage_refuses_a_tampered_form_or_url(api: httpx.Client, fake: OqtopusFake) -> None:
    form = api.post("/jobs").json()["presigned_url"]
    fields = {**form["fields"], "key": "someone-else/input.zip"}
    files = {"file": ("input.zip", zipped({"program": [BELL]}), "application/zip")}
    assert httpx.post(form["url"], data=fields, files=files).status_code == 403

    url = fake.storage.download_url(fake.url, "devices/anemone/device_info.zip")
    assert httpx.get(url.replace("Signature=", "Signature=x")).status_code == 403


NOT_FOUND = "job not found with the given id"
