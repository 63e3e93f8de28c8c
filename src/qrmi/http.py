"""The one HTTP layer every vendor backend uses.

:class:`HttpClient` wraps an :class:`httpx.Client` (keep-alive pooling, thread-safe, no global
state) and gives every vendor the same resilience, which the reference only had for IBM Quantum
System:

* **Transient failures** (connection errors, dropped connections, read timeouts, statuses in
  :attr:`RetryPolicy.retry_statuses`: 408 and 5xx) are retried with exponential backoff and full
  jitter, up to :attr:`RetryPolicy.max_attempts` tries *and* within the
  :attr:`RetryPolicy.deadline`.
* **Throttling** (423 "backend reserved / lanes locked", 429 "too many requests") is retried until
  the deadline, honouring ``Retry-After`` (capped by :attr:`RetryPolicy.backoff_max`). Without a
  deadline, throttling is bounded by ``max_attempts`` too: nothing retries forever, and no sleep
  goes past the deadline. When the budget runs out, :class:`~qrmi.errors.ServiceUnavailableError`
  says what failed, how often, for how long, and what to do about it.
* **Expired tokens**: a 401 invalidates the :class:`TokenProvider`, fetches a new token and
  re-sends once; a second 401 raises :class:`~qrmi.errors.AuthenticationFailedError`. A token
  that cannot be fetched raises the same error.
* **Every other error status maps once, here**: 404 to ``not_found`` (by default
  :class:`~qrmi.errors.ResourceNotFoundError`; job lookups pass
  :class:`~qrmi.errors.TaskNotFoundError`), 400/409/422 to
  :class:`~qrmi.errors.InvalidInputError`, anything else to
  :class:`~qrmi.errors.ServiceError` with ``status_code``. Messages carry the vendor's own error
  text (see :func:`default_error_message`).

Retrying POST and PATCH: transient failures are retried for *every* method. The vendor calls our
backends make are safe to repeat: IBM Quantum System job creation carries a client-chosen job id
(a repeat is rejected, not duplicated), session/batch creation and cancellation are harmless to
repeat in our usage, and a request that never reached the server (connection refused) is always
safe. A backend that sends a truly non-idempotent request can pass ``retry=RetryPolicy(
max_attempts=1)`` to a dedicated client.

Logging (logger ``qrmi.http``): DEBUG per request (service, method, path, status, elapsed time)
and WARNING per retry. Headers, tokens, bodies and query strings are never logged, nor put in
exception messages: presigned URLs carry their signature in the query string.
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import httpx

from qrmi._http_wire import Wire, wire_target
from qrmi.errors import (
    AuthenticationFailedError,
    ConfigError,
    InvalidInputError,
    QrmiError,
    ResourceNotFoundError,
    ServiceError,
    ServiceUnavailableError,
)
from qrmi.log import redact

__all__ = [
    "CachedToken",
    "HttpClient",
    "RetryPolicy",
    "StaticToken",
    "TokenProvider",
    "default_error_message",
]

logger = logging.getLogger(__name__)

#: Longest vendor error text quoted in a message.
MAX_VENDOR_TEXT = 300

_INVALID_INPUT_STATUSES = frozenset({400, 409, 422})

_THROTTLE_ADVICE = {
    423: "the backend is reserved or its execution lanes are locked: wait for the reservation "
    "to end or raise the job time limit",
    429: "the service is rate-limiting requests: retry later or send fewer requests at once",
}
_TRANSIENT_ADVICE = "the service kept failing: check its status page and retry later"
_NETWORK_ADVICE = "check the endpoint URL, the network and that the service is up"


@dataclass(frozen=True)
class RetryPolicy:
    """How :class:`HttpClient` retries; every field bounds the retry loop.

    ``deadline`` is the whole budget of one :meth:`HttpClient.request` call in seconds, every try
    and sleep included. ``None`` removes the time budget; tries are then bounded by
    ``max_attempts`` for throttling as well.
    """

    max_attempts: int = 6
    backoff_initial: float = 0.25
    backoff_max: float = 8.0
    throttle_statuses: frozenset[int] = field(default_factory=lambda: frozenset({423, 429}))
    retry_statuses: frozenset[int] = field(
        default_factory=lambda: frozenset({408, 500, 502, 503, 504})
    )
    deadline: float | None = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"RetryPolicy.max_attempts must be >= 1; got {self.max_attempts}.")
        if self.backoff_initial < 0 or self.backoff_max < self.backoff_initial:
            raise ConfigError(
                "RetryPolicy needs 0 <= backoff_initial <= backoff_max; got "
                f"backoff_initial={self.backoff_initial}, backoff_max={self.backoff_max}."
            )
        if self.deadline is not None and self.deadline <= 0:
            raise ConfigError(
                f"RetryPolicy.deadline must be positive seconds or None; got {self.deadline}."
            )

    def backoff(self, retry_number: int, rng: Callable[[], float] = random.random) -> float:
        """Delay before retry ``retry_number`` (1-based): full jitter over a capped doubling."""
        return rng() * self._ceiling(retry_number)

    def _ceiling(self, retry_number: int) -> float:
        doublings = min(max(retry_number - 1, 0), 64)  # 2**64 * anything exceeds any cap
        return min(self.backoff_max, self.backoff_initial * 2.0**doublings)

    def throttle_delay(
        self, retry_number: int, retry_after: float | None, rng: Callable[[], float]
    ) -> float:
        """Delay after a 423/429: the server's ``Retry-After`` if given, capped at ``backoff_max``.

        Without ``Retry-After`` the delay grows like :meth:`backoff` but keeps at least half of
        it (equal jitter): a busy service is not asked again at once. A ``Retry-After`` of zero
        still waits ``backoff_initial`` so that a server that always says "now" is not hammered
        until the deadline.
        """
        if retry_after is None:
            ceiling = self._ceiling(retry_number)
            return ceiling / 2 + rng() * ceiling / 2
        return min(self.backoff_max, max(retry_after, self.backoff_initial))


@runtime_checkable
class TokenProvider(Protocol):
    """Where :class:`HttpClient` gets its credential from."""

    def token(self) -> str:
        """A valid token (may fetch one); raises on failure."""
        ...

    def invalidate(self) -> None:
        """Forget the current token: the server refused it; the next :meth:`token` re-fetches."""
        ...


class StaticToken:
    """A fixed token (API key, pre-issued access token); :meth:`invalidate` cannot renew it."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ConfigError("StaticToken needs a non-empty token; got an empty string.")
        self._token = token

    def token(self) -> str:
        """The token given at construction."""
        return self._token

    def invalidate(self) -> None:
        """Nothing to renew: a second refusal becomes an AuthenticationFailedError."""

    def __repr__(self) -> str:
        return "StaticToken(***)"


