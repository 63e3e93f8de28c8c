"""``qrmi fake serve KIND``: run a vendor fake from :mod:`qrmi.testing` until Ctrl-C."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.markup import escape

from qrmi.cli._common import err, fail, out
from qrmi.errors import QrmiError
from qrmi.tools.runner import EXIT_FAILED, EXIT_USAGE, Interrupted, SignalGuard

__all__ = ["fake_app"]

fake_app = typer.Typer(
    help="Local fakes of the vendor services, for demos and tests.", no_args_is_help=True
)


@fake_app.command("serve")
def serve(
    kind: Annotated[str, typer.Argument(help="Which vendor fake, e.g. ibm-quantum-system.")],
    port: Annotated[
        int, typer.Option(help="TCP port on 127.0.0.1 (0: any free port).", min=0, max=65535)
    ] = 0,
) -> None:
    """Serve the fake KIND on 127.0.0.1, print how to point QRMI at it, and wait for Ctrl-C."""
    testing = _testing_module()
    kinds = list(getattr(testing, "FAKE_SERVERS", {}))
    if kind not in kinds:
        raise fail(
            f"unknown fake server kind {kind!r}; available kinds: {', '.join(kinds) or 'none'}",
            EXIT_USAGE,
        )
    options: dict[str, Any] = {"port": port} if port else {}
    try:
        server = testing.start_fake(kind, **options)
    except QrmiError as exc:
        raise fail(str(exc), EXIT_FAILED) from None
    try:
        _describe(kind, server)
        _serve_until_signal(server)
    finally:
        server.stop()
    err.print("stopped")


def _testing_module() -> Any:
    try:
        import qrmi.testing as testing
    except ImportError as exc:
        raise fail(
            f"the vendor fakes cannot be loaded ({exc}); install them with: "
            "pip install 'pyqrmi[testing]'",
            EXIT_USAGE,
        ) from None
    return testing


def _describe(kind: str, server: Any) -> None:
    out.print(f"fake {escape(kind)} serving at {escape(server.url)}")
    resource = _resource_config(kind, server)
    if resource is not None:
        out.print("resource entry for a qrmi_config.json (test credentials of the fake):")
        out.file.write(json.dumps({"resources": [resource]}, indent=2) + "\n")
        out.print("or, as environment variables:")
        for key, value in resource["environment"].items():
            out.file.write(f"export {resource['name']}_{key}={shlex.quote(value)}\n")
    out.print("press Ctrl-C to stop")
    out.file.flush()


def _resource_config(kind: str, server: Any) -> dict[str, Any] | None:
    """The config entry for the fake: its ``resource_config()``, else built from ``settings``."""
    describe = getattr(server, "resource_config", None)
    if callable(describe):
        return dict(describe())
    settings = getattr(server, "settings", None)
    if callable(settings):
        settings = settings()
    if not isinstance(settings, Mapping):
        return None
    names = getattr(server, "resource_names", None) or [kind.replace("-", "_")]
    return {
        "name": getattr(server, "resource_name", None) or names[0],
        "type": getattr(server, "resource_type", None) or kind,
        "environment": {str(k): str(v) for k, v in settings.items()},
    }


def _serve_until_signal(server: Any) -> None:
    try:
        with SignalGuard():
            while server.running:
                time.sleep(0.2)
    except (Interrupted, KeyboardInterrupt):
        return
    raise fail("the fake server stopped on its own", EXIT_FAILED)
