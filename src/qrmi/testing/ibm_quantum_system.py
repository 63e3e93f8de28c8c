"""A fake of the IBM Quantum System ("Direct Access") API, with IAM and S3 beside it.

:class:`QuantumSystemFake` is a :class:`~qrmi.testing.FakeServer` for the API that also runs
the IAM fake (:attr:`QuantumSystemFake.iam`) and moto's S3 (:attr:`QuantumSystemFake.s3`);
:attr:`QuantumSystemFake.settings` is the ``environment`` a ``qrmi_config.json`` entry needs.

Endpoints (all need ``Authorization: Bearer <IAM token>`` and ``Service-CRN``):

* ``GET /v1/backends`` -> ``{"backends": [{"name", "status", "message", "version", "locked"}]}``
* ``GET /v1/backends/{name}`` and ``.../configuration``, ``.../properties``, ``.../lanes``
* ``POST /v1/jobs`` -> 204. Body ``{"id", "backend", "program_id", "log_level"?, "timeout_secs",
  "storage": {"input"|"results"|"logs": {"type": "s3_compatible", "presigned_url"}}}``.
* ``GET /v1/jobs`` -> ``{"jobs": [...]}``; ``GET /v1/jobs/{id}``; ``POST /v1/jobs/{id}/cancel``
  -> 204; ``DELETE /v1/jobs/{id}`` -> 204 (only once the job is final).
* ``GET /version`` (no authentication).

Errors carry the service's codes (``errors[0].code``):

=====  ======  ==============================================================================
HTTP   code    when
=====  ======  ==============================================================================
404    1216    unknown backend
404    1291    unknown (or deleted) job
409    1231    ``POST /v1/jobs`` with the id of an existing job
409    1306    cancel of a job that is already final
409    1337    delete of a job that is not final
423    1233    the backend is reserved (:meth:`QuantumSystemFake.reserve`)
429    1232    every execution lane of the backend is taken ("lanes full")
=====  ======  ==============================================================================

**Lanes.** A backend has ``lanes`` execution lanes. By default a lane is taken by a job that
is ``Running``; with ``stored_jobs_hold_lanes=True`` every job the service still stores (final
or not) holds its lane until a client deletes it, as IBM's own Quantum System API simulator
counts them: clients must ``DELETE /v1/jobs/{id}`` finished jobs or new jobs get 429.

Accepted jobs are ``Running`` at once (the API has no queued state) and run in a background
thread: the fake reads the input through the presigned GET URL, checks that every circuit is
an ISA circuit of the device (basis gates, coupled qubits, qubit count; otherwise the job
fails with reason code 1517 and the service's "non-ISA circuits" message), runs it on the
emulator engine, and writes results and logs through the presigned PUT URLs, as the real
service does; then the job is ``Completed`` (``Failed`` with a reason code if the input was
bad).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Self

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from qrmi.errors import QrmiError
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
from qrmi.testing.s3 import S3Fake
from qrmi.testing.s3_light import LightS3

__all__ = ["QsJob", "QuantumSystemFake", "QuantumSystemFakeProcess", "serve"]

logger = logging.getLogger(__name__)

DEFAULT_DEVICES = {"ibm_perth": "fake_perth", "ibm_brisbane": "fake_brisbane"}
PROGRAM_IDS = ("estimator", "sampler")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
FINAL = ("Completed", "Failed", "Cancelled")


@dataclass
class QsJob:
    """One job as the fake stores it."""

    id: str
    backend: str
    program_id: str
    timeout_secs: int
    storage: dict[str, Any]
    log_level: str = "warning"
    status: str = "Running"
    created_time: str = field(default_factory=utc_now)
    end_time: str | None = None
    reason_code: int | None = None
    reason_message: str | None = None
    reason_solution: str | None = None
    quantum_nanoseconds: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The API's Job object."""
        body: dict[str, Any] = {
            "id": self.id,
            "backend": self.backend,
            "program_id": self.program_id,
            "status": self.status,
            "created_time": self.created_time,
            "log_level": self.log_level,
            "timeout_secs": self.timeout_secs,
            "storage": self.storage,
        }
        if self.end_time:
            body["end_time"] = self.end_time
        if self.reason_code is not None:
            body.update(
                reason_code=self.reason_code,
                reason_message=self.reason_message,
                reason_solution=self.reason_solution,
            )
        if self.quantum_nanoseconds is not None:
            body["usage"] = {"quantum_nanoseconds": self.quantum_nanoseconds}
        return body


