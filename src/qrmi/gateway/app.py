"""The gateway's HTTP/JSON API (FastAPI; the OpenAPI description is served at
``/openapi.json`` and rendered at ``/docs``).

Routes, all under ``/v1``:

* ``GET /health``: no authentication.
* ``POST /jobs``, ``DELETE /jobs/{job_id}``: root's MUNGE credential (the Slurm helper).
* ``/qpus/...``: the QRMI calls, with the job's token (``Authorization: Bearer``).
* ``/admin/...``: root's MUNGE credential or an admin token.

Outside ``/v1``: ``GET /metrics`` (Prometheus; root's MUNGE credential or an admin token) and the
admin page ``/admin`` (an admin token, through a login form and a session cookie).

Errors are always ``{"error": {"type", "message"}}`` with a status from
:data:`qrmi.gateway.wire.ERROR_STATUS`; never a traceback. Bodies larger than
``max_body_bytes`` get 413 without being read; a client slower than ``body_timeout`` seconds
between two body chunks gets 408.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures at run time, and
# they use the local aliases Job and Admin.
import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from qrmi._version import __version__
from qrmi.backends.base import poll_intervals
from qrmi.errors import QrmiError
from qrmi.gateway import admin_page
from qrmi.gateway.auth import (
    AuthError,
    MungeVerifier,
    bearer_token,
    body_digest,
    is_admin_token,
)
from qrmi.gateway.fast_routes import FastRoutes, error_answer
from qrmi.gateway.metrics import ErrorCounter, QpuState, StatusBoard, exposition
from qrmi.gateway.service import GatewayError, GatewayService
from qrmi.gateway.store import JobRecord
from qrmi.gateway.wire import ERROR_STATUS, error_body, payload_from_json
from qrmi.log import redact

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]

logger = logging.getLogger("qrmi.gateway")
access_logger = logging.getLogger("qrmi.gateway.access")

#: Largest request body accepted by default (payloads of big circuit batches fit).
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
#: Longest long-poll wait the gateway holds a request for.
MAX_WAIT_SECONDS = 60.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# ----- request and answer bodies ---------------------------------------------------------------


class StartJobRequest(BaseModel):
    """Acquire the job's QPUs and mint its token."""

    job_id: str = Field(description="Slurm job id, e.g. 1234 or 1234_5")
    uid: int = Field(description="numeric uid of the job's user")
    qpus: list[str] = Field(description="QPU names, in the job's --qpu order")
    time_limit: int | None = Field(
        default=None, description="job time limit in seconds; null or 0 for none"
    )
    user: str | None = Field(default=None, description="the job's user name, for accounting")
    account: str | None = Field(default=None, description="the job's Slurm account")
    partition: str | None = Field(default=None, description="the job's Slurm partition")
    reservation: str | None = Field(
        default=None,
        description="the Slurm reservation the job runs in (a dedicated window of a QPU gets "
        "the vendor's exclusive mode)",
    )
    run_id: str | None = Field(
        default=None,
        description="the run's identity (the job's Slurm start time): a start with a new one "
        "is the next run of a requeued job",
    )


class FinishJobRequest(BaseModel):
    """End one run of the job (optional body)."""

    run_id: str | None = Field(
        default=None, description="end only this run; an earlier run's end leaves a later one"
    )


class StartJobAnswer(BaseModel):
    job_id: str
    token: str = Field(description="the job token; shown once, stored only hashed")
    expires: float | None = Field(description="Unix time the token expires, null: never")
    variables: dict[str, str] = Field(description="variables for the job's environment")


class FinishJobAnswer(BaseModel):
    job_id: str
    already_finished: bool
    cancelled_tasks: list[str]
    released: list[str]
    usage: dict[str, int | float] = Field(
        default_factory=dict,
        description="the job's recorded tasks (``tasks``) and their QPU seconds (``qpu_seconds``)",
    )


class TaskStartRequest(BaseModel):
    payload: dict[str, Any] = Field(
        description='{"variant": "QiskitPrimitive", "input": "...", "program_id": "sampler"}'
    )


