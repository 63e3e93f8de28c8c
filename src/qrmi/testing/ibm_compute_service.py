"""A fake of the IBM Quantum Compute Service (Qiskit Runtime REST API v1), with IAM beside it.

:class:`ComputeServiceFake` serves the API under ``/api/v1`` (the endpoint setting is
``{url}/api/v1``, as for ``https://quantum.cloud.ibm.com/api/v1``) and runs the IAM fake
(:attr:`ComputeServiceFake.iam`). Every API request needs ``Authorization: Bearer <token>`` and
``Service-CRN``; an ``IBM-API-Version`` header, when sent, must be one of
:data:`API_VERSIONS` (400 otherwise).

* ``GET /backends`` -> ``{"devices": [{"name", "status": {"name", "reason"}, "is_simulator",
  "qubits", "queue_length", "processor_type"}]}``; ``GET /backends/{n}/status`` ->
  ``{"state", "status", "message", "length_queue", "backend_version"}``;
  ``.../configuration`` and ``.../properties``.
* ``POST /sessions`` ``{"mode": "dedicated"|"batch", "backend", "max_ttl"?}`` -> the session;
  ``GET /sessions/{id}``; ``PATCH /sessions/{id}`` ``{"accepting_jobs": false}`` -> 204;
  ``DELETE /sessions/{id}/close`` -> 204 (queued jobs of the session are cancelled).
* ``POST /jobs`` ``{"program_id", "backend", "params", "session_id"?, "cost"?, "private"?,
  "log_level"?, "tags"?}`` -> ``{"id", "backend", "session_id"?}``; ``GET /jobs`` (``pending``,
  ``backend``, ``session_id``, ``limit``, ``offset``, ``sort``, ``exclude_params``);
  ``GET|DELETE /jobs/{id}``; ``POST /jobs/{id}/cancel`` -> 204 (409 once final);
  ``GET /jobs/{id}/results`` and ``/logs`` as ``text/plain``, as the real service serves them;
  ``GET /jobs/{id}/metrics`` -> ``{"timestamps": {"created", "running", "finished"}, "usage":
  {"quantum_seconds", "seconds", "qpu_charge_time_seconds", "status"}, "bss": {"seconds"}}``
  (the job's emulated QPU time; usage ``status`` is ``pending`` until the job is final).
* ``GET /versions`` (no authentication).

Jobs go ``Queued`` -> ``Running`` -> ``Completed`` on the emulator engine, one at a time, on a
background thread; a job whose run exceeds its ``cost`` ends ``Cancelled - Ran too long``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from qrmi.testing._jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, FakeJob, JobQueue
from qrmi.testing.auth import TokenIssuer
from qrmi.testing.ibm_shared import (
    DEFAULT_APIKEY,
    DEFAULT_CRN,
    FakeDevice,
    IbmFakeServer,
    check_request,
    devices_from,
    devices_named,
    execute_primitive,
    ibm_error,
    isa_violation,
    json_body,
    requested_seconds,
    unknown_backend,
    utc_now,
)

__all__ = ["API_VERSIONS", "ComputeServiceFake", "FakeSession", "serve"]

DEFAULT_DEVICES = {"ibm_torino": "fake_torino", "ibm_perth": "fake_perth"}
API_VERSIONS = ("2025-01-01", "2025-05-01", "2026-02-01", "2026-04-15")
PROGRAM_IDS = ("sampler", "estimator", "noise-learner")
SESSION_MODES = ("dedicated", "batch")
PREFIX = "/api/v1"
_STATUS = {
    QUEUED: "Queued",
    RUNNING: "Running",
    DONE: "Completed",
    FAILED: "Failed",
    CANCELLED: "Cancelled",
}
RAN_TOO_LONG = "Cancelled - Ran too long"


class NonIsaCircuits(Exception):
    """A job's circuits are not in the device's instruction set; the service fails it."""


class _RanTooLong(Exception):
    pass


@dataclass
class FakeSession:
    """One Runtime session."""

    id: str
    backend: str
    mode: str
    max_ttl: int
    accepting_jobs: bool = True
    state: str = "open"
    started: float = field(default_factory=time.time)
    created_at: str = field(default_factory=utc_now)

    def to_json(self) -> dict[str, Any]:
        """The API's session object."""
        active_ttl = max(0, self.max_ttl - int(time.time() - self.started))
        return {
            "id": self.id,
            "backend_name": self.backend,
            "mode": self.mode,
            "max_ttl": self.max_ttl,
            "active_ttl": active_ttl,
            "interactive_ttl": 60 if self.mode == "dedicated" else 1,
            "state": self.state,
            "accepting_jobs": self.accepting_jobs,
            "started_at": self.created_at,
            "created_at": self.created_at,
        }

    @property
    def is_open(self) -> bool:
        """Open = not closed and accepting jobs."""
        return self.state != "closed" and self.accepting_jobs