class _State:
    """Backends and jobs of one fake; thread-safe."""

    def __init__(
        self,
        devices: dict[str, FakeDevice],
        lanes: int,
        execution_seconds: float,
        *,
        stored_jobs_hold_lanes: bool = False,
        check_isa: bool = True,
        reuse_results: bool = False,
    ):
        self.devices = devices
        self.lanes = lanes
        self.execution_seconds = execution_seconds
        self.stored_jobs_hold_lanes = stored_jobs_hold_lanes
        self.check_isa = check_isa
        self.reuse_results = reuse_results
        #: The light store the jobs reach in memory (``direct_store``), or None: over HTTP.
        self.direct_store: LightS3 | None = None
        #: Result texts by (backend, program, input), when ``reuse_results``.
        self.results: dict[tuple[str, str, str], str] = {}
        self.lock = threading.Lock()
        self.jobs: dict[str, QsJob] = {}
        self.deleted: set[str] = set()
        self.reserved: set[str] = set()
        self.lane_locks = {name: threading.Semaphore(lanes) for name in devices}
        #: Ids of the jobs holding a lane, by backend (kept so that a submission does not scan
        #: every stored job: clients that never delete theirs would make it ever slower).
        self.lane_holders: dict[str, set[str]] = {name: set() for name in devices}
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()

    def running_count(self, backend: str) -> int:
        with self.lock:
            return sum(
                1 for j in self.jobs.values() if j.backend == backend and j.status == "Running"
            )

    def lanes_taken(self, backend: str) -> int:
        """Lanes of ``backend`` in use (call with :attr:`lock` held)."""
        return len(self.lane_holders[backend])

    def finish(self, job: QsJob, status: str, **reason: Any) -> bool:
        """Move ``job`` to a final ``status`` unless it already is final; True if moved."""
        with self.lock:
            if job.status in FINAL:
                return False
            job.status = status
            job.end_time = utc_now()
            if not self.stored_jobs_hold_lanes:
                self.lane_holders[job.backend].discard(job.id)
            for key, value in reason.items():
                setattr(job, key, value)
            return True


def _backend_json(device: FakeDevice, reserved: bool) -> dict[str, Any]:
    return {
        "name": device.name,
        "status": device.status,
        "message": device.message,
        "version": device.version,
        "locked": reserved,
    }


