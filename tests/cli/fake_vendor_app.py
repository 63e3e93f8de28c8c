"""A tiny vendor fake for ``qrmi fake serve`` tests, and a script running ``qrmi`` with it.

python fake_vendor_app.py fake serve cli-test --port 0
"""

from __future__ import annotations

import sys
from typing import Any

from qrmi.testing import FakeServer, register_fake

KIND = "cli-test"
API_KEY = "fake-key-123"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app answering every request with ``ok``."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class CliTestFake(FakeServer):
    resource_type = "local-emulator"

    def settings(self) -> dict[str, str]:
        return {"QRMI_CLI_TEST_ENDPOINT": self.url, "QRMI_CLI_TEST_APIKEY": API_KEY}


def serve(*, port: int = 0) -> CliTestFake:
    return CliTestFake(app, port=port, name=KIND)


if __name__ == "__main__":
    register_fake(KIND, "fake_vendor_app:serve")
    from qrmi.cli import app as cli

    sys.argv = ["qrmi", *sys.argv[1:]]
    cli(prog_name="qrmi")
