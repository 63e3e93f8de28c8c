"""What every command shares: the consoles, the ``--config`` option and error reporting.

Results go to stdout; progress, task ids, warnings and errors to stderr, so that
``qrmi run ... > result.json`` captures the result alone.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from qrmi.errors import QrmiError
from qrmi.log import redact
from qrmi.tools.runner import Interrupted, exit_code_for_error

__all__ = [
    "ConfigOption",
    "JsonOption",
    "cli_errors",
    "err",
    "error",
    "fail",
    "out",
    "print_json",
    "warn",
]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="QRMI config file (default: $QRMI_CONFIG_FILE, /etc/slurm/qrmi_config.json, "
        "/etc/qrmi/qrmi_config.json, else the built-in 'local' emulator).",
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def error(message: str) -> None:
    """Print ``message`` as an error on stderr."""
    err.print(f"[bold red]error:[/] {escape(redact(message))}")


def fail(message: str, code: int) -> typer.Exit:
    """Print ``message`` as an error on stderr; return the ``typer.Exit`` to raise."""
    error(message)
    return typer.Exit(code)


def warn(message: str) -> None:
    """Print a warning on stderr."""
    err.print(f"[yellow]warning:[/] {escape(redact(message))}")


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout (no markup, no wrapping)."""
    out.file.write(json.dumps(data, indent=2) + "\n")
    out.file.flush()


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn QRMI errors and signals into a one-line message and the documented exit code."""
    try:
        yield
    except QrmiError as exc:
        raise fail(str(exc), exit_code_for_error(exc)) from None
    except (Interrupted, KeyboardInterrupt) as exc:
        raise fail("interrupted", exit_code_for_error(exc)) from None
