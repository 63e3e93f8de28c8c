"""Calls to the gateway made as root: the job's start and end (the Slurm helper) and admin calls.

Each call proves root with a fresh MUNGE credential made through the local ``munged`` and bound
to the request, body included (:func:`qrmi.gateway.auth.munge_binding`), so it only works for
uid 0 on a host sharing the cluster's MUNGE key. Every call has a deadline: a gateway that is
down or slow makes it raise :class:`GatewayUnavailableError` with a message that says so, never
hang.

``url`` may list several gateway replicas sharing one PostgreSQL store, comma-separated
(``https://gw1:8443,https://gw2:8443``): a call that cannot reach one (connection refused or
dropped, HTTP 503 or a proxy's 502/504) goes on with the next, within the same deadline.

The Slurm helper's use::

    token, variables = start_job(url, job_id, uid, qpus, time_limit, run_id=start)  # at start
    # export `variables` into the job (they include QRMI_GATEWAY_URL and, per QPU,
    # {qpu}_QRMI_GATEWAY_TOKEN); never log them: the token is the job's credential
    finish_job(url, job_id, run_id=start)                     # at job end / Epilog
"""

from __future__ import annotations

import json as jsonlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from qrmi.errors import QrmiError, ServiceError, ServiceUnavailableError
from qrmi.gateway.auth import MUNGE_HEADER, munge_binding
from qrmi.gateway.wire import error_class, split_gateway_urls

__all__ = [
    "GatewayUnavailableError",
    "admin_request",
    "finish_job",
    "qpu_readiness",
    "split_gateway_urls",
    "start_job",
]

#: Default budget of a start or end call, retries included (seconds).
DEFAULT_DEADLINE = 30.0
#: Longest wait for a TCP connection to one replica before trying the next.
_CONNECT_SECONDS = 5.0


class GatewayUnavailableError(ServiceUnavailableError):
    """The gateway could not be reached (or kept failing) within the call's deadline.

    ``reached`` is False when no try got past the TCP connection (the gateway never saw the
    request, so a failed job start holds nothing there)."""

    reached: bool = True


def start_job(
    url: str,
    job_id: str,
    uid: int,
    qpus: Sequence[str],
    time_limit: int | None,
    *,
    run_id: str | None = None,
    munge_socket: str | None = None,
    ca_file: str | None = None,
    deadline: float = DEFAULT_DEADLINE,
    accounting: Mapping[str, str] | None = None,
    reservation: str | None = None,
) -> tuple[str, dict[str, str]]:
    """Acquire the job's QPUs on the gateway at ``url``; return ``(token, variables)``.

    ``variables`` is the job's whole QRMI environment: ``QRMI_GATEWAY_URL``, the reference's
    job variables and ``{qpu}_QRMI_GATEWAY_TOKEN`` per QPU (``token`` is their value). Calling
    it again for a running job keeps the leases and mints a new token. ``run_id`` names the
    job's run (its Slurm start time): a start with another ``run_id`` than the job's last one
    is a new run of a requeued job, which the gateway starts afresh. ``accounting`` holds the
    job's ``user``, ``account`` and ``partition`` as Slurm knows them (for usage records);
    ``reservation`` the Slurm reservation it runs in (a dedicated window's jobs get the
    vendor's exclusive mode).

    Raises:
        GatewayUnavailableError: the gateway did not answer within ``deadline``.
        QrmiError: the gateway refused (unknown QPU, vendor acquisition failed, ...).
    """
    body: dict[str, Any] = {
        "job_id": job_id,
        "uid": uid,
        "qpus": list(qpus),
        "time_limit": time_limit,
        **(accounting or {}),
    }
    if run_id is not None:
        body["run_id"] = run_id
    if reservation is not None:
        body["reservation"] = reservation
    answer = _root_call(
        "POST",
        url,
        "/v1/jobs",
        binding_path=f"/v1/jobs/{job_id}",
        json=body,
        munge_socket=munge_socket,
        ca_file=ca_file,
        deadline=deadline,
    )
    variables = {str(k): str(v) for k, v in answer["variables"].items()}
    variables["QRMI_GATEWAY_URL"] = ",".join(split_gateway_urls(url))
    return str(answer["token"]), variables


def finish_job(
    url: str,
    job_id: str,
    *,
    run_id: str | None = None,
    munge_socket: str | None = None,
    ca_file: str | None = None,
    deadline: float = DEFAULT_DEADLINE,
) -> dict[str, Any]:
    """End the job on the gateway: revoke its token, stop its tasks, release its leases.

    Safe to call more than once (the job step's end and the Epilog may both call it): the
    gateway does the work once and later calls answer ``already_finished``. With ``run_id``
    only that run is ended: a late end of a requeued job's earlier run leaves its next alone.

    Raises:
        GatewayUnavailableError: the gateway did not answer within ``deadline``.
        QrmiError: a lease could not be released (call again to retry).
    """
    path = f"/v1/jobs/{job_id}"
    answer: dict[str, Any] = _root_call(
        "DELETE",
        url,
        path,
        binding_path=path,
        json=None if run_id is None else {"run_id": run_id},
        munge_socket=munge_socket,
        ca_file=ca_file,
        deadline=deadline,
    )
    return answer