class _State:
    def __init__(
        self, devices: dict[str, FakeDevice], execution_seconds: float, check_isa: bool = True
    ) -> None:
        self.devices = devices
        self.execution_seconds = execution_seconds
        self.check_isa = check_isa
        self.lock = threading.Lock()
        self.sessions: dict[str, FakeSession] = {}
        self.deleted: set[str] = set()
        self.queue = JobQueue(self._execute)

    def _execute(self, job: FakeJob) -> str:
        started = time.monotonic()
        seconds = requested_seconds(job.work, self.execution_seconds)
        while time.monotonic() - started < seconds and not job.cancel_requested:
            time.sleep(0.02)
        if job.cancel_requested:
            return ""
        device = self.devices[job.data["backend"]]
        if self.check_isa and (problem := isa_violation(job.work, device)):
            raise NonIsaCircuits(
                f"Circuits do not match the target definition (non-ISA circuits). {problem}"
            )
        result = execute_primitive(
            job.data["program_id"], job.work, self.devices[job.data["backend"]]
        )
        cost = job.data.get("cost")
        if isinstance(cost, int) and time.monotonic() - started > cost:
            job.data["ran_too_long"] = True
            raise _RanTooLong(f"job exceeded its maximum execution time of {cost} s")
        return result

    def status(self, job: FakeJob) -> str:
        if job.state == FAILED and job.data.get("ran_too_long"):
            return RAN_TOO_LONG
        return _STATUS[job.state]

    def queue_length(self, backend: str) -> int:
        return sum(
            1 for job in self.queue.jobs() if job.data["backend"] == backend and job.state == QUEUED
        )

    def settle_sessions(self) -> None:
        """A session that stopped accepting jobs closes once none of its jobs is pending."""
        with self.lock:
            for session in self.sessions.values():
                if (
                    not session.accepting_jobs
                    and session.state != "closed"
                    and not self.pending(session.id)
                ):
                    session.state = "closed"

    def pending(self, session_id: str) -> list[FakeJob]:
        return [
            job
            for job in self.queue.jobs()
            if job.data.get("session_id") == session_id and job.state in (QUEUED, RUNNING)
        ]

    def job_json(self, job: FakeJob, *, exclude_params: bool) -> dict[str, Any]:
        status = self.status(job)
        state: dict[str, Any] = {"status": status}
        if job.state == FAILED:
            state.update(
                reason=(job.error or "job failed").removeprefix(f"{NonIsaCircuits.__name__}: "),
                reason_code=1517 if status != RAN_TOO_LONG else 1305,
                reason_solution="fix the input and submit again",
            )
        body: dict[str, Any] = {
            "id": job.id,
            "backend": job.data["backend"],
            "state": state,
            "status": status,
            "program": {"id": job.data["program_id"]},
            "created": _stamp(job.created_at),
            "cost": job.data.get("cost") or 0,
            "private": job.data.get("private", False),
            "tags": job.data.get("tags", []),
        }
        if job.data.get("session_id"):
            body["session_id"] = job.data["session_id"]
        if job.finished_at and job.started_at:
            body["usage"] = {"seconds": round(job.finished_at - job.started_at, 3)}
        if not exclude_params:
            body["params"] = job.work
        return body

    def metrics_json(self, job: FakeJob) -> dict[str, Any]:
        """The job's metrics: its timestamps and the QPU seconds it used (its emulated run)."""
        used = 0.0
        if job.finished_at is not None and job.started_at is not None:
            used = round(job.finished_at - job.started_at, 3)
        return {
            "timestamps": {
                "created": _stamp(job.created_at),
                "running": _stamp(job.started_at),
                "finished": _stamp(job.finished_at),
            },
            "usage": {
                "quantum_seconds": used,
                "seconds": used,
                "qpu_charge_time_seconds": used,
                "status": "complete" if job.final else "pending",
            },
            "bss": {"seconds": used},
        }


