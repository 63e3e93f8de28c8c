"""A fake Pasqal "Warden" (the on-prem QPU scheduler) with real MUNGE authentication.

Every route but ``GET /accessible`` needs an ``x-munge-cred`` header holding a MUNGE
credential that the fake decodes with libmunge against *its own* ``munged`` (a private
:class:`~qrmi.testing.munge.MungeDaemon` unless ``munge_socket`` names one): a missing,
forged, expired or replayed credential gets 401, and a uid outside ``allowed_uids`` gets 403.
A session (``POST /sessions``) belongs to the uid that opened it and must name that uid as
``user_id``; jobs are created inside an open session (``X-Warden-Session`` header) and are
visible to their owner only. Closing a session cancels its unfinished jobs.

Execution: the sequence (Pulser abstract representation) runs on ``pulser-simulation``'s
``QutipBackendV2`` when its register has at most
:data:`~qrmi.testing.pasqal_cloud.MAX_SIMULATED_ATOMS` atoms, otherwise it gets uniformly
random counts of the right shape; ``results`` is the JSON text ``{"counter": {...}}``.
``seconds_per_run`` emulates QPU time (a job of N shots stays ``RUNNING`` N x that long).
Importing this module imports FastAPI.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from qrmi.backends._munge import Munge, MungeError, MungeIdentity
from qrmi.testing._jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, FakeJob, JobQueue
from qrmi.testing.munge import MungeDaemon
from qrmi.testing.pasqal_cloud import device_specs, run_pulser_sequence
from qrmi.testing.server import FakeServer

__all__ = ["PasqalWardenFake", "pasqal_warden_server"]

_STATUS = {
    QUEUED: "PENDING",
    RUNNING: "RUNNING",
    DONE: "DONE",
    FAILED: "ERROR",
    CANCELLED: "CANCELED",
}


class PasqalWardenFake(FakeServer):
    """The fake Warden; see the module docstring.

    Tests use :attr:`sessions` (id -> ``{"user_id", "slurm_job_id", "open"}``), :attr:`jobs`
    (the job queue), :attr:`accessible` and :meth:`settings`.
    """

    def __init__(
        self,
        *,
        munge_socket: str | None = None,
        allowed_uids: Iterable[int] | None = None,
        device_type: str = "FRESNEL",
        delay: float = 0.0,
        seconds_per_run: float = 0.0,
        seed: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._own_munge: MungeDaemon | None = None
        self._munge_socket = munge_socket
        self.allowed_uids = None if allowed_uids is None else set(allowed_uids)
        self.device_type = device_type
        self.seed = seed
        self.accessible = True
        self.sessions: dict[str, dict[str, Any]] = {}
        self.seconds_per_run = seconds_per_run
        self.jobs = JobQueue(
            self._execute, delay=delay, duration=lambda job: job.work["shots"] * seconds_per_run
        )
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        super().__init__(self._build_app(), host=host, port=port, name="pasqal-warden")

    @property
    def munge_socket(self) -> str:
        """The socket of the ``munged`` that checks credentials."""
        if self._munge_socket is None:
            raise RuntimeError("the fake Warden has no munged yet: call start() first")
        return self._munge_socket

    def start(self) -> PasqalWardenFake:
        """Start a private ``munged`` if none was given, then serve."""
        if self._munge_socket is None:
            self._own_munge = MungeDaemon().start()
            self._munge_socket = self._own_munge.socket
        super().start()
        return self

    def stop(self) -> None:
        """Stop serving, and the private ``munged`` if this fake started one."""
        super().stop()
        if self._own_munge is not None:
            self._own_munge.stop()
            self._own_munge = None
            self._munge_socket = None

    def settings(
        self, *, job_id: str = "1234", uid: int | None = None, **extra: str
    ) -> dict[str, str]:
        """Settings for a ``pasqal-local`` resource using this fake (``from_config`` keys)."""
        values = {
            "QRMI_WARDEN_URL": self.url,
            "QRMI_MUNGE_SOCKET": self.munge_socket,
            "QRMI_WARDEN_HTTP_TIMEOUT": "10",
            "QRMI_WARDEN_RETRY_DEADLINE": "20",
            "QRMI_JOB_ID": job_id,
            "QRMI_JOB_UID": str(os.getuid() if uid is None else uid),
        }
        values.update(extra)
        return values

    def resource_config(self, name: str = "pasqal_onprem") -> dict[str, Any]:
        """A ``qrmi_config.json`` resource entry (``QRMI_JOB_ID``/``UID`` come from the job)."""
        environment = self.settings()
        for key in ("QRMI_JOB_ID", "QRMI_JOB_UID"):
            environment.pop(key)
        return {"name": name, "type": "pasqal-local", "environment": environment}

    # -- authentication ----------------------------------------------------------------------

    def _identify(self, request: Request) -> tuple[MungeIdentity | None, JSONResponse | None]:
        credential = request.headers.get("x-munge-cred")
        if not credential:
            return None, _error(401, "missing x-munge-cred header (a MUNGE credential)")
        try:
            identity = Munge(self.munge_socket).decode(credential)
        except MungeError as exc:
            return None, _error(401, f"invalid MUNGE credential: {exc}")
        if self.allowed_uids is not None and identity.uid not in self.allowed_uids:
            return None, _error(403, f"uid {identity.uid} is not allowed to use this QPU")
        return identity, None

    # -- jobs --------------------------------------------------------------------------------

    def _execute(self, job: FakeJob) -> str:
        counts = run_pulser_sequence(job.work["sequence"], job.work["shots"], seed=self.seed)
        return json.dumps({"counter": counts})

    def job_view(self, job: FakeJob) -> dict[str, Any]:
        """The Warden's JobResponse for ``job``."""
        return {
            "id": int(job.id),
            "user_id": job.data["user_id"],
            "session_id": job.data["session_id"],
            "status": _STATUS[job.state],
            "results": job.result if job.state == DONE else None,
        }

    def _callers_job(self, request: Request, job_id: str) -> FakeJob | JSONResponse:
        """The caller's job ``job_id``, or the error response (not authenticated, unknown job,
        or another user's: a 404 alike, so job ids of others stay hidden)."""
        identity, denied = self._identify(request)
        if identity is None:
            return denied or _error(401, "unauthenticated")
        job = self.jobs.get(job_id)
        if job is None or job.data["user_id"] != str(identity.uid):
            return _error(404, f"job {job_id} not found")
        return job

    # -- the ASGI app ------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake Pasqal Warden")

        @app.get("/accessible")
        async def accessible() -> JSONResponse:
            message = "QPU is accessible" if self.accessible else "QPU is under maintenance"
            return JSONResponse({"is_accessible": self.accessible, "message": message})

        @app.post("/sessions")
        async def open_session(request: Request) -> JSONResponse:
            identity, denied = self._identify(request)
            if identity is None:
                return denied or _error(401, "unauthenticated")
            body = await _body(request)
            if (
                not isinstance(body, dict)
                or not body.get("user_id")
                or not body.get("slurm_job_id")
            ):
                return _error(422, "user_id and slurm_job_id are required")
            if str(body["user_id"]) != str(identity.uid):
                return _error(403, "user_id does not match the MUNGE credential's uid")
            session_id = f"session-{next(self._ids)}-{int(time.time() * 1000) % 100000}"
            with self._lock:
                self.sessions[session_id] = {
                    "user_id": str(identity.uid),
                    "slurm_job_id": str(body["slurm_job_id"]),
                    "open": True,
                }
            return JSONResponse({"id": session_id, **self.sessions[session_id]})

        @app.delete("/sessions/{session_id}")
        async def close_session(session_id: str, request: Request) -> JSONResponse:
            identity, denied = self._identify(request)
            if identity is None:
                return denied or _error(401, "unauthenticated")
            session = self.sessions.get(session_id)
            if session is None or not session["open"]:
                return _error(404, f"session {session_id} not found")
            if session["user_id"] != str(identity.uid):
                return _error(403, "this session belongs to another user")
            session["open"] = False
            for job in self.jobs.jobs():
                if job.data["session_id"] == session_id:
                    self.jobs.cancel(job.id)
            return JSONResponse({"id": session_id})

        @app.post("/jobs")
        async def create_job(request: Request) -> JSONResponse:
            identity, denied = self._identify(request)
            if identity is None:
                return denied or _error(401, "unauthenticated")
            session_id = request.headers.get("x-warden-session", "")
            session = self.sessions.get(session_id)
            if session is None or not session["open"]:
                return _error(403, f"no open session {session_id!r}; open one first")
            if session["user_id"] != str(identity.uid):
                return _error(403, "this session belongs to another user")
            body = await _body(request)
            problem = _job_problem(body)
            if problem:
                return _error(422, problem)
            job = self.jobs.submit(
                {"sequence": body["sequence"], "shots": body["shots"]},
                job_id=str(next(self._ids)),
                user_id=str(identity.uid),
                session_id=session_id,
            )
            return JSONResponse(self.job_view(job))

        @app.get("/jobs/{job_id}")
        async def get_job(job_id: str, request: Request) -> JSONResponse:
            job = self._callers_job(request, job_id)
            if isinstance(job, JSONResponse):
                return job
            return JSONResponse(self.job_view(job))

        @app.post("/jobs/{job_id}/cancel")
        async def cancel_job(job_id: str, request: Request) -> JSONResponse:
            job = self._callers_job(request, job_id)
            if isinstance(job, JSONResponse):
                return job
            self.jobs.cancel(job_id)
            return JSONResponse(self.job_view(job))

        @app.get("/jobs/{job_id}/logs")
        async def job_logs(job_id: str, request: Request) -> JSONResponse:
            job = self._callers_job(request, job_id)
            if isinstance(job, JSONResponse):
                return job
            lines = [f"job {job.id}: {_STATUS[job.state]}"]
            if job.error:
                lines.append(f"error: {job.error}")
            return JSONResponse({"logs": "\n".join(lines)})

        @app.get("/qpu/specs")
        async def specs(request: Request) -> JSONResponse:
            identity, denied = self._identify(request)
            if identity is None:
                return denied or _error(401, "unauthenticated")
            return JSONResponse({"specs": device_specs(self.device_type)})

        return app


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


async def _body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        return None


def _job_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object with 'sequence' and 'shots'"
    if not isinstance(body.get("sequence"), str):
        return "'sequence' (the Pulser abstract representation as text) is required"
    shots = body.get("shots")
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        return "'shots' must be a positive integer"
    try:
        json.loads(body["sequence"])
    except ValueError:
        return "'sequence' is not valid JSON"
    return None


def pasqal_warden_server(**options: Any) -> PasqalWardenFake:
    """Factory for ``qrmi fake serve pasqal-local`` (options: see :class:`PasqalWardenFake`)."""
    return PasqalWardenFake(**options)