class ReleaseRequest(BaseModel):
    acquisition_token: str


class PauseRequest(BaseModel):
    reason: str = ""


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorAnswer(BaseModel):
    error: ErrorDetail


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorAnswer} for status in (400, 401, 403, 404, 409, 413, 423, 502)
}


# ----- the application -------------------------------------------------------------------------


def create_app(
    service: GatewayService,
    *,
    munge_socket: str | None = None,
    admin_hashes: frozenset[str] = frozenset(),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout: float = 30.0,
    reap_interval: float = 30.0,
    fast_routes: bool = True,
) -> ASGIApp:
    """The gateway application over ``service``.

    With ``fast_routes`` (the default) the polling calls skip FastAPI's per-request machinery
    (:mod:`qrmi.gateway.fast_routes`); without, every route goes through FastAPI, the reference
    the fast routes are checked and measured against.
    """
    verifier = MungeVerifier(munge_socket, service.store.use_credential, service.clock)
    app = FastAPI(
        title="QRMI gateway",
        version=__version__,
        description="QRMI over HTTP/JSON: jobs reach their QPUs with a job-scoped token; "
        "vendor credentials stay on the gateway host.",
        lifespan=_lifespan(service, reap_interval),
        responses=_ERRORS,
    )
    _install_error_handlers(app)
    _add_job_routes(app, service, verifier)
    _add_qpu_routes(app, service)
    _add_admin_routes(app, service, verifier, admin_hashes)
    _add_quota_routes(app, service, verifier, admin_hashes)
    _add_readiness_route(app, service, verifier, admin_hashes)
    _add_observability_routes(app, service, verifier, admin_hashes)
    routes: ASGIApp = FastRoutes(app, service) if fast_routes else app
    guarded = _Guard(routes, max_body_bytes=max_body_bytes, body_timeout=body_timeout)
    return ErrorCounter(guarded, service.metrics)


def _lifespan(service: GatewayService, reap_interval: float) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        # Every QRMI call blocks a worker thread while the vendor answers: allow many at once.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 256
        stop = threading.Event()
        reaper = threading.Thread(
            target=_reap_forever, args=(service, stop, reap_interval), daemon=True
        )
        reaper.start()
        service.dispatcher.start()  # tasks a previous gateway left waiting go on
        logger.info("gateway serving %d QPU(s)", len(service.config.resource_map))
        try:
            yield
        finally:
            stop.set()
            service.dispatcher.stop()

    return lifespan