def create_app(state: _State, issuer: TokenIssuer, crn: str) -> FastAPI:
    """The Qiskit Runtime REST API as a FastAPI app over ``state``."""
    app = FastAPI(
        title="fake IBM Quantum Compute Service", openapi_url=None, docs_url=None, redoc_url=None
    )

    def guard(request: Request) -> Any | None:
        if (error := check_request(request, issuer, crn)) is not None:
            return error
        version = request.headers.get("ibm-api-version")
        if version is not None and version not in API_VERSIONS:
            return ibm_error(
                400,
                "1010",
                f"Unsupported IBM-API-Version {version!r}; supported: {', '.join(API_VERSIONS)}.",
            )
        return None

    async def guarded_body(request: Request) -> tuple[dict[str, Any] | None, Any | None]:
        """``(JSON body, None)`` for an allowed request, ``(None, error response)`` otherwise."""
        if (error := guard(request)) is not None:
            return None, error
        return await json_body(request)

    def guarded_job(request: Request, job_id: str) -> FakeJob | Any:
        """The job of an allowed request, or the error response (refused, unknown, deleted)."""
        if (error := guard(request)) is not None:
            return error
        job = state.queue.get(job_id)
        if job is None or job_id in state.deleted:
            return ibm_error(404, "1291", f"Job {job_id} not found.")
        return job

    @app.get(PREFIX + "/versions")
    async def versions() -> Any:
        return {"versions": [{"version": v, "status": "supported"} for v in API_VERSIONS]}

    @app.get(PREFIX + "/backends")
    async def backends(request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        return {
            "devices": [
                {
                    "name": d.name,
                    "status": {
                        "name": d.status,
                        "reason": d.message if d.status != "online" else "",
                    },
                    "is_simulator": d.is_simulator,
                    "qubits": d.num_qubits,
                    "queue_length": state.queue_length(d.name),
                    "processor_type": {"family": "Fake"},
                }
                for d in state.devices.values()
            ]
        }

    @app.get(PREFIX + "/backends/{name}/{part}")
    async def backend_part(name: str, part: str, request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        device = state.devices.get(name)
        if device is None or part not in ("status", "configuration", "properties"):
            return unknown_backend(name)
        if part == "status":
            return {
                "state": device.status == "online",
                "status": "active" if device.status == "online" else device.status,
                "message": device.message,
                "length_queue": state.queue_length(name),
                "backend_version": device.version,
            }
        configuration, properties = device.description()
        return configuration if part == "configuration" else properties

    @app.post(PREFIX + "/sessions")
    async def create_session(request: Request) -> Any:
        body, error = await guarded_body(request)
        if error is not None:
            return error
        assert body is not None
        backend = body.get("backend") or body.get("backend_name")
        mode = body.get("mode", "dedicated")
        max_ttl = body.get("max_ttl", 28800)
        if mode not in SESSION_MODES:
            return ibm_error(400, "1400", f"'mode' must be one of {', '.join(SESSION_MODES)}.")
        if backend not in state.devices:
            return ibm_error(404 if backend else 400, "1216", f"Backend {backend} not found.")
        if not isinstance(max_ttl, int) or isinstance(max_ttl, bool) or not 1 <= max_ttl <= 28800:
            return ibm_error(400, "1400", "'max_ttl' must be an integer between 1 and 28800.")
        session = FakeSession(uuid.uuid4().hex[:20], backend, mode, max_ttl)
        with state.lock:
            state.sessions[session.id] = session
        return session.to_json()

    @app.get(PREFIX + "/sessions/{session_id}")
    async def get_session(session_id: str, request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        state.settle_sessions()
        session = state.sessions.get(session_id)
        return (
            session.to_json()
            if session
            else ibm_error(404, "1290", f"Session {session_id} not found.")
        )

    @app.patch(PREFIX + "/sessions/{session_id}")
    async def update_session(session_id: str, request: Request) -> Any:
        body, error = await guarded_body(request)
        if error is not None:
            return error
        assert body is not None
        session = state.sessions.get(session_id)
        if session is None:
            return ibm_error(404, "1290", f"Session {session_id} not found.")
        if body.get("accepting_jobs") is not False or set(body) != {"accepting_jobs"}:
            return ibm_error(400, "1400", 'Only {"accepting_jobs": false} can be set.')
        session.accepting_jobs = False
        state.settle_sessions()
        return Response(status_code=204)

    @app.delete(PREFIX + "/sessions/{session_id}/close")
    async def close_session(session_id: str, request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        session = state.sessions.get(session_id)
        if session is None:
            return ibm_error(404, "1290", f"Session {session_id} not found.")
        session.accepting_jobs = False
        session.state = "closed"
        for job in state.pending(session_id):
            if job.state == QUEUED:
                state.queue.cancel(job.id)
        return Response(status_code=204)

    @app.post(PREFIX + "/jobs")
    async def create_job(request: Request) -> Any:
        body, error = await guarded_body(request)
        if error is not None:
            return error
        assert body is not None
        checked = _validate_job(body, state)
        if not isinstance(checked, dict):
            return checked
        job = state.queue.submit(body["params"], job_id=f"j{uuid.uuid4().hex[:19]}", **checked)
        answer = {"id": job.id, "backend": checked["backend"]}
        if checked.get("session_id"):
            answer["session_id"] = checked["session_id"]
        return answer

    @app.get(PREFIX + "/jobs")
    async def list_jobs(request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        query = request.query_params
        try:
            limit = int(query.get("limit", 200))
            offset = int(query.get("offset", 0))
        except ValueError:
            return ibm_error(400, "1400", "'limit' and 'offset' must be integers.")
        jobs = [job for job in state.queue.jobs() if job.id not in state.deleted]
        if "pending" in query:
            want = query["pending"].lower() == "true"
            jobs = [job for job in jobs if (job.state in (QUEUED, RUNNING)) == want]
        for key in ("backend", "session_id"):
            if key in query:
                jobs = [job for job in jobs if job.data.get(key) == query[key]]
        if query.get("sort", "DESC").upper() == "DESC":
            jobs.reverse()
        exclude = query.get("exclude_params", "true").lower() != "false"
        page = jobs[offset : offset + limit]
        return {
            "jobs": [state.job_json(job, exclude_params=exclude) for job in page],
            "count": len(jobs),
            "limit": limit,
            "offset": offset,
        }

    @app.get(PREFIX + "/jobs/{job_id}")
    async def get_job(job_id: str, request: Request) -> Any:
        job = guarded_job(request, job_id)
        if not isinstance(job, FakeJob):
            return job
        exclude = request.query_params.get("exclude_params", "false").lower() == "true"
        return JSONResponse(state.job_json(job, exclude_params=exclude))

    @app.delete(PREFIX + "/jobs/{job_id}")
    async def delete_job(job_id: str, request: Request) -> Any:
        job = guarded_job(request, job_id)
        if not isinstance(job, FakeJob):
            return job
        if not job.final:
            return ibm_error(409, "1292", f"Job {job_id} is {state.status(job)}; cancel it first.")
        state.deleted.add(job_id)
        return Response(status_code=204)

    @app.post(PREFIX + "/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str, request: Request) -> Any:
        job = guarded_job(request, job_id)
        if not isinstance(job, FakeJob):
            return job
        if job.final:
            return ibm_error(
                409, "1293", f"Job {job_id} is {state.status(job)} and cannot be cancelled."
            )
        state.queue.cancel(job_id)
        return Response(status_code=204)

    @app.get(PREFIX + "/jobs/{job_id}/results")
    async def results(job_id: str, request: Request) -> Any:
        job = guarded_job(request, job_id)
        if not isinstance(job, FakeJob):
            return job
        if job.state != DONE:
            return ibm_error(
                404 if not job.final else 409,
                "1294",
                f"Job {job_id} is {state.status(job)}; results exist once it is Completed.",
            )
        return PlainTextResponse(job.result)

    @app.get(PREFIX + "/jobs/{job_id}/metrics")
    async def metrics(job_id: str, request: Request) -> Any:
        job = guarded_job(request, job_id)
        if not isinstance(job, FakeJob):
            return job
        return JSONResponse(state.metrics_json(job))

    @app.get(PREFIX + "/jobs/{job_id}/logs")
    async def logs(job_id: str, request: Request) -> Any:
        job = guarded_job(request, job_id)
        if not isinstance(job, FakeJob):
            return job
        lines = [f"job {job.id} created for {job.data['backend']}", f"status: {state.status(job)}"]
        if job.error:
            lines.append(f"error: {job.error}")
        return PlainTextResponse("\n".join(lines))

    return app


def _stamp(when: float | None) -> str | None:
    """An epoch time as the API writes it (``2022-06-20T12:55:20.268427Z``)."""
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _validate_job(body: Mapping[str, Any], state: _State) -> dict[str, Any] | Any:
    def bad(message: str) -> Any:
        return ibm_error(400, "1400", message)

    program_id = body.get("program_id")
    if program_id not in PROGRAM_IDS:
        return bad(f"'program_id' must be one of {', '.join(PROGRAM_IDS)}.")
    backend = body.get("backend")
    if not isinstance(backend, str) or not backend:
        return bad("'backend' is required.")
    if backend not in state.devices:
        return unknown_backend(backend)
    if not isinstance(body.get("params"), dict):
        return bad("'params' must be an object with the primitive input.")
    cost = body.get("cost")
    if cost is not None and (not isinstance(cost, int) or isinstance(cost, bool) or cost < 1):
        return bad("'cost' must be a positive integer (seconds).")
    session_id = body.get("session_id")
    if session_id is not None:
        state.settle_sessions()
        session = state.sessions.get(session_id)
        if session is None:
            return ibm_error(404, "1290", f"Session {session_id} not found.")
        if not session.is_open:
            return ibm_error(
                409, "1295", f"Session {session_id} is closed and does not accept jobs."
            )
        if session.backend != backend:
            return bad(f"Session {session_id} runs on {session.backend}, not {backend}.")
    return {
        "program_id": program_id,
        "backend": backend,
        "cost": cost,
        "session_id": session_id,
        "private": bool(body.get("private", False)),
        "tags": list(body.get("tags") or []),
    }


class ComputeServiceFake(IbmFakeServer):
    """The Quantum Compute Service fake with its own IAM; see the module docstring.

    ``devices`` maps backend names to emulator snapshots; ``execution_seconds`` delays every
    job (to observe ``Queued``/``Running`` or exceed a job's ``cost``); ``check_isa=False`` runs
    circuits that are not in the device's instruction set (the real service fails them).
    """

    RESOURCE_TYPE = "ibm-quantum-compute-service"

    def __init__(
        self,
        *,
        devices: Mapping[str, str] | None = None,
        execution_seconds: float = 0.0,
        check_isa: bool = True,
        apikey: str = DEFAULT_APIKEY,
        crn: str = DEFAULT_CRN,
        token_lifetime: float = 3600.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.state = _State(devices_from(devices, DEFAULT_DEVICES), execution_seconds, check_isa)
        super().__init__(
            partial(create_app, self.state),
            self.state.devices,
            apikey=apikey,
            crn=crn,
            token_lifetime=token_lifetime,
            host=host,
            port=port,
            name="ibm-qcs",
        )

    def close(self) -> None:
        """Stop the servers and the job worker."""
        self.stop()
        self.state.queue.close()

    @property
    def endpoint(self) -> str:
        """The API base URL (``{url}/api/v1``)."""
        return self.url + PREFIX

    def settings_for(self, prefix: str = "QRMI_IBM_QCS_") -> dict[str, str]:
        """The resource ``environment`` with ``prefix`` (``QRMI_IBM_QRS_`` for the legacy type)."""
        return {
            prefix + "ENDPOINT": self.endpoint,
            prefix + "IAM_ENDPOINT": self.iam.url,
            prefix + "IAM_APIKEY": self.apikey,
            prefix + "SERVICE_CRN": self.crn,
        }

    @property
    def settings(self) -> dict[str, str]:
        """The resource ``environment`` for ``qrmi_config.json`` (unprefixed keys)."""
        return self.settings_for()

    @property
    def queue(self) -> JobQueue:
        """The job queue (``hold()``/``resume()`` keep jobs queued)."""
        return self.state.queue

    def session(self, session_id: str) -> FakeSession | None:
        """A session by id."""
        self.state.settle_sessions()
        return self.state.sessions.get(session_id)

    @property
    def open_session_count(self) -> int:
        """Sessions that are not closed and still accept jobs."""
        self.state.settle_sessions()
        with self.state.lock:
            return sum(1 for session in self.state.sessions.values() if session.is_open)

    @property
    def deleted_jobs(self) -> set[str]:
        """Ids of jobs deleted through ``DELETE /jobs/{id}``."""
        return set(self.state.deleted)

    def submitted_params(self, job_id: str) -> Any:
        """The ``params`` a job was submitted with."""
        job = self.state.queue.get(job_id)
        return None if job is None else job.work


def serve(*, devices: Iterable[str] | None = None, **options: Any) -> ComputeServiceFake:
    """Factory for ``qrmi fake serve ibm-quantum-compute-service`` (``devices``: snapshots)."""
    return ComputeServiceFake(devices=devices_named(devices), **options)
