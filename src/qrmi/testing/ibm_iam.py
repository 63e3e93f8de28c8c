"""A fake of IBM Cloud IAM's API-key token exchange (``POST /identity/token``).

The request is form-encoded ``grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=KEY``;
the answer is IAM's ``{"access_token", "refresh_token", "token_type": "Bearer", "expires_in",
"expiration", "scope", "ims_user_id"}``. Errors use IAM's ``{"errorCode", "errorMessage",
"context"}`` body: a missing or wrong content type or grant type is a 400 ``BXNIM0109E`` /
``BXNIM0103E``; an unknown API key a 400 ``BXNIM0415E``, as the real service answers.

Access tokens are JWT-shaped, as IAM's are: ``header.claims.signature`` in base64url, with the
claims IBM's SDKs read (``iat``, ``exp``, ``iss``, ``sub``, ``iam_id``, ``scope``, ...).
``ibm-cloud-sdk-core``'s ``IAMAuthenticator`` decodes the access token (without checking the
signature) to schedule its refresh, so an opaque token makes it crash. The signature is random
bytes: nobody can verify it, and nothing should.

Tokens come from an :class:`IamTokenIssuer` (a :class:`~qrmi.testing.TokenIssuer`) that the
vendor API fakes share to validate ``Authorization`` headers; :meth:`IamFake.expire_all` makes
every issued token invalid so that tests can watch clients refresh.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from qrmi.testing.auth import IssuedToken, TokenIssuer
from qrmi.testing.server import FakeServer

__all__ = ["APIKEY_GRANT", "IamFake", "IamTokenIssuer", "create_iam_app", "token_claims"]

APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"
IAM_ISSUER = "https://iam.cloud.ibm.com/identity"
FAKE_IAM_ID = "iam-ServiceId-00000000-0000-0000-0000-000000000000"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT-shaped token (signature not checked), or ``None`` if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(_b64url_decode(parts[1]))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


class IamTokenIssuer(TokenIssuer):
    """A :class:`TokenIssuer` whose tokens are JWT-shaped like IBM Cloud IAM's.

    The issuer's own opaque token travels as the ``jti`` claim, so validity, expiry and
    revocation stay the base class's.
    """

    def issue(self, subject: str = "", *, lifetime: float | None = None) -> IssuedToken:
        """A new JWT-shaped access token for ``subject``."""
        opaque = super().issue(subject, lifetime=lifetime)
        issued_at = int(opaque.expires_at - opaque.expires_in)
        claims = {
            "iam_id": FAKE_IAM_ID,
            "id": FAKE_IAM_ID,
            "realmid": "iam",
            "jti": opaque.token,
            "identifier": "ServiceId-00000000-0000-0000-0000-000000000000",
            "name": subject or "fake-service-id",
            "sub": "ServiceId-00000000-0000-0000-0000-000000000000",
            "sub_type": "ServiceId",
            "account": {"valid": True, "bss": "fake0000", "frozen": True},
            "iat": issued_at,
            "exp": int(opaque.expires_at),
            "iss": IAM_ISSUER,
            "grant_type": APIKEY_GRANT,
            "scope": "ibm openid",
            "client_id": "default",
            "acr": 1,
            "amr": ["pwd"],
        }
        header = {"kid": "fake-iam-key", "alg": "RS256"}
        token = ".".join(
            (
                _b64url(json.dumps(header, separators=(",", ":")).encode()),
                _b64url(json.dumps(claims, separators=(",", ":")).encode()),
                _b64url(secrets.token_bytes(64)),
            )
        )
        return IssuedToken(token, opaque.subject, opaque.expires_in, opaque.expires_at)

    def validate(self, token: str | None) -> IssuedToken | None:
        """The issued token if ``token`` is a JWT this issuer made and is still valid."""
        claims = token_claims(token) if token else None
        jti = claims.get("jti") if claims else None
        if not isinstance(jti, str) or (opaque := super().validate(jti)) is None:
            return None
        assert token is not None
        return IssuedToken(token, opaque.subject, opaque.expires_in, opaque.expires_at)

    def revoke(self, token: str) -> None:
        """Make ``token`` invalid."""
        claims = token_claims(token)
        jti = claims.get("jti") if claims else None
        super().revoke(jti if isinstance(jti, str) else token)


def _iam_error(status: int, code: str, message: str) -> Any:
    body = {
        "errorCode": code,
        "errorMessage": message,
        "context": {"requestId": uuid.uuid4().hex, "requestType": "incoming.Identity_Token"},
    }
    return JSONResponse(body, status_code=status)


def create_iam_app(issuer: TokenIssuer, api_keys: Iterable[str]) -> Any:
    """The IAM FastAPI app: tokens from ``issuer`` for any key in ``api_keys``."""
    keys = frozenset(api_keys)
    app = FastAPI(title="fake IBM Cloud IAM", openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/identity/token")
    async def token(request: Request) -> Any:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return _iam_error(
                400, "BXNIM0109E", "Property missing or empty. Operation not allowed."
            )
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        grant_type = form.get("grant_type")
        apikey = form.get("apikey")
        if grant_type != APIKEY_GRANT:
            return _iam_error(400, "BXNIM0103E", "Unsupported grant type.")
        if not isinstance(apikey, str) or not apikey:
            return _iam_error(400, "BXNIM0109E", "Property missing or empty.")
        if apikey not in keys:
            return _iam_error(400, "BXNIM0415E", "Provided API key could not be found.")
        issued = issuer.issue(subject="iam-apikey")
        return JSONResponse(
            {
                "access_token": issued.token,
                "refresh_token": "not_supported",
                "ims_user_id": 1,
                "token_type": "Bearer",
                "expires_in": int(issued.expires_in),
                "expiration": int(issued.expires_at),
                "scope": "ibm openid",
            }
        )

    return app


class IamFake(FakeServer):
    """The fake IAM on 127.0.0.1; ``issuer`` validates the tokens it hands out."""

    def __init__(
        self,
        api_keys: Iterable[str],
        *,
        issuer: TokenIssuer | None = None,
        token_lifetime: float = 3600.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.issuer = issuer or IamTokenIssuer(lifetime=token_lifetime, prefix="iam")
        super().__init__(create_iam_app(self.issuer, api_keys), host=host, port=port, name="iam")

    def expire_all(self) -> None:
        """Invalidate every issued token: the next API call gets 401 and must refresh."""
        self.issuer.expire_all()
