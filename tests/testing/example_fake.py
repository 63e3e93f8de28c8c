"""A minimal vendor fake built with the kit: the pattern every vendor fake follows.

A FastAPI app with a token endpoint backed by :class:`~qrmi.testing.TokenIssuer` and a small
protected "items" API, served by a :class:`~qrmi.testing.FakeServer` subclass that exposes the
fake's state (here the issuer) to tests.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

from qrmi.testing import FakeServer, TokenIssuer

EXAMPLE_API_KEY = "example-api-key-0000"


def create_app(issuer: TokenIssuer, api_key: str = EXAMPLE_API_KEY) -> FastAPI:
    """The example vendor API."""
    app = FastAPI()
    items: dict[str, Any] = {}

    @app.post("/auth/token")
    async def token(body: dict[str, str]) -> JSONResponse:
        if body.get("api_key") != api_key:
            return JSONResponse({"detail": "invalid API key"}, status_code=400)
        issued = issuer.issue("example-user")
        return JSONResponse({"access_token": issued.token, "expires_in": issued.expires_in})

    @app.put("/api/items/{item_id}", status_code=201)
    async def put_item(
        item_id: str, request: Request, authorization: str | None = Header(None)
    ) -> Any:
        if issuer.validate_header(authorization) is None:
            return JSONResponse({"detail": "token missing or expired"}, status_code=401)
        items[item_id] = await request.json()
        return {"id": item_id}

    @app.get("/api/items/{item_id}")
    async def get_item(item_id: str, authorization: str | None = Header(None)) -> Any:
        if issuer.validate_header(authorization) is None:
            return JSONResponse({"detail": "token missing or expired"}, status_code=401)
        if item_id not in items:
            return JSONResponse({"detail": f"item {item_id} not found"}, status_code=404)
        return {"id": item_id, "value": items[item_id]}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


class ExampleFake(FakeServer):
    """The example fake server; ``issuer`` lets tests expire tokens."""

    def __init__(self, *, port: int = 0, api_key: str = EXAMPLE_API_KEY) -> None:
        self.issuer = TokenIssuer(lifetime=600)
        super().__init__(create_app(self.issuer, api_key), port=port, name="example")


def create_example_fake(**options: Any) -> ExampleFake:
    """Factory in the shape :func:`qrmi.testing.start_fake` expects."""
    return ExampleFake(**options)