def create_app(state: _State, issuer: Any, crn: str) -> Any:
    """The Quantum System API as a FastAPI app over ``state``."""
    app = FastAPI(
        title="fake IBM Quantum System API", openapi_url=None, docs_url=None, redoc_url=None
    )

    def guard(request: Request) -> Any | None:
        return check_request(request, issuer, crn)

    def device_or_404(name: str) -> FakeDevice | Any:
        device = state.devices.get(name)
        if device is None:
            return unknown_backend(name)
        return device

    @app.get("/version")
    async def version() -> Any:
        return {"version": "0.1.0-fake"}

    @app.get("/v1/backends")
    async def backends(request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        return {
            "backends": [_backend_json(d, d.name in state.reserved) for d in state.devices.values()]
        }

    @app.get("/v1/backends/{name}")
    async def backend(name: str, request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        device = device_or_404(name)
        if not isinstance(device, FakeDevice):
            return device
        return _backend_json(device, name in state.reserved)

    @app.get("/v1/backends/{name}/configuration")
    async def configuration(name: str, request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        device = device_or_404(name)
        return device.description()[0] if isinstance(device, FakeDevice) else device

    @app.get("/v1/backends/{name}/properties")
    async def properties(name: str, request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        device = device_or_404(name)
        return device.description()[1] if isinstance(device, FakeDevice) else device

    @app.get("/v1/backends/{name}/lanes")
    async def lanes(name: str, request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        device = device_or_404(name)
        if not isinstance(device, FakeDevice):
            return device
        return {"hpc_workload_manager": {"lanes": state.lanes}, "ibm_quantum_compute": {"lanes": 1}}

    async def create_job(request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        body, error = await json_body(request)
        if error is not None:
            return error
        assert body is not None
        job, error = _validate_job(body, state)
        if error is not None:
            return error
        assert job is not None
        if job.backend in state.reserved:
            return ibm_error(
                423,
                "1233",
                "The requested backend is currently reserved and cannot run jobs outside of "
                "the reservation.",
            )
        with state.lock:
            if job.id in state.jobs or job.id in state.deleted:
                return ibm_error(
                    409, "1231", f"Job with duplicate id already exists. Job ID: {job.id}"
                )
            if state.lanes_taken(job.backend) >= state.lanes:
                return ibm_error(
                    429,
                    "1232",
                    "The maximum number of execution lanes for backend "
                    f"{job.backend} has been reached.",
                )
            state.jobs[job.id] = job
            state.lane_holders[job.backend].add(job.id)
        thread = threading.Thread(
            target=_execute, args=(state, job), name=f"qs-job-{job.id[:8]}", daemon=True
        )
        state.threads.append(thread)
        thread.start()
        return Response(status_code=204)

    @app.get("/v1/jobs")
    async def list_jobs(request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        with state.lock:
            return {"jobs": [job.to_json() for job in state.jobs.values()]}

    async def get_job(job_id: str, request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        with state.lock:
            job = state.jobs.get(job_id)
            return JSONResponse(job.to_json()) if job else _job_not_found(job_id)

    @app.post("/v1/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str, request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        job = state.jobs.get(job_id)
        if job is None:
            return _job_not_found(job_id)
        if not state.finish(job, "Cancelled"):
            return ibm_error(409, "1306", f"Job is not cancellable. Job ID: {job_id}.")
        job.cancel.set()
        return Response(status_code=204)

    async def delete_job(job_id: str, request: Request) -> Any:
        if (error := guard(request)) is not None:
            return error
        with state.lock:
            job = state.jobs.get(job_id)
            if job is None:
                return _job_not_found(job_id)
            if job.status not in FINAL:
                return ibm_error(
                    409,
                    "1337",
                    f"Deleting a job in a non-terminal state is not possible. Job ID: {job_id}.",
                )
            del state.jobs[job_id]
            state.deleted.add(job_id)
            state.lane_holders[job.backend].discard(job_id)
        return Response(status_code=204)

    app.post("/v1/jobs")(create_job)
    app.get("/v1/jobs/{job_id}")(get_job)
    app.delete("/v1/jobs/{job_id}")(delete_job)
    return _JobRoutes(app, create_job, get_job, delete_job)


class _JobRoutes:
    """The routes of a job's life (submit, poll, delete), answered before FastAPI's middleware,
    routing and dependency solving, which cost about as much CPU again as the handlers; the same
    handlers give the same responses. Every other request goes to the FastAPI app."""

    def __init__(self, app: Any, create_job: Any, get_job: Any, delete_job: Any) -> None:
        self.app = app
        self.create_job = create_job
        self.get_job = get_job
        self.delete_job = delete_job

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        handler = self._handler(scope) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    def _handler(self, scope: Any) -> Any | None:
        """The handler of this request as FastAPI would route it (``{job_id}``: one non-empty
        path segment), or ``None``."""
        method, path = scope["method"], scope["path"]
        if path == "/v1/jobs":
            return self.create_job if method == "POST" else None
        job_id = path[len("/v1/jobs/") :] if path.startswith("/v1/jobs/") else ""
        if not job_id or "/" in job_id:
            return None
        if method == "GET":
            return partial(self.get_job, job_id)
        if method == "DELETE":
            return partial(self.delete_job, job_id)
        return None


def _job_not_found(job_id: str) -> Any:
    return ibm_error(404, "1291", f"Job not found. Job ID: {job_id}.")


def _validate_job(body: Mapping[str, Any], state: _State) -> tuple[QsJob | None, Any | None]:
    def bad(message: str) -> tuple[None, Any]:
        return None, ibm_error(400, "1400", message)

    job_id = body.get("id")
    try:
        uuid.UUID(str(job_id))
    except ValueError:
        return bad("'id' must be a UUID chosen by the client.")
    backend = body.get("backend")
    if not isinstance(backend, str) or not backend:
        return bad("'backend' is required.")
    if backend not in state.devices:
        return None, unknown_backend(backend)
    program_id = body.get("program_id")
    if program_id not in PROGRAM_IDS:
        return bad(f"'program_id' must be one of {', '.join(PROGRAM_IDS)}.")
    timeout = body.get("timeout_secs")
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
        return bad("'timeout_secs' must be a positive integer.")
    log_level = body.get("log_level", "warning")
    if log_level not in LOG_LEVELS:
        return bad(f"'log_level' must be one of {', '.join(LOG_LEVELS)}.")
    storage = body.get("storage")
    if not isinstance(storage, dict):
        return bad("'storage' is required.")
    for part in ("input", "results", "logs"):
        location = storage.get(part)
        if (
            not isinstance(location, dict)
            or location.get("type") != "s3_compatible"
            or not str(location.get("presigned_url", "")).startswith(("http://", "https://"))
        ):
            return bad(
                f'\'storage.{part}\' must be {{"type": "s3_compatible", "presigned_url": URL}}.'
            )
    return (
        QsJob(str(job_id), backend, program_id, timeout, storage, log_level=log_level),
        None,
    )


def _execute(state: _State, job: QsJob) -> None:
    """Run ``job`` in a lane; write its results and logs through the presigned URLs, then
    make it final (logs are in place before anyone sees the final status)."""
    lane = state.lane_locks[job.backend]
    log = [f"{utc_now()} job {job.id} accepted for {job.backend}"]
    while not lane.acquire(timeout=0.05):
        if job.cancel.is_set() or state.stopping.is_set():
            return
    try:
        outcome = _outcome(job, state, log)
    finally:
        lane.release()
    if outcome is None or job.cancel.is_set():
        log.append(f"{utc_now()} job cancelled")
        _write_logs(state, job, log)
        return
    status, details = outcome
    log.append(f"{utc_now()} job {status.lower()}")
    _write_logs(state, job, log)
    state.finish(job, status, **details)


def _outcome(job: QsJob, state: _State, log: list[str]) -> tuple[str, dict[str, Any]] | None:
    """``(final status, job fields)``, or ``None`` when the job was cancelled meanwhile."""
    started = time.perf_counter()
    params = _read_input(state, job, log)
    if isinstance(params, tuple):
        return params
    if state.check_isa and (problem := isa_violation(params, state.devices[job.backend])):
        log.append(f"{utc_now()} failed: non-ISA circuits")
        return _failed(
            1517,
            f"Circuits do not match the target definition (non-ISA circuits). {problem}",
            "Transpile the circuits for the backend (e.g. with a preset pass manager) and "
            "apply the layout to the observables, then submit again.",
        )
    seconds = requested_seconds(params, state.execution_seconds)
    if job.cancel.wait(seconds) or state.stopping.is_set():
        return None
    log.append(f"{utc_now()} running {job.program_id} on {job.backend}")
    try:
        result = _result(job, params, state)
    except QrmiError as exc:
        log.append(f"{utc_now()} failed: {exc}")
        return _failed(1517, str(exc), "fix the primitive input and submit again")
    if job.cancel.is_set():
        return None
    results_url = job.storage["results"]["presigned_url"]
    if _transfer(state, "PUT", results_url, result.encode()) is None:
        return _failed(1510, "could not store the results", "check the results presigned URL")
    return "Completed", {"quantum_nanoseconds": _nanoseconds(started)}


def _result(job: QsJob, params: dict[str, Any], state: _State) -> str:
    """The result text of ``job``: simulated, or with ``reuse_results`` the one an earlier job
    with the same backend, program and input got."""
    if not state.reuse_results:
        return execute_primitive(job.program_id, params, state.devices[job.backend])
    key = (job.backend, job.program_id, json.dumps(params, sort_keys=True))
    with state.lock:
        known = state.results.get(key)
    if known is None:
        known = execute_primitive(job.program_id, params, state.devices[job.backend])
        with state.lock:
            if len(state.results) >= _RESULTS_KEPT:
                state.results.clear()
            state.results[key] = known
    return known


#: How many results ``reuse_results`` keeps before it forgets them all.
_RESULTS_KEPT = 64


def _failed(code: int, message: str, solution: str) -> tuple[str, dict[str, Any]]:
    return "Failed", {
        "reason_code": code,
        "reason_message": message,
        "reason_solution": solution,
    }


def _nanoseconds(started: float) -> int:
    return int((time.perf_counter() - started) * 1e9)


def _read_input(
    state: _State, job: QsJob, log: list[str]
) -> dict[str, Any] | tuple[str, dict[str, Any]]:
    """The job's input, or the ``Failed`` outcome when it cannot be read."""
    try:
        data = _transfer(state, "GET", job.storage["input"]["presigned_url"])
        if data is None:
            raise ValueError("the presigned GET failed")
        params = json.loads(data)
        if not isinstance(params, dict):
            raise ValueError("input is not a JSON object")
    except ValueError as exc:
        log.append(f"{utc_now()} failed to read input: {type(exc).__name__}")
        return _failed(
            1501,
            f"could not read the input: {type(exc).__name__}",
            "check the input presigned URL and that the input is a JSON object",
        )
    return params


def _write_logs(state: _State, job: QsJob, lines: list[str]) -> None:
    logs_url = job.storage["logs"]["presigned_url"]
    if _transfer(state, "PUT", logs_url, "\n".join(lines).encode()) is None:
        logger.warning("fake QS could not write the logs of job %s", job.id)


def _transfer(state: _State, method: str, url: str, body: bytes | None = None) -> bytes | None:
    """A presigned-URL request (urllib: it logs nothing, so signatures stay out of logs);
    the response body, or ``None`` on failure. With a direct store, a URL of that store is
    served in memory."""
    if state.direct_store is not None and state.direct_store.serves(url):
        return state.direct_store.transfer(method, url, body)
    headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data: bytes = response.read()
            return data
    except (OSError, ValueError):
        return None


class QuantumSystemFake(IbmFakeServer):
    """The Quantum System API fake with its own IAM and S3; see the module docstring.

    ``devices`` maps backend names to emulator snapshots (``{"ibm_perth": "fake_perth"}``);
    ``lanes`` is the number of execution lanes per backend; ``execution_seconds`` delays every
    job (to observe ``Running``). ``stored_jobs_hold_lanes`` makes every stored job (final or
    not) hold a lane until it is deleted; ``check_isa=False`` runs circuits that are not in the
    device's instruction set (the real service fails them). ``s3_own_process=True`` runs the
    S3 store in a child process (:class:`~qrmi.testing.s3.S3Fake`), so that it does not share
    this process's GIL with the API and the jobs; ``light_s3=True`` serves the bucket from
    :class:`~qrmi.testing.s3_light.LightS3` instead of moto (the benchmarks use it: on moto
    the store, not the clients, sets the pace); ``http="httptools"`` serves the API and the
    light store with uvicorn's C parser instead of h11 (less CPU per request).
    :class:`QuantumSystemFakeProcess` runs this fake in a child process.
    """

    RESOURCE_TYPE = "ibm-quantum-system"

    def __init__(
        self,
        *,
        devices: Mapping[str, str] | None = None,
        lanes: int = 2,
        execution_seconds: float = 0.0,
        stored_jobs_hold_lanes: bool = False,
        check_isa: bool = True,
        apikey: str = DEFAULT_APIKEY,
        crn: str = DEFAULT_CRN,
        token_lifetime: float = 3600.0,
        host: str = "127.0.0.1",
        port: int = 0,
        s3_own_process: bool = False,
        light_s3: bool = False,
        http: str = "h11",
        reuse_results: bool = False,
        direct_store: bool = False,
    ) -> None:
        self.s3: S3Fake | LightS3 = (
            LightS3(host=host, http=http)
            if light_s3
            else S3Fake(host=host, own_process=s3_own_process)
        )
        self.state = _State(
            devices_from(devices, DEFAULT_DEVICES),
            lanes,
            execution_seconds,
            stored_jobs_hold_lanes=stored_jobs_hold_lanes,
            check_isa=check_isa,
            reuse_results=reuse_results,
        )
        if direct_store and isinstance(self.s3, LightS3):
            self.state.direct_store = self.s3
        super().__init__(
            partial(create_app, self.state),
            self.state.devices,
            apikey=apikey,
            crn=crn,
            token_lifetime=token_lifetime,
            host=host,
            port=port,
            name="ibm-qs",
            http=http,
        )

    def start(self) -> Self:
        """Start S3, IAM and the API."""
        self.s3.start()
        return super().start()

    def stop(self) -> None:
        """Stop the API, IAM and S3, and let running jobs end."""
        self.state.stopping.set()
        super().stop()
        self.s3.stop()
        self.state.stopping.clear()

    @property
    def settings(self) -> dict[str, str]:
        """The resource ``environment`` for ``qrmi_config.json`` (unprefixed keys)."""
        return {
            "QRMI_IBM_QS_ENDPOINT": self.url,
            "QRMI_IBM_QS_IAM_ENDPOINT": self.iam.url,
            "QRMI_IBM_QS_IAM_APIKEY": self.apikey,
            "QRMI_IBM_QS_SERVICE_CRN": self.crn,
            "QRMI_IBM_QS_AWS_ACCESS_KEY_ID": self.s3.access_key_id,
            "QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY": self.s3.secret_access_key,
            "QRMI_IBM_QS_S3_ENDPOINT": self.s3.url,
            "QRMI_IBM_QS_S3_BUCKET": self.s3.bucket,
            "QRMI_IBM_QS_S3_REGION": self.s3.region,
            "QRMI_JOB_TIMEOUT_SECONDS": "600",
        }

    def reserve(self, backend: str, reserved: bool = True) -> None:
        """While reserved, ``POST /v1/jobs`` for ``backend`` answers 423."""
        if reserved:
            self.state.reserved.add(backend)
        else:
            self.state.reserved.discard(backend)

    def job(self, job_id: str) -> QsJob | None:
        """The stored job, or ``None`` (unknown or deleted)."""
        with self.state.lock:
            return self.state.jobs.get(job_id)

    @property
    def deleted_jobs(self) -> set[str]:
        """Ids of the jobs deleted through ``DELETE /v1/jobs/{id}``."""
        with self.state.lock:
            return set(self.state.deleted)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every job thread has ended (raises TimeoutError at ``timeout``)."""
        deadline = time.monotonic() + timeout
        for thread in list(self.state.threads):
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise TimeoutError(
                    f"fake QS job thread {thread.name} still running after {timeout} s"
                )


# Run by the child of QuantumSystemFakeProcess: serve, say where, stop when stdin closes.
_CHILD = """
import json, sys
from qrmi.testing.ibm_quantum_system import QuantumSystemFake
fake = QuantumSystemFake(**json.loads(sys.argv[1])).start()
print(json.dumps({"settings": fake.settings, "url": fake.url}), flush=True)
sys.stdin.read()
fake.stop()
"""

#: Environment of the child: OpenMP threads that wait for work sleep instead of spinning. Aer
#: (libgomp) spins by default, which cost about 14 ms of CPU per Bell job on 2 cores, four times
#: the simulation itself. It has to be set before libgomp loads, hence a process of its own.
_CHILD_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}


class QuantumSystemFakeProcess:
    """A :class:`QuantumSystemFake` (API, IAM, S3, jobs) in a child process of its own.

    ``options`` are :class:`QuantumSystemFake`'s keyword arguments (JSON values). The child has
    its own interpreter and GIL, so a load test's fake does not share a core's worth of Python
    with the process that drives it, its CPU can be measured apart (:meth:`cpu_seconds`), and
    Aer's OpenMP threads sleep when idle (``OMP_WAIT_POLICY=PASSIVE`` unless the environment
    sets it). Tests that inspect the fake's state use :class:`QuantumSystemFake` itself. The
    child ends when this object stops or its parent exits (it reads stdin until EOF).
    """

    def __init__(self, **options: Any) -> None:
        self.options = options
        self._child: subprocess.Popen[str] | None = None
        self._started: dict[str, Any] = {}

    def start(self) -> Self:
        """Start the child and wait until it serves (raises RuntimeError if it fails)."""
        if self._child is not None:
            return self
        environment = {**_CHILD_ENVIRONMENT, **os.environ}
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(self.options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=environment,
        )
        assert child.stdout is not None
        line = child.stdout.readline()
        try:
            self._started = json.loads(line)
        except ValueError:
            child.kill()
            child.wait(timeout=15)
            raise RuntimeError(
                f"the IBM Quantum System fake did not start in a child process ({line!r}); "
                "see its stderr above"
            ) from None
        self._child = child
        return self

    @property
    def pid(self) -> int:
        """The child's process id."""
        if self._child is None:
            raise RuntimeError("QuantumSystemFakeProcess is not running: call start() first.")
        return self._child.pid

    @property
    def url(self) -> str:
        """The API's ``http://host:port``."""
        self.pid  # noqa: B018 - raises when not started
        return str(self._started["url"])

    @property
    def settings(self) -> dict[str, str]:
        """The resource ``environment`` (as :attr:`QuantumSystemFake.settings`)."""
        self.pid  # noqa: B018 - raises when not started
        return dict(self._started["settings"])

    def cpu_seconds(self) -> float:
        """User + system CPU the child has used so far, all its threads (Linux ``/proc``)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Stop the child (closing its stdin; killed if it does not exit); no-op if stopped."""
        child, self._child = self._child, None
        if child is None:
            return
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=15)
        child.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(*, devices: Iterable[str] | None = None, **options: Any) -> QuantumSystemFake:
    """Factory for ``qrmi fake serve ibm-quantum-system`` (``devices``: snapshot names)."""
    return QuantumSystemFake(devices=devices_named(devices), **options)
