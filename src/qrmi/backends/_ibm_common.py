"""Pieces shared by the two IBM backends and their discovery provider.

* :class:`IamToken`: the IBM Cloud IAM API-key -> bearer token exchange
  (``POST {iam}/identity/token``, form-encoded), cached until 90 % of its lifetime and renewed
  on expiry or when a service answers 401 (through :class:`~qrmi.http.HttpClient`).
* :func:`ibm_error_message`: the vendor text of an IBM error body, for
  :class:`~qrmi.http.HttpClient` messages.
* :func:`fetch_description`: a device's ``{"configuration": ..., "properties": ...}``.
* :func:`failure_reason` / :func:`primitive_input`: task-level helpers.

Nothing here logs or raises a credential: the API key only ever travels in the IAM request body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx

from qrmi.errors import (
    AuthenticationFailedError,
    InvalidInputError,
    ResourceNotFoundError,
    ServiceError,
    ServiceUnavailableError,
)
from qrmi.http import CachedToken, HttpClient, RetryPolicy, default_error_message

__all__ = [
    "IAM_GRANT_TYPE",
    "IamToken",
    "failure_reason",
    "fetch_description",
    "ibm_error_message",
    "json_object",
    "primitive_input",
]

logger = logging.getLogger(__name__)

IAM_GRANT_TYPE = "urn:ibm:params:oauth:grant-type:apikey"


def ibm_error_message(response: httpx.Response) -> str | None:
    """IBM's error text: ``errors[].message (code)``, IAM ``errorMessage``, or the body."""
    return default_error_message(response)


class IamToken(CachedToken):
    """A bearer token for ``apikey`` from IBM Cloud IAM at ``iam_endpoint``.

    Cached for 90 % of ``expires_in``; :meth:`invalidate` (done by the HTTP layer on a 401)
    forces a new exchange. A refused key raises :class:`AuthenticationFailedError` with IAM's
    reason; the key itself never appears in a message.
    """

    def __init__(
        self,
        iam_endpoint: str,
        apikey: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._apikey = apikey
        self._http = HttpClient(
            iam_endpoint,
            service="IBM Cloud IAM",
            headers={"Accept": "application/json"},
            timeout=timeout,
            retry=retry,
            transport=transport,
            error_message=ibm_error_message,
        )
        super().__init__(self._exchange, name=f"IBM Cloud IAM at {iam_endpoint}")

    def _exchange(self) -> tuple[str, float]:
        try:
            response = self._http.post(
                "identity/token",
                data={"grant_type": IAM_GRANT_TYPE, "apikey": self._apikey},
                authenticated=False,
            )
        except (InvalidInputError, ResourceNotFoundError, ServiceError) as exc:
            if isinstance(exc, ServiceUnavailableError):
                raise
            raise AuthenticationFailedError(
                f"authentication failed: IBM Cloud IAM did not issue an access token ({exc}). "
                "Check the IAM API key and the IAM endpoint setting."
            ) from None
        body = json_object(response, "IBM Cloud IAM token response")
        token = body.get("access_token")
        expires_in = body.get("expires_in")
        if not isinstance(token, str) or not token or not isinstance(expires_in, int | float):
            raise AuthenticationFailedError(
                "authentication failed: the IBM Cloud IAM answer lacks access_token or "
                "expires_in; check the IAM endpoint setting points at IBM Cloud IAM"
            )
        return token, float(expires_in)

    def close(self) -> None:
        """Close the IAM connection pool."""
        self._http.close()

    def __repr__(self) -> str:
        return "IamToken(***)"


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The response body as a JSON object.

    Raises:
        ServiceError: the body is not a JSON object (a proxy page, a truncated answer).
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ServiceError(
            f"{what} is not a JSON object (HTTP {response.status_code}); check that the "
            "endpoint setting points at the IBM service",
            status_code=response.status_code,
        )
    return body


def fetch_description(http: HttpClient, backend_path: str) -> str:
    """``{"configuration": ..., "properties": ...}`` of one backend as JSON text.

    A part the service does not have (404) or cannot give (an error answer) becomes ``null``
    with a warning, as in the reference; authentication and availability failures propagate.
    """
    parts: dict[str, Any] = {}
    for part in ("configuration", "properties"):
        try:
            response = http.get(f"{backend_path}/{part}")
            parts[part] = response.json()
        except (ResourceNotFoundError, InvalidInputError, ValueError) as exc:
            logger.warning("%s of %s is unavailable: %s", part, backend_path, exc)
            parts[part] = None
        except ServiceError as exc:
            if isinstance(exc, ServiceUnavailableError):
                raise
            logger.warning("%s of %s is unavailable: %s", part, backend_path, exc)
            parts[part] = None
    return json.dumps(parts, separators=(",", ":"))


def failure_reason(job: Mapping[str, Any]) -> str:
    """``code: ..., message: ..., solution: ...`` from an IBM job, for TaskNotReady messages.

    A field the job does not have is left empty, as the reference does (not ``None``).
    """
    state = job.get("state")
    source: Mapping[str, Any] = state if isinstance(state, Mapping) else job
    code = source.get("reason_code", job.get("reason_code"))
    message = source.get("reason", source.get("reason_message", job.get("reason_message")))
    solution = source.get("reason_solution", job.get("reason_solution"))
    return f"code: {_shown(code)}, message: {_shown(message)}, solution: {_shown(solution)}"


def _shown(value: Any) -> str:
    return "" if value is None else str(value)


def primitive_input(text: str, resource_id: str) -> None:
    """Check that a ``QiskitPrimitive`` input is a JSON object; the text is sent unchanged.

    Raises:
        InvalidInputError: not JSON, or not an object.
    """
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise InvalidInputError(
            f"the primitive input for {resource_id!r} is not valid JSON ({exc}); pass the JSON "
            'text of the primitive params, e.g. {"pubs": [...], "version": 2}'
        ) from None
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"the primitive input for {resource_id!r} must be a JSON object, got "
            f'{type(value).__name__}; pass {{"pubs": [...], "version": 2}}'
        )
