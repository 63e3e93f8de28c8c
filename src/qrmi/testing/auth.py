"""A token issuer that vendor fakes embed in their auth endpoints.

Each vendor's token endpoint has its own request and response shapes (IBM IAM, Pasqal's OAuth,
...), so fakes write those themselves; :class:`TokenIssuer` holds what they share: opaque tokens
with an expiry, validation of ``Authorization`` headers, "expire every token now" for tests of
token refresh, and a count of tokens issued.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from qrmi.errors import InvalidInputError

__all__ = ["IssuedToken", "TokenIssuer"]


@dataclass(frozen=True)
class IssuedToken:
    """A token handed out by :class:`TokenIssuer`.

    ``expires_in`` is the lifetime in seconds, ``expires_at`` the issuer clock's time of expiry
    (with the default clock, unix seconds: IBM IAM's ``expiration`` field).
    """

    token: str
    subject: str
    expires_in: float
    expires_at: float

    def __repr__(self) -> str:
        return f"IssuedToken(subject={self.subject!r}, expires_in={self.expires_in})"


class TokenIssuer:
    """Issues and validates opaque bearer tokens; thread-safe.

    ``lifetime`` is the default token lifetime in seconds; ``clock`` (default :func:`time.time`)
    is injectable so tests can move time forward.
    """

    def __init__(
        self,
        *,
        lifetime: float = 3600.0,
        clock: Callable[[], float] = time.time,
        prefix: str = "fake",
    ) -> None:
        if lifetime <= 0:
            raise InvalidInputError(f"token lifetime must be positive seconds; got {lifetime}.")
        self.lifetime = lifetime
        self._clock = clock
        self._prefix = prefix
        self._lock = threading.Lock()
        self._tokens: dict[str, IssuedToken] = {}
        self._issued = 0

    def issue(self, subject: str = "", *, lifetime: float | None = None) -> IssuedToken:
        """A new token for ``subject`` valid for ``lifetime`` seconds (default :attr:`lifetime`)."""
        seconds = self.lifetime if lifetime is None else lifetime
        if seconds <= 0:
            raise InvalidInputError(f"token lifetime must be positive seconds; got {seconds}.")
        token = f"{self._prefix}-{secrets.token_urlsafe(24)}"
        issued = IssuedToken(token, subject, seconds, self._clock() + seconds)
        with self._lock:
            self._tokens[token] = issued
            self._issued += 1
        return issued

    def validate(self, token: str | None) -> IssuedToken | None:
        """The issued token if ``token`` is known and not expired or revoked, else ``None``."""
        if not token:
            return None
        with self._lock:
            issued = self._tokens.get(token)
        if issued is None or self._clock() >= issued.expires_at:
            return None
        return issued

    def validate_header(
        self, authorization: str | None, scheme: str = "Bearer"
    ) -> IssuedToken | None:
        """Validate an ``Authorization: <scheme> <token>`` header value (scheme any case)."""
        if not authorization:
            return None
        given_scheme, _, token = authorization.partition(" ")
        if given_scheme.lower() != scheme.lower():
            return None
        return self.validate(token.strip())

    def expire_all(self) -> None:
        """Make every token issued so far invalid (the next requests get 401)."""
        with self._lock:
            self._tokens.clear()

    def revoke(self, token: str) -> None:
        """Make ``token`` invalid."""
        with self._lock:
            self._tokens.pop(token, None)

    @property
    def issued_count(self) -> int:
        """How many tokens have been issued since construction."""
        with self._lock:
            return self._issued

    @property
    def active_count(self) -> int:
        """How many issued tokens are still valid."""
        now = self._clock()
        with self._lock:
            return sum(1 for issued in self._tokens.values() if now < issued.expires_at)
