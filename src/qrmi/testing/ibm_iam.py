"""A fake of IBM Cloud IAM's API-key token exchange (``POST /identity/token``).

The request is form-encoded ``grant_type=urn:ibm:params:oauth:grant-type:apikey&apikey=KEY``;
the answer is IAM's ``{"access_token", "refresh_token", "token_type": "Bearer", "expires_in",
"expiration", "scope", "ims_user_id"}``. Errors use IAM's ``{"errorCode", "errorMessage",
"context"}`` body: a missing or wrong content type or grant type is a 400 ``BXNIM0109E`` /
``BXNIM0103E``; an unknown API key a 400 ``BXNIM0415E``, as the real service answers.

Tokens come from a :class:`~qrmi.testing.TokenIssuer` that the vendor API fakes share to
validate ``Authorization`` headers; :meth:`IamFake.expire_all` makes every issued token invalid
so that tests can watch clients refresh.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from qrmi.testing.auth import TokenIssuer
from qrmi.testing.server import FakeServer

__all__ = ["APIKEY_GRANT", "IamFake", "create_iam_app"]

APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"


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
        self.issuer = issuer or TokenIssuer(lifetime=token_lifetime, prefix="iam")
        super().__init__(create_iam_app(self.issuer, api_keys), host=host, port=port, name="iam")

    def expire_all(self) -> None:
        """Invalidate every issued token: the next API call gets 401 and must refresh."""
        self.issuer.expire_all()
