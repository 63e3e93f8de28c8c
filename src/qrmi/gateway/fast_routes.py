"""The gateway's polling calls, answered without FastAPI's per-request machinery.

A job waiting for its tasks asks their status (and its QPU's) again and again; with many jobs,
these polls are most of what the gateway serves. Through FastAPI each one pays for routing,
dependency solving, its exception and telemetry middleware and the response's validation: with
64 clients polling, more CPU than the poll's own work, and the gateway (one process) ran out of
CPU first.

:class:`FastRoutes` matches these few read-only routes first and answers them from the same
service methods, with the same JSON bodies and the same errors; every other request, and the
OpenAPI description of these routes, stays with FastAPI.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from qrmi.errors import QrmiError
from qrmi.gateway.auth import AuthError, bearer_token
from qrmi.gateway.service import GatewayError, GatewayService
from qrmi.gateway.store import JobRecord
from qrmi.gateway.wire import ERROR_STATUS, error_body
from qrmi.log import redact

__all__ = ["FastRoutes", "error_answer", "json_bytes"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

A = TypeVar("A")
R = TypeVar("R")

#: ``/v1/qpus/{qpu}/...`` split on ``/``: ``["", "v1", "qpus", qpu, ...]``.
_QPU_ROUTE = ("", "v1", "qpus")


def json_bytes(value: Any) -> bytes:
    """``value`` as the JSON bytes FastAPI's ``JSONResponse`` would send."""
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


def error_answer(exc: Exception) -> tuple[int, dict[str, Any]] | None:
    """The status and JSON body of the error answer for ``exc``; None for an unexpected error.

    A gateway refusal keeps its kind; a refused token or QPU is ``InvalidTokenError`` (401) or
    ``AccessDeniedError`` (403); a QRMI error keeps its class name, its text redacted.
    """
    if isinstance(exc, GatewayError):
        kind, message = exc.kind, str(exc)
    elif isinstance(exc, AuthError):
        kind = "AccessDeniedError" if exc.status == 403 else "InvalidTokenError"
        message = str(exc)
    elif isinstance(exc, QrmiError):
        kind, message = type(exc).__name__, redact(str(exc))
    else:
        return None
    return ERROR_STATUS.get(kind, 502), error_body(kind, message)


class FastRoutes:
    """ASGI wrapper answering ``GET /v1/qpus/{qpu}/tasks/{task_id}``, ``.../status`` and
    ``.../accessible`` itself, and passing everything else to ``app``."""

    def __init__(self, app: ASGIApp, service: GatewayService) -> None:
        self.app = app
        self.service = service
        # Its own threads: a C queue hands them the calls, cheaper per poll than anyio's.
        self._threads = ThreadPoolExecutor(max_workers=256, thread_name_prefix="qrmi-poll")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = self._route(scope) if scope["type"] == "http" else None
        if call is None:
            await self.app(scope, receive, send)
            return
        try:
            job = await self._authenticate(scope)
            scope.setdefault("state", {})["job_id"] = job.job_id
            status, value = 200, await self._in_thread(call, job)
        except Exception as exc:
            answer = error_answer(exc)
            if answer is None:
                raise  # the request guard logs it and answers a typed 500
            status, value = answer
        body = json_bytes(value)
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _route(self, scope: Scope) -> Callable[[JobRecord], Any] | None:
        """The service call answering this request, if it is one of the polling routes."""
        if scope["method"] != "GET":
            return None
        parts = scope["path"].split("/")
        if len(parts) not in (5, 6) or tuple(parts[:3]) != _QPU_ROUTE or not all(parts[3:]):
            return None
        service, qpu = self.service, parts[3]
        if len(parts) == 6 and parts[4] == "tasks":
            task_id = parts[5]
            return lambda job: _task_status(service, job, qpu, task_id)
        if len(parts) == 5 and parts[4] == "status":
            return lambda job: service.status(job, qpu).to_dict()
        if len(parts) == 5 and parts[4] == "accessible":
            return lambda job: {"accessible": service.is_accessible(job, qpu)}
        return None

    async def _in_thread(self, call: Callable[[A], R], argument: A) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._threads, call, argument)

    async def _authenticate(self, scope: Scope) -> JobRecord:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        token = bearer_token(None if header is None else header.decode("latin-1"))
        if self.service.store.remote:  # a round trip to the database server: off the event loop
            return await self._in_thread(self.service.authenticate, token)
        return self.service.authenticate(token)  # mostly a lookup in the service's token cache


_JSON = b"application/json"


def _task_status(service: GatewayService, job: JobRecord, qpu: str, task_id: str) -> Any:
    status = service.task_status(job, qpu, task_id)
    return {"task_id": task_id, "status": status.name, "final": status.is_final}