TokenFetch = Callable[[], tuple[str, float]]


class CachedToken:
    """A :class:`TokenProvider` that caches what ``fetch()`` returns until shortly before expiry.

    ``fetch`` returns ``(token, expires_in_seconds)``. The token is renewed after
    ``refresh_fraction * expires_in`` seconds, or ``margin`` seconds before expiry if that is
    earlier. One fetch runs at a time: concurrent callers wait for it and share its token.
    Any failure of ``fetch`` surfaces as :class:`~qrmi.errors.AuthenticationFailedError`.
    """

    def __init__(
        self,
        fetch: TokenFetch,
        *,
        name: str = "the token service",
        refresh_fraction: float = 0.9,
        margin: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < refresh_fraction <= 1:
            raise ConfigError(f"refresh_fraction must be in (0, 1]; got {refresh_fraction}.")
        self._fetch = fetch
        self._name = name
        self._refresh_fraction = refresh_fraction
        self._margin = margin
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self.fetch_count = 0

    def token(self) -> str:
        """The cached token, fetching a new one first if it is missing or due for renewal."""
        with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                self._token, self._refresh_at = self._fetch_new()
            return self._token

    def invalidate(self) -> None:
        """Drop the cached token; the next :meth:`token` fetches a new one."""
        with self._lock:
            self._token = None

    def _fetch_new(self) -> tuple[str, float]:
        self.fetch_count += 1
        try:
            token, expires_in = self._fetch()
        except AuthenticationFailedError:
            raise
        except Exception as exc:  # any failure to get a token is an authentication failure
            raise AuthenticationFailedError(
                f"could not obtain an access token from {self._name}: {redact(str(exc))} "
                "Check the API key / credentials and the token endpoint URL."
            ) from exc
        if not isinstance(token, str) or not token:
            raise AuthenticationFailedError(
                f"{self._name} returned no access token; check the credentials and the token "
                "endpoint URL."
            )
        lifetime = min(expires_in * self._refresh_fraction, expires_in - self._margin)
        return token, self._clock() + max(0.0, lifetime)

    def __repr__(self) -> str:
        return f"CachedToken(name={self._name!r})"


def default_error_message(response: httpx.Response) -> str | None:
    """The vendor's own error text from a response body, or ``None`` if the body is empty.

    Understands IBM ``{"errors":[{"message","code"}]}``, IBM IAM ``{"errorMessage","errorCode"}``,
    FastAPI ``{"detail": str | [{"loc","msg"}]}``, ``{"message": ...}``, ``{"error": ...}``
    and falls back to the body text, truncated to :data:`MAX_VENDOR_TEXT` characters.
    """
    text = response.text.strip()
    if not text:
        return None
    try:
        body = jsonlib.loads(text)
    except ValueError:
        return _truncate(text)
    found = _message_from_json(body) if isinstance(body, dict) else None
    return _truncate(found if found else text)


def _message_from_json(body: Mapping[str, Any]) -> str | None:
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(_describe_error_item(item) for item in errors)
    if "errorMessage" in body:
        return _with_code(body["errorMessage"], body.get("errorCode"))
    if "detail" in body:
        return _describe_detail(body["detail"])
    for key in ("message", "error", "title"):
        value = body.get(key)
        if isinstance(value, dict):
            return _message_from_json(value) or jsonlib.dumps(value)
        if value:
            return _with_code(value, body.get("code"))
    return None


def _describe_error_item(item: object) -> str:
    if isinstance(item, dict):
        return _with_code(item.get("message") or item.get("msg") or item, item.get("code"))
    return str(item)


def _describe_detail(detail: object) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                location = ".".join(str(part) for part in item.get("loc", ()))
                parts.append(f"{location}: {item['msg']}" if location else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def _with_code(message: object, code: object) -> str:
    return f"{message} (code {code})" if code not in (None, "") else str(message)


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_VENDOR_TEXT else text[:MAX_VENDOR_TEXT] + "..."


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or HTTP date), ``None`` if absent or garbled."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_wall)


def _join_url(base_url: str, path: str) -> str:
    if path.startswith(("http://", "https://")):
        return path
    if not path:
        return base_url
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def _display_url(url: str) -> str:
    """The URL without query string or fragment (they may carry signatures)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


@dataclass
class _Attempts:
    """What happened so far in one :meth:`HttpClient.request` call."""

    started: float
    tries: int = 0
    transient_retries: int = 0
    throttle_retries: int = 0
    last_failure: str = ""
    last_status: int | None = None


@dataclass
class _Outgoing:
    """One request ready to send (and resend): by the wire, or by httpx when ``built`` is set."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None
    built: httpx.Request | None = None
    target: tuple[tuple[str, str, int], str, str] | None = None  # wire_target(url)

    def set_header(self, name: str, value: str) -> None:
        if self.built is not None:
            self.built.headers[name] = value
        else:
            self.headers[name] = value


#: What httpx sends unless told otherwise; the wire sends the same (but asks only for the
#: encodings it decodes).
_HTTPX_DEFAULT_HEADERS = {
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate",
    "Connection": "keep-alive",
    "User-Agent": f"python-httpx/{httpx.__version__}",
}
_PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy"})


def _merged_headers(base: Mapping[str, str], extra: Mapping[str, str] | None) -> dict[str, str]:
    """``base`` updated with ``extra``, header names compared without case."""
    merged = dict(base)
    if extra:
        lower = {name.lower(): name for name in merged}
        for name, value in extra.items():
            old = lower.get(name.lower())
            if old is not None and old != name:
                del merged[old]
            merged[name] = value
            lower[name.lower()] = name
    return merged


def _proxies_in_environment() -> bool:
    """Whether ``HTTP(S)_PROXY`` / ``ALL_PROXY`` is set: httpx then routes through the proxy."""
    return any(key.lower() in _PROXY_VARIABLES and value for key, value in os.environ.items())


class HttpClient:
    """An HTTP client for one vendor service with retries, token refresh and typed errors.

    ``base_url`` may end with ``/`` or not, and may include a path prefix (``.../api/v1``);
    ``path`` arguments are joined to it, or used as-is when they are absolute URLs (presigned
    S3 URLs; pass ``authenticated=False``). ``service`` names the vendor service in messages and
    logs. ``auth`` supplies the credential sent as ``{auth_header}: {auth_scheme} {token}``.
    ``transport``, ``clock``, ``sleep`` and ``rng`` are injectable for tests. Safe to share
    between threads.

    Requests go out through :mod:`qrmi._http_wire` (pooled ``http.client`` connections, a
    third of httpx's cost per call) except form and multipart bodies, a custom ``transport``
    and proxies set in the environment, which httpx sends.
    """

    def __init__(
        self,
        base_url: str,
        *,
        service: str,
        headers: Mapping[str, str] | None = None,
        auth: TokenProvider | None = None,
        auth_scheme: str = "Bearer",
        auth_header: str = "Authorization",
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        error_message: Callable[[httpx.Response], str | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"the {service} endpoint must be an http:// or https:// URL; got {base_url!r}. "
                "Fix the endpoint setting of the resource."
            )
        if timeout <= 0:
            raise ConfigError(f"the {service} HTTP timeout must be positive; got {timeout}.")
        self.base_url = base_url
        self.service = service
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._auth = auth
        self._auth_scheme = auth_scheme
        self._auth_header = auth_header
        self._error_message = error_message or default_error_message
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._headers = dict(headers or {})
        self._transport = transport
        self._httpx_client: httpx.Client | None = None
        self._httpx_lock = threading.Lock()
        self._wire = Wire() if transport is None and not _proxies_in_environment() else None
        self._wire_headers = _merged_headers(_HTTPX_DEFAULT_HEADERS, self._headers)

    @property
    def _client(self) -> httpx.Client:
        """The httpx client for what the wire does not send (made on first use)."""
        with self._httpx_lock:
            if self._httpx_client is None:
                self._httpx_client = httpx.Client(
                    headers=self._headers, timeout=self.timeout, transport=self._transport
                )
            return self._httpx_client

    # -- public API --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        content: bytes | str | None = None,
        data: Mapping[str, Any] | None = None,
        files: Any = None,
        headers: Mapping[str, str] | None = None,
        expected: Collection[int] = (200, 201, 202, 204),
        not_found: type[QrmiError] = ResourceNotFoundError,
        deadline: float | None = None,
        authenticated: bool = True,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request, retrying per the policy; return the response if its status is
        in ``expected``, otherwise raise the mapped :mod:`qrmi.errors` exception.

        ``deadline`` overrides :attr:`RetryPolicy.deadline` for this call; ``timeout``
        overrides the per-try timeout (long-poll endpoints).
        """
        outgoing = self._prepare(
            method.upper(),
            _join_url(self.base_url, path),
            params=params,
            json=json,
            content=content,
            data=data,
            files=files,
            headers=headers,
        )
        budget = self.retry.deadline if deadline is None else deadline
        return self._send_with_retries(
            outgoing,
            expected=expected,
            not_found=not_found,
            budget=budget,
            authenticated=authenticated,
            timeout=timeout or self.timeout,
        )

    def _prepare(
        self,
        method: str,
        url: str,
        *,
        params: Any,
        json: Any,
        content: bytes | str | None,
        data: Mapping[str, Any] | None,
        files: Any,
        headers: Mapping[str, str] | None,
    ) -> _Outgoing:
        """The request with its body encoded once, so that every retry resends the same bytes."""
        if params:
            url = str(httpx.URL(url).copy_merge_params(params))
        target = wire_target(url) if self._wire is not None else None
        if target is not None and data is None and files is None:
            merged = _merged_headers(self._wire_headers, headers)
            body: bytes | None = None
            if content is not None:
                body = content.encode("utf-8") if isinstance(content, str) else content
            elif json is not None:
                # As httpx 0.28 encodes it.
                body = jsonlib.dumps(
                    json, ensure_ascii=False, separators=(",", ":"), allow_nan=False
                ).encode("utf-8")
                if not any(name.lower() == "content-type" for name in merged):
                    merged["Content-Type"] = "application/json"
            return _Outgoing(method, url, merged, body, target=target)
        request = self._client.build_request(
            method,
            url,
            json=json,
            content=content,
            data=data,
            files=files,
            headers=headers,
        )
        request.read()  # materialise the body once so every retry can resend it
        return _Outgoing(method, url, {}, built=request)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """``request("GET", path, **kwargs)``."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """``request("POST", path, **kwargs)``."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        """``request("PUT", path, **kwargs)``."""
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        """``request("PATCH", path, **kwargs)``."""
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        """``request("DELETE", path, **kwargs)``."""
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        """Close the pooled connections."""
        if self._wire is not None:
            self._wire.close()
        with self._httpx_lock:
            if self._httpx_client is not None:
                self._httpx_client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HttpClient({self.service!r}, {_display_url(self.base_url)!r})"

    # -- the retry loop ----------------------------------------------------------------------

    def _send_with_retries(
        self,
        request: _Outgoing,
        *,
        expected: Collection[int],
        not_found: type[QrmiError],
        budget: float | None,
        authenticated: bool,
        timeout: float,
    ) -> httpx.Response:
        state = _Attempts(started=self._clock())
        use_auth = authenticated and self._auth is not None
        refreshed = refresh_now = False
        while True:
            if use_auth:
                self._authorize(request, refresh=refresh_now)
                refresh_now = False
            response = self._try_once(request, state, budget, timeout)
            if response is not None and response.status_code in expected:
                return response
            if response is not None and response.status_code == 401:
                if not use_auth or refreshed:
                    raise self._auth_error(request, response, refreshed)
                refreshed = refresh_now = True
                logger.warning(
                    "%s: HTTP 401, fetching a new token and retrying once", self._where(request)
                )
                continue
            delay = self._retry_delay(request, response, state, not_found)
            self._wait_or_give_up(request, state, budget, delay)

    def _authorize(self, request: _Outgoing, *, refresh: bool) -> None:
        assert self._auth is not None
        try:
            if refresh:
                self._auth.invalidate()
            token = self._auth.token()
        except AuthenticationFailedError:
            raise
        except Exception as exc:  # a provider failing in any way is an authentication failure
            raise AuthenticationFailedError(
                f"could not obtain credentials for {self.service}: {redact(str(exc))} "
                f"Check the API key / credentials for {self.service}."
            ) from exc
        request.set_header(
            self._auth_header, f"{self._auth_scheme} {token}" if self._auth_scheme else token
        )

    def _try_once(
        self, request: _Outgoing, state: _Attempts, budget: float | None, timeout: float
    ) -> httpx.Response | None:
        """One try; ``None`` means a transport failure, recorded in ``state``."""
        state.tries += 1
        per_try = timeout
        if budget is not None:
            per_try = max(0.001, min(timeout, budget - (self._clock() - state.started)))
        sent_at = time.perf_counter()
        try:
            response = self._send(request, per_try)
        except httpx.TransportError as exc:
            state.last_status = None
            state.last_failure = self._describe_transport_error(exc, per_try)
            logger.debug(
                "%s %s %s -> %s",
                self.service,
                request.method,
                _display_url(request.url),
                type(exc).__name__,
            )
            return None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s %s %s -> %d in %.1f ms",
                self.service,
                request.method,
                _display_url(request.url),
                response.status_code,
                (time.perf_counter() - sent_at) * 1000,
            )
        return response

    def _send(self, request: _Outgoing, timeout: float) -> httpx.Response:
        if request.built is None:
            assert self._wire is not None
            return self._wire.send(
                request.method, request.url, request.headers, request.body, timeout, request.target
            )
        request.built.extensions["timeout"] = httpx.Timeout(timeout).as_dict()
        return self._client.send(request.built)

    def _describe_transport_error(self, exc: httpx.TransportError, per_try: float) -> str:
        if isinstance(exc, httpx.TimeoutException):
            return f"no answer within {per_try:.1f} s ({type(exc).__name__})"
        detail = redact(str(exc)) or "no detail"
        return f"network error {type(exc).__name__}: {detail}"

    def _retry_delay(
        self,
        request: _Outgoing,
        response: httpx.Response | None,
        state: _Attempts,
        not_found: type[QrmiError],
    ) -> float:
        """How long to wait before the next try; raises when the failure is not retryable."""
        policy = self.retry
        if response is None:
            state.transient_retries += 1
            return policy.backoff(state.transient_retries, self._rng)
        status = response.status_code
        state.last_status = status
        state.last_failure = self._describe_response(response)
        if status in policy.throttle_statuses:
            state.throttle_retries += 1
            retry_after = _parse_retry_after(response.headers.get("Retry-After"), time.time())
            return policy.throttle_delay(state.throttle_retries, retry_after, self._rng)
        if status in policy.retry_statuses:
            state.transient_retries += 1
            return policy.backoff(state.transient_retries, self._rng)
        raise self._status_error(request, response, not_found)

    def _wait_or_give_up(
        self, request: _Outgoing, state: _Attempts, budget: float | None, delay: float
    ) -> None:
        elapsed = self._clock() - state.started
        out_of_tries = state.transient_retries >= self.retry.max_attempts or (
            budget is None and state.throttle_retries >= self.retry.max_attempts
        )
        out_of_time = budget is not None and elapsed + delay >= budget
        if out_of_tries or out_of_time:
            raise self._unavailable_error(request, state, elapsed)
        logger.warning(
            "%s: try %d failed (%s); retrying in %.2f s",
            self._where(request),
            state.tries,
            state.last_failure,
            delay,
        )
        self._sleep(delay)

    # -- error construction ------------------------------------------------------------------

    def _describe_response(self, response: httpx.Response) -> str:
        try:
            vendor = self._error_message(response)
        except Exception:  # a broken extractor must not hide the status
            vendor = None
        status = _status_text(response.status_code)
        return f"{status}: {redact(vendor)}" if vendor else status

    def _where(self, request: _Outgoing) -> str:
        return f"{self.service} {request.method} {_display_url(request.url)}"

    def _status_error(
        self, request: _Outgoing, response: httpx.Response, not_found: type[QrmiError]
    ) -> QrmiError:
        status = response.status_code
        what = self._describe_response(response)
        where = self._where(request)
        if status == 404:
            return not_found(
                f"{where} answered {what}. Check that the name or id in the request exists "
                f"at {self.service}."
            )
        if status in _INVALID_INPUT_STATUSES:
            return InvalidInputError(
                f"{where} rejected the request ({what}); correct the input the service's "
                "message points at."
            )
        if status == 403:
            return ServiceError(
                f"{where} refused access: {what}. Check that the credentials for {self.service} "
                "are allowed to use this resource (instance / service CRN / project).",
                status_code=status,
            )
        return ServiceError(f"{where} answered {what}.", status_code=status)

    def _auth_error(
        self, request: _Outgoing, response: httpx.Response, refreshed: bool
    ) -> AuthenticationFailedError:
        what = self._describe_response(response)
        if refreshed:
            cause = "refused a freshly fetched token"
        elif self._auth is None:
            cause = "needs credentials and none are configured"
        else:
            cause = "refused the credentials"
        return AuthenticationFailedError(
            f"{self._where(request)} {cause} ({what}). "
            f"Check the API key / credentials for {self.service}."
        )

    def _unavailable_error(
        self, request: _Outgoing, state: _Attempts, elapsed: float
    ) -> ServiceUnavailableError:
        if state.last_status is None:
            advice = _NETWORK_ADVICE
        else:
            advice = _THROTTLE_ADVICE.get(state.last_status, _TRANSIENT_ADVICE)
        return ServiceUnavailableError(
            f"{self._where(request)} failed after {state.tries} tries in {elapsed:.1f} s; "
            f"last answer: {state.last_failure}. What to do: {advice}.",
            status_code=state.last_status,
        )