def admin_request(
    method: str,
    url: str,
    path: str,
    *,
    json: Any = None,
    admin_token: str | None = None,
    munge_socket: str | None = None,
    ca_file: str | None = None,
    deadline: float = DEFAULT_DEADLINE,
) -> Any:
    """An ``/v1/admin/...`` call, with ``admin_token`` or else root's MUNGE credential."""
    return _root_call(
        method,
        url,
        path,
        binding_path=path,
        json=json,
        munge_socket=munge_socket,
        ca_file=ca_file,
        deadline=deadline,
        admin_token=admin_token,
    )


def qpu_readiness(
    url: str,
    *,
    munge_socket: str | None = None,
    ca_file: str | None = None,
    admin_token: str | None = None,
    deadline: float = DEFAULT_DEADLINE,
) -> list[dict[str, Any]]:
    """``GET /v1/admin/qpus``: the readiness of every QPU the gateway at ``url`` serves.

    Raises:
        ServiceError: the gateway refused (not root, no admin token) or answered something else
            than a readiness report.
        GatewayUnavailableError: no answer within ``deadline``.
    """
    answer = admin_request(
        "GET",
        url,
        "/v1/admin/qpus",
        admin_token=admin_token,
        munge_socket=munge_socket,
        ca_file=ca_file,
        deadline=deadline,
    )
    qpus = answer.get("qpus") if isinstance(answer, dict) else None
    if not isinstance(qpus, list) or not all(isinstance(q, dict) for q in qpus):
        raise ServiceError(
            f"the QRMI gateway at {url} did not answer a readiness report ({{'qpus': [...]}}) "
            "to GET /v1/admin/qpus; is it older than this pyqrmi?"
        )
    return qpus


def _root_call(
    method: str,
    url: str,
    path: str,
    *,
    binding_path: str,
    json: Any = None,
    munge_socket: str | None,
    ca_file: str | None,
    deadline: float,
    admin_token: str | None = None,
) -> Any:
    from qrmi.backends._munge import Munge, MungeError

    bases = split_gateway_urls(url)
    verify: Any = True
    if ca_file is not None:
        import ssl

        verify = ssl.create_default_context(cafile=ca_file)
    body = b"" if json is None else jsonlib.dumps(json).encode()
    give_up = time.monotonic() + deadline
    delay, last, reached, tries = 0.1, "no try made", False, 0
    with httpx.Client(verify=verify) as client:
        while True:
            base = bases[tries % len(bases)]
            tries += 1
            headers = {"Content-Type": "application/json"} if body else {}
            if admin_token:
                headers["Authorization"] = f"Bearer {admin_token}"
            else:
                try:  # a fresh credential per try: each is accepted once
                    credential = Munge(munge_socket).encode(
                        munge_binding(method, binding_path, body)
                    )
                except MungeError as exc:
                    raise ServiceError(f"cannot prove root to the QRMI gateway: {exc}") from None
                headers[MUNGE_HEADER] = credential
            try:
                response = client.request(  # the exact bytes the credential is bound to
                    method,
                    base + path,
                    content=body,
                    headers=headers,
                    timeout=_try_timeout(give_up - time.monotonic(), len(bases)),
                )
            except httpx.TransportError as exc:
                last = f"{base}: {type(exc).__name__}: {exc}"
                reached = reached or not isinstance(exc, httpx.ConnectError)
            else:
                reached = True
                if not _unavailable(response):
                    return _answer(response, method, base + path)
                last = f"{base}: HTTP {response.status_code}"
            if tries % len(bases) and time.monotonic() < give_up:
                continue  # the next replica at once
            if time.monotonic() + delay >= give_up:
                unavailable = GatewayUnavailableError(
                    f"the QRMI gateway at {', '.join(bases)} did not answer {method} {path} "
                    f"within {deadline:g} s (last: {last}); check that 'qrmi gateway' runs "
                    "there and that this node can reach it"
                )
                unavailable.reached = reached
                raise unavailable
            time.sleep(delay)
            delay = min(2.0, delay * 2)


def _try_timeout(remaining: float, replicas: int) -> httpx.Timeout:
    """One try's timeout: what is left, but with replicas to fall back on, at most half of it
    (a hung replica leaves time for the next) and a short connect."""
    budget = max(0.5, remaining / 2 if replicas > 1 else remaining)
    return httpx.Timeout(budget, connect=min(budget, _CONNECT_SECONDS))


def _unavailable(response: httpx.Response) -> bool:
    """The gateway is restarting, overloaded or cannot reach its store (503), or a proxy in
    front of it failed (502/504 without the gateway's typed error): try again or elsewhere."""
    return response.status_code == 503 or (
        response.status_code in (502, 504) and not _typed(response)
    )


def _typed(response: httpx.Response) -> bool:
    try:
        return isinstance(response.json().get("error"), dict)
    except (ValueError, AttributeError):
        return False


def _answer(response: httpx.Response, method: str, where: str) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code < 400 and body is not None:
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise ServiceError(
            f"{method} {where} answered HTTP {response.status_code} without a QRMI error; is "
            "this URL the QRMI gateway?",
            status_code=response.status_code,
        )
    cls: type[QrmiError] = error_class(str(error.get("type")))
    message = f"the QRMI gateway refused {method} {where}: {error.get('message')}"
    if issubclass(cls, ServiceError):
        return _raise(cls(message, status_code=response.status_code))
    return _raise(cls(message))


def _raise(exc: QrmiError) -> Any:
    raise exc
