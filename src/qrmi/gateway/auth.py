"""Who may call the gateway: job tokens, root's MUNGE credential, admin tokens.

* **Job tokens** are random (``secrets.token_urlsafe(32)``, 256 bits) and only their SHA-256
  hash is stored; they are presented as ``Authorization: Bearer <token>``.
* **MUNGE credentials** (header ``X-Munge-Cred``) prove that the caller is root (uid 0) on a host
  sharing the cluster's MUNGE key: the Slurm helper at job start and end, and admins. A
  credential carries a payload binding it to one request, body included
  (:func:`munge_binding`), is accepted once (``munged`` refuses a replay; the gateway also
  remembers the credentials it accepted, across its restarts) and only while MUNGE deems it
  fresh (its TTL, 5 minutes by default).
* **Admin tokens**: the SHA-256 hashes listed in the admin token file (one ``sha256:<hex>`` per
  line, or a token in clear text, which is hashed on load).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "MUNGE_HEADER",
    "AuthError",
    "MungeVerifier",
    "bearer_token",
    "body_digest",
    "hash_token",
    "load_admin_hashes",
    "munge_binding",
    "new_token",
]

#: The header carrying a MUNGE credential.
MUNGE_HEADER = "X-Munge-Cred"
#: How long a used credential is remembered (longer than MUNGE's default TTL of 300 s).
REMEMBER_CREDENTIALS_SECONDS = 3600.0


class AuthError(Exception):
    """A caller could not be authenticated (401) or is not allowed (403)."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


def new_token() -> str:
    """A fresh job or admin token (URL-safe text, 256 random bits)."""
    return secrets.token_urlsafe(32)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header value (scheme in any case)."""
    if authorization is None:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def hash_token(token: str) -> str:
    """``sha256:<hex>`` of a token: the only form in which tokens are stored."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", errors="replace")).hexdigest()


def body_digest(body: bytes) -> str:
    """``sha256:<hex>`` of a request body, as :func:`munge_binding` binds it."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def munge_binding(method: str, path: str, body: bytes = b"") -> bytes:
    """The payload a MUNGE credential must carry to authorise ``method path`` with ``body``
    (the exact bytes sent; empty for a request without one).

    Binding the credential to the whole request means a credential captured in transit cannot
    be used for another operation, another job, or the same call with other arguments (other
    QPUs, another uid), within its lifetime.
    """
    return f"qrmi-gateway {method.upper()} {path} {body_digest(body)}".encode()


def _binding_text(method: str, path: str, digest: str) -> str:
    return f"qrmi-gateway {method.upper()} {path} {digest}"


def load_admin_hashes(path: str | Path | None) -> frozenset[str]:
    """The admin token hashes in ``path`` (none when ``path`` is None).

    Raises:
        AuthError: never; a missing or unreadable file raises ``OSError`` for the caller to
            report at start-up.
    """
    if path is None:
        return frozenset()
    hashes = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        hashes.add(entry if entry.startswith("sha256:") else hash_token(entry))
    return frozenset(hashes)


def is_admin_token(token: str, hashes: frozenset[str]) -> bool:
    """Whether ``token`` hashes to one of ``hashes`` (constant-time comparison)."""
    digest = hash_token(token)
    return any(hmac.compare_digest(digest, known) for known in hashes)


class MungeVerifier:
    """Checks that a MUNGE credential is root's, fresh, unused and bound to the request.

    ``remember(digest, forget_after)`` records an accepted credential and returns False if it
    was already recorded (the store's replay guard).
    """

    def __init__(
        self,
        socket: str | None,
        remember: Callable[[str, float], bool],
        clock: Callable[[], float],
    ) -> None:
        from qrmi.backends._munge import Munge

        self._munge = Munge(socket)
        self._remember = remember
        self._clock = clock

    @property
    def socket(self) -> str:
        """The ``munged`` socket used to decode credentials."""
        return self._munge.socket

    def verify_root(
        self, credential: str | None, method: str, path: str, body_sha256: str | None = None
    ) -> None:
        """Accept the credential or raise :class:`AuthError` saying why not.

        ``body_sha256`` is :func:`body_digest` of the request's body as received (``None``:
        the request had none).
        """
        from qrmi.backends._munge import MungeError

        expected = _binding_text(method, path, body_sha256 or body_digest(b""))
        if not credential:
            raise AuthError(
                f"{method} {path} needs root's MUNGE credential in the {MUNGE_HEADER} header "
                f"(made with payload 'qrmi-gateway {method.upper()} {path} sha256:<hex of the "
                "request body>')"
            )
        try:
            identity = self._munge.decode(credential.strip())
        except MungeError as exc:
            raise AuthError(f"the MUNGE credential was refused: {exc}") from None
        if identity.uid != 0:
            raise AuthError(
                f"{method} {path} is for root on a cluster node; the MUNGE credential is "
                f"uid {identity.uid}'s",
                status=403,
            )
        if identity.payload != expected.encode():
            raise AuthError(
                f"the MUNGE credential was made for another request (another method, path or "
                f"body); make a fresh one per request with payload 'qrmi-gateway "
                f"{method.upper()} {path} sha256:<hex of the exact body sent>'"
            )
        digest = hashlib.sha256(credential.strip().encode()).hexdigest()
        if not self._remember(digest, self._clock() + REMEMBER_CREDENTIALS_SECONDS):
            raise AuthError("the MUNGE credential was already used (replayed); make a fresh one")