def _reap_forever(service: GatewayService, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        try:
            ended = service.reap_expired()
        except Exception as exc:  # the reaper must outlive a bad round
            logger.warning("expired-job sweep failed: %s", redact(str(exc)))
            continue
        if ended:
            logger.info("ended expired job(s) %s", ", ".join(ended))


#: The answer to anything unexpected (its details go to the log only).
_INTERNAL_ERROR = ("InternalError", "the gateway failed unexpectedly; see its log")


def _error(kind: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(kind, message), status_code=ERROR_STATUS.get(kind, 502))


def _install_error_handlers(app: FastAPI) -> None:
    async def refusal(request: Request, exc: Exception) -> JSONResponse:
        answer = error_answer(exc)
        if answer is None:  # not for the types this handles
            return _error(*_INTERNAL_ERROR)
        return JSONResponse(answer[1], status_code=answer[0])

    for refused in (GatewayError, AuthError, QrmiError):
        app.add_exception_handler(refused, refusal)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error("InvalidInputError", _describe_validation(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged before the answer leaves; Starlette then re-raises it and _Guard swallows it.
        _log_unexpected(exc, request.method, request.url.path)
        return _error(*_INTERNAL_ERROR)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "NotFound", 405: "MethodNotAllowed"}
        kind = kinds.get(exc.status_code, "InvalidInputError")
        message = f"{request.method} {request.url.path}: {exc.detail}"
        if exc.status_code == 404:
            message += "; the API is described at /openapi.json"
        response = JSONResponse(error_body(kind, message), status_code=exc.status_code)
        if exc.headers:
            response.headers.update(exc.headers)
        return response


def _log_unexpected(exc: Exception, method: str, path: str) -> None:
    logger.error("unexpected %s on %s %s: %s", type(exc).__name__, method, path, redact(str(exc)))


def _describe_validation(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        if error.get("type") == "json_invalid":
            problems.append(
                f"the request body is not valid JSON ({error.get('ctx', {}).get('error', '')})"
            )
        else:
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "bad request: " + "; ".join(problems)


# ----- authentication dependencies -------------------------------------------------------------


def _job_dependency(service: GatewayService) -> Callable[..., Awaitable[JobRecord]]:
    async def current_job(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> JobRecord:
        token = bearer_token(authorization)
        if service.store.remote:  # a round trip to the database server: off the event loop
            job = await run_in_threadpool(service.authenticate, token)
        else:  # mostly a dictionary lookup (the service caches live tokens): no thread hop
            job = service.authenticate(token)
        request.state.job_id = job.job_id
        return job

    return current_job


def _body_sha256(request: Request) -> str | None:
    """The digest of the request's body, recorded by :class:`_Guard` as it read it."""
    digest = getattr(request.state, "body_sha256", None)
    return digest if isinstance(digest, str) else None


# ----- routes ------------------------------------------------------------------------------------


def _add_job_routes(app: FastAPI, service: GatewayService, verifier: MungeVerifier) -> None:
    @app.get("/v1/health", tags=["service"])
    def health() -> dict[str, str]:
        """Whether the gateway is up (no authentication)."""
        return {"status": "ok", "version": __version__}

    @app.post("/v1/jobs", status_code=201, tags=["jobs"], response_model=StartJobAnswer)
    def start_job(
        request: Request,
        body: StartJobRequest,
        x_munge_cred: Annotated[str | None, Header()] = None,
    ) -> StartJobAnswer:
        """Acquire the job's QPUs and mint its token (root's MUNGE credential, payload
        ``qrmi-gateway POST /v1/jobs/{job_id} sha256:<hex of the body>``)."""
        verifier.verify_root(x_munge_cred, "POST", f"/v1/jobs/{body.job_id}", _body_sha256(request))
        started = service.start_job(
            body.job_id,
            body.uid,
            body.qpus,
            body.time_limit,
            body.run_id,
            user_name=body.user,
            account=body.account,
            partition=body.partition,
            reservation=body.reservation,
        )
        return StartJobAnswer(
            job_id=started.job_id,
            token=started.token,
            expires=started.expires,
            variables=started.variables,
        )

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"], response_model=FinishJobAnswer)
    def finish_job(
        request: Request,
        job_id: str,
        body: FinishJobRequest | None = None,
        x_munge_cred: Annotated[str | None, Header()] = None,
    ) -> FinishJobAnswer:
        """End the job: revoke its token, stop its tasks, release its leases (exactly once;
        root's MUNGE credential, payload ``qrmi-gateway DELETE /v1/jobs/{job_id}
        sha256:<hex of the body>``)."""
        verifier.verify_root(x_munge_cred, "DELETE", f"/v1/jobs/{job_id}", _body_sha256(request))
        done = service.finish_job(job_id, None if body is None else body.run_id)
        return FinishJobAnswer(
            job_id=done.job_id,
            already_finished=done.already_finished,
            cancelled_tasks=done.cancelled_tasks,
            released=done.released,
            usage=done.usage,
        )


def _add_qpu_routes(app: FastAPI, service: GatewayService) -> None:
    Job = Annotated[JobRecord, Depends(_job_dependency(service))]

    @app.get("/v1/qpus", tags=["qpus"])
    def list_qpus(job: Job) -> list[dict[str, str]]:
        """The job's QPUs and their types."""
        return [{"name": qpu, "type": service.type_string(qpu)} for qpu in job.qpus]

    @app.get("/v1/qpus/{qpu}/status", tags=["qpus"])
    def status(qpu: str, job: Job) -> dict[str, Any]:
        """Status, capacity and queue length of the QPU."""
        return service.status(job, qpu).to_dict()

    @app.get("/v1/qpus/{qpu}/accessible", tags=["qpus"])
    def accessible(qpu: str, job: Job) -> dict[str, bool]:
        """Whether the QPU is online (and not paused)."""
        return {"accessible": service.is_accessible(job, qpu)}

    @app.get("/v1/qpus/{qpu}/target", tags=["qpus"])
    def target(qpu: str, job: Job) -> dict[str, str]:
        """The device description (JSON text in ``value``)."""
        return {"value": service.target(job, qpu).value}

    @app.get("/v1/qpus/{qpu}/metadata", tags=["qpus"])
    def metadata(qpu: str, job: Job) -> dict[str, str]:
        """Static facts about the QPU (``backend_name`` ...)."""
        return service.metadata(job, qpu)

    @app.post("/v1/qpus/{qpu}/acquire", tags=["qpus"])
    def acquire(qpu: str, job: Job) -> dict[str, str]:
        """One more lease for this job (released at the job's end at the latest)."""
        return {"acquisition_token": service.acquire(job, qpu)}

    @app.post("/v1/qpus/{qpu}/release", tags=["qpus"])
    def release(qpu: str, body: ReleaseRequest, job: Job) -> dict[str, bool]:
        """Release one of this job's leases (idempotent)."""
        service.release(job, qpu, body.acquisition_token)
        return {"released": True}

    @app.post("/v1/qpus/{qpu}/tasks", status_code=201, tags=["tasks"])
    def task_start(qpu: str, body: TaskStartRequest, job: Job) -> dict[str, str]:
        """Start a task; the answer has its id at once."""
        payload = payload_from_json(body.payload)
        return {"task_id": service.task_start(job, qpu, payload)}

    @app.get("/v1/qpus/{qpu}/tasks/{task_id}", tags=["tasks"])
    def task_status(qpu: str, task_id: str, job: Job) -> dict[str, Any]:
        """The task's status (``Queued``, ``Running``, ``Completed``, ``Failed``, ``Cancelled``)."""
        status = service.task_status(job, qpu, task_id)
        return {"task_id": task_id, "status": status.name, "final": status.is_final}

    @app.get("/v1/qpus/{qpu}/tasks/{task_id}/result", tags=["tasks"])
    def task_result(qpu: str, task_id: str, job: Job) -> dict[str, str]:
        """The result of a completed task (409 ``TaskNotReadyError`` before)."""
        return {"value": service.task_result(job, qpu, task_id).value}

    @app.get("/v1/qpus/{qpu}/tasks/{task_id}/logs", tags=["tasks"])
    def task_logs(qpu: str, task_id: str, job: Job) -> dict[str, str]:
        """The task's logs."""
        return {"logs": service.task_logs(job, qpu, task_id)}

    @app.post("/v1/qpus/{qpu}/tasks/{task_id}/stop", tags=["tasks"])
    def task_stop(qpu: str, task_id: str, job: Job) -> dict[str, bool]:
        """Cancel the task unless it is final (a result is never deleted)."""
        service.task_stop(job, qpu, task_id)
        return {"stopped": True}

    @app.get("/v1/qpus/{qpu}/tasks/{task_id}/wait", tags=["tasks"])
    async def task_wait(
        qpu: str,
        task_id: str,
        job: Job,
        timeout: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS)] = 30.0,
    ) -> dict[str, Any]:
        """Long poll: answers as soon as the task is final, or after ``timeout`` seconds with
        its current status (``final`` false); call again to keep waiting."""
        deadline = time.monotonic() + timeout
        for delay in poll_intervals():
            # The service's status: a task the gateway holds answers Queued from its queue.
            status = await run_in_threadpool(service.task_status, job, qpu, task_id)
            remaining = deadline - time.monotonic()
            if status.is_final or remaining <= 0:
                return {"task_id": task_id, "status": status.name, "final": status.is_final}
            await asyncio.sleep(min(delay, remaining))
        raise AssertionError("unreachable")  # pragma: no cover


def _admin_dependency(verifier: MungeVerifier, admin_hashes: frozenset[str]) -> Callable[..., None]:
    """The check of every ``/v1/admin`` route: an admin token, or root's MUNGE credential."""

    def admin(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        x_munge_cred: Annotated[str | None, Header()] = None,
    ) -> None:
        token = bearer_token(authorization)
        if token is not None and admin_hashes and is_admin_token(token, admin_hashes):
            return
        if token is not None and x_munge_cred is None:
            raise AuthError("the admin token is not valid")
        verifier.verify_root(x_munge_cred, request.method, request.url.path, _body_sha256(request))

    return admin


def _add_admin_routes(
    app: FastAPI, service: GatewayService, verifier: MungeVerifier, admin_hashes: frozenset[str]
) -> None:
    Admin = Annotated[None, Depends(_admin_dependency(verifier, admin_hashes))]

    @app.get("/v1/admin/jobs", tags=["admin"])
    def list_jobs(_: Admin) -> list[dict[str, Any]]:
        """Every job the gateway knows (never their tokens)."""
        return [
            {
                "job_id": job.job_id,
                "uid": job.uid,
                "state": job.state,
                "qpus": list(job.qpus),
                "created": job.created,
                "expires": job.expires,
            }
            for job in service.store.jobs()
        ]

    @app.get("/v1/admin/tasks", tags=["admin"])
    def list_tasks(_: Admin) -> list[dict[str, Any]]:
        """Every task the gateway started, with the job that owns it."""
        return [
            {"qpu": t.qpu, "task_id": t.task_id, "job_id": t.job_id, "created": t.created}
            for t in service.store.tasks()
        ]

    @app.post("/v1/admin/qpus/{qpu}/tasks/{task_id}/stop", tags=["admin"])
    def admin_stop(qpu: str, task_id: str, _: Admin) -> dict[str, bool]:
        """Cancel any job's task."""
        service.admin_stop(qpu, task_id)
        return {"stopped": True}

    @app.post("/v1/admin/qpus/{qpu}/pause", tags=["admin"])
    def pause(qpu: str, body: PauseRequest, _: Admin) -> dict[str, bool]:
        """Refuse new tasks on the QPU (running tasks continue); its status shows Paused."""
        service.pause(qpu, body.reason)
        return {"paused": True}

    @app.post("/v1/admin/qpus/{qpu}/resume", tags=["admin"])
    def resume(qpu: str, _: Admin) -> dict[str, bool]:
        """Accept new tasks on the QPU again."""
        service.resume(qpu)
        return {"paused": False}


def _add_quota_routes(
    app: FastAPI, service: GatewayService, verifier: MungeVerifier, admin_hashes: frozenset[str]
) -> None:
    Admin = Annotated[None, Depends(_admin_dependency(verifier, admin_hashes))]

    @app.get("/v1/admin/quota", tags=["admin"])
    def over_quota(_: Admin) -> dict[str, Any]:
        """Users and accounts that have used up a QPU-seconds quota now, with the reason
        ``sbatch --qpu`` gives them (``qrmi slurm sync`` reads it for job_submit.lua)."""
        return {
            "rules": len(service.config.quotas),
            "over": [refusal.to_dict() for refusal in service.over_quota()],
        }


#: How often the readiness route asks a vendor at most, and how long it waits for answers.
READINESS_TTL = 5.0
READINESS_WAIT = 8.0


def _add_readiness_route(
    app: FastAPI, service: GatewayService, verifier: MungeVerifier, admin_hashes: frozenset[str]
) -> None:
    """``GET /v1/admin/qpus``: every QPU's readiness, for ``qrmi slurm sync`` and ``qrmi slurm
    status`` on a controller whose config holds no vendor credentials (gateway mode)."""
    Admin = Annotated[None, Depends(_admin_dependency(verifier, admin_hashes))]
    board = StatusBoard(service, ttl=READINESS_TTL, wait=READINESS_WAIT)

    @app.get("/v1/admin/qpus", tags=["admin"])
    def qpu_readiness(_: Admin) -> dict[str, Any]:
        """Per QPU: ``status`` (``online``, ``offline``, ``paused``; ``null`` when its vendor
        could not be asked, ``error`` then says why), the vendor's ``reason``, ``paused_by_admin``
        (the reason of a pause made here), ``capacity`` (lanes), ``pending_job_count``, and
        ``checked``/``age_seconds`` of the answer. Answers within a few seconds whatever the
        vendors do: a vendor call still running leaves the last known answer."""
        now = time.time()
        return {"qpus": [qpu_readiness_entry(state, now) for state in board.snapshot()]}


def qpu_readiness_entry(state: QpuState, now: float) -> dict[str, Any]:
    """One QPU of ``GET /v1/admin/qpus`` (plain JSON, no vendor secret: reasons are redacted)."""
    status = state.status
    capacity = status.capacity if status is not None else None
    return {
        "name": state.name,
        "type": state.type,
        "status": None if status is None else status.status.name.lower(),
        "reason": None if status is None else redact(status.status_reason or "")[:300],
        "paused_by_admin": state.paused,
        "capacity": None
        if capacity is None
        else {"available_slots": capacity.available_slots, "max_slots": capacity.max_slots},
        "pending_job_count": None if status is None else status.pending_job_count,
        "error": state.error,
        "checked": state.checked,
        "age_seconds": None if state.checked is None else round(max(0.0, now - state.checked), 3),
    }


def _add_observability_routes(
    app: FastAPI, service: GatewayService, verifier: MungeVerifier, admin_hashes: frozenset[str]
) -> None:
    """``GET /metrics`` for Prometheus and the read-only admin page ``/admin``; both show the
    QPUs' live status from one :class:`StatusBoard`."""
    board = StatusBoard(service)
    _add_metrics_route(app, service, board, _admin_dependency(verifier, admin_hashes))
    _add_admin_page(app, service, board, admin_hashes)


def _add_metrics_route(
    app: FastAPI, service: GatewayService, board: StatusBoard, admin: Callable[..., None]
) -> None:
    Admin = Annotated[None, Depends(admin)]

    @app.get("/metrics", tags=["admin"], response_class=Response)
    def metrics(_: Admin) -> Response:
        """Prometheus metrics (text format): tasks per QPU and state, queues, lanes, vendor
        call latency, errors, quota refusals, jobs. Scrape with ``Authorization: Bearer
        <admin token>``."""
        body, content_type = exposition(service, board)
        return Response(body, media_type=content_type)


def _add_admin_page(
    app: FastAPI, service: GatewayService, board: StatusBoard, admin_hashes: frozenset[str]
) -> None:
    sessions = admin_page.AdminSessions(service.store)

    def page(content: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(content, status_code=status, headers=admin_page.PAGE_HEADERS)

    def logged_in(request: Request) -> bool:
        token = bearer_token(request.headers.get("authorization"))
        if token is not None:
            if admin_hashes and is_admin_token(token, admin_hashes):
                return True
            raise AuthError("the admin token is not valid")
        return sessions.valid(request.cookies.get(admin_page.SESSION_COOKIE))

    @app.get("/admin", include_in_schema=False)
    def admin_home(request: Request, days: Annotated[int, Query(ge=1, le=90)] = 7) -> Response:
        if not logged_in(request):
            return RedirectResponse("/admin/login", status_code=303)
        data = admin_page.gather(service, board, days=days, now=service.clock())
        return page(admin_page.render_page(data))

    @app.get("/admin/login", include_in_schema=False)
    def login_form() -> HTMLResponse:
        return page(admin_page.render_login())

    @app.post("/admin/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        _same_origin(request)
        token = _form_field(await request.body(), "token")
        if not admin_hashes:
            message = "this gateway has no admin token: start it with --admin-token-file"
            return page(admin_page.render_login(message), 401)
        if not token or not is_admin_token(token, admin_hashes):
            return page(admin_page.render_login("That is not an admin token."), 401)
        answer = RedirectResponse("/admin", status_code=303)
        answer.set_cookie(
            admin_page.SESSION_COOKIE,
            await run_in_threadpool(sessions.open),
            max_age=int(sessions.lifetime),
            path="/admin",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return answer

    @app.post("/admin/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        _same_origin(request)
        sessions.close(request.cookies.get(admin_page.SESSION_COOKIE))
        answer = RedirectResponse("/admin/login", status_code=303)
        answer.delete_cookie(
            admin_page.SESSION_COOKIE,
            path="/admin",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return answer


def _same_origin(request: Request) -> None:
    """Refuse a form posted from another site (browsers send ``Origin`` with every POST)."""
    origin = request.headers.get("origin")
    host = request.headers.get("host")
    if origin is not None and origin.split("://", 1)[-1] != host:
        raise AuthError("the form was posted from another site", status=403)


def _form_field(body: bytes, name: str) -> str | None:
    """One field of a small ``application/x-www-form-urlencoded`` body."""
    from urllib.parse import parse_qs

    if len(body) > 4096:
        return None
    values = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=4).get(name)
    return values[0].strip() if values else None


# ----- the ASGI guard in front of the application ------------------------------------------------


class _Guard:
    """Body size and read-time limits, an access log line per request, and a typed 500 for
    anything unexpected (its text is redacted, and no traceback leaves the gateway)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answer = _Answer(send)
        try:
            has_body, rejection = self._declared_body(scope)
            body = b""
            if has_body and rejection is None:
                body, rejection = await self._read_body(receive)
            if rejection is not None:
                await _send_json(answer, *rejection)
            else:  # MUNGE credentials are bound to the body: keep its digest for the check
                scope.setdefault("state", {})["body_sha256"] = body_digest(body)
                await self.app(scope, _replay(body, receive) if has_body else receive, answer)
        except Exception as exc:
            if not answer.started:  # else the application's handler answered and logged it
                _log_unexpected(exc, scope["method"], scope["path"])
                await _send_json(answer, 500, *_INTERNAL_ERROR)
        finally:
            _log_access(scope, answer.status, started)

    def _declared_body(self, scope: Scope) -> tuple[bool, tuple[int, str, str] | None]:
        """Whether the request has a body (HTTP/1.1: only with a length or chunked), and the
        answer refusing it at once if its declared length is unusable or over the limit."""
        has_body = False
        for name, value in scope.get("headers", []):
            if name == b"transfer-encoding":
                has_body = True
            elif name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    return True, (
                        400,
                        "InvalidInputError",
                        "the Content-Length header is not a number",
                    )
                if size > self.max_body_bytes:
                    return True, self._too_large()
                has_body = has_body or size > 0
        return has_body, None

    def _too_large(self) -> tuple[int, str, str]:
        return (
            413,
            "PayloadTooLarge",
            f"the request body is larger than the gateway's limit of {self.max_body_bytes} "
            "bytes; send a smaller payload or ask the admin to raise --max-body-bytes",
        )

    async def _read_body(self, receive: Receive) -> tuple[bytes, tuple[int, str, str] | None]:
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                return b"", (
                    408,
                    "RequestTimeout",
                    f"the request body did not arrive within {self.body_timeout:g} s",
                )
            if message["type"] != "http.request":
                return b"", None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None


class _Answer:
    """A ``send`` that remembers whether and with which status the answer started."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.status: int | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = int(message["status"])
        await self._send(message)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _send_json(send: Send, status: int, kind: str, message: str) -> None:
    body = json.dumps(error_body(kind, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status in (408, 413):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _log_access(scope: Scope, status: int | None, started: float) -> None:
    state = scope.get("state") or {}
    access_logger.info(
        "%s %s %s",
        scope["method"],
        scope["path"],
        status,
        extra={
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "ms": round((time.perf_counter() - started) * 1000, 2),
            "job_id": state.get("job_id"),
        },
    )
