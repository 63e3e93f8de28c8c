"""``qrmi resources``: the configured resources and what each reports about itself."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from qrmi.cli._common import ConfigOption, JsonOption, cli_errors, out, print_json
from qrmi.config import Config, ResourceDef
from qrmi.errors import ConfigError
from qrmi.log import redact
from qrmi.models import ResourceStatus, ResourceType

__all__ = ["resources"]


@dataclass
class _Row:
    rdef: ResourceDef
    in_job: bool
    status: ResourceStatus | None = None
    error: str | None = None

    @property
    def type_string(self) -> str:
        kind = self.rdef.resource_type
        return kind.type_string if isinstance(kind, ResourceType) else kind

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.rdef.name,
            "type": self.type_string,
            "dynamic": self.rdef.is_dynamic,
            "in_job": self.in_job,
            "status": None,
            "error": self.error,
        }
        if self.status is not None:
            data.update(self.status.to_dict())
        return data


def resources(
    config: ConfigOption = None,
    json_output: JsonOption = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each resource to answer.", min=0.1)
    ] = 15.0,
) -> None:
    """List the configured resources with their type and live status.

    Inside a job (QRMI_JOB_QPU_RESOURCES set) the job's resources are listed too and marked.
    A resource that cannot be reached shows its error in its row.
    """
    with cli_errors():
        loaded = Config.find(config)
        rows = _rows(loaded or Config.default(), _job_resources())
    _query(rows, timeout)
    if json_output:
        print_json(
            {
                "config": str(loaded.path) if loaded and loaded.path else None,
                "job_resources": _job_names(rows),
                "resources": [row.to_dict() for row in rows],
            }
        )
        return
    _print_table(rows, loaded)


def _job_resources() -> dict[str, ResourceType | str] | None:
    from qrmi.job import get_job_qpu_resources_and_types
    from qrmi.registry import parse_type

    try:
        names, types = get_job_qpu_resources_and_types()
    except RuntimeError:  # not inside a QPU job
        return None
    except ValueError as exc:
        raise ConfigError(f"the job's QPU variables are inconsistent: {exc}") from None
    return {name: parse_type(kind) for name, kind in zip(names, types, strict=True)}


def _rows(config: Config, job: dict[str, ResourceType | str] | None) -> list[_Row]:
    held = job or {}
    rows = [_Row(rdef, name in held) for name, rdef in config.resource_map.items()]
    for name, kind in held.items():
        if name not in config.resource_map:
            rows.append(_Row(ResourceDef(name, kind), True))
    return rows


def _job_names(rows: list[_Row]) -> list[str] | None:
    if "QRMI_JOB_QPU_RESOURCES" not in os.environ and "SLURM_JOB_QPU_RESOURCES" not in os.environ:
        return None
    return [row.rdef.name for row in rows if row.in_job]


def _query(rows: list[_Row], timeout: float) -> None:
    """Ask every static resource for its status at once; a slow one costs ``timeout`` at most."""
    threads = []
    for row in rows:
        if row.rdef.is_dynamic:
            continue
        thread = threading.Thread(target=_query_one, args=(row,), daemon=True)
        thread.start()
        threads.append((row, thread))
    deadline = time.monotonic() + timeout
    for row, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            row.error = f"no answer within {timeout:g} s"


def _query_one(row: _Row) -> None:
    from qrmi.tools.runner import build_resource

    try:
        row.status = build_resource(row.rdef).status()
    except Exception as exc:  # one broken resource must not hide the others
        row.error = f"{type(exc).__name__}: {redact(str(exc))}"


def _print_table(rows: list[_Row], loaded: Config | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    source = str(loaded.path) if loaded and loaded.path else "built-in default (no config file)"
    table = Table(title=f"QRMI resources ({escape(source)})", title_justify="left")
    for column in ("NAME", "TYPE", "STATUS", "SLOTS", "QUEUE"):
        table.add_column(column, no_wrap=True)
    table.add_column("NOTE", overflow="fold", min_width=12)
    for row in rows:
        table.add_row(*_cells(row))
    out.print(table)
    # Errors are long: under the table they stay readable on a narrow terminal.
    for row in rows:
        if row.error:
            out.print(f"[red]{escape(row.rdef.name)}:[/] {escape(row.error)}")
    if _job_names(rows) is not None:
        held = [row.rdef.name for row in rows if row.in_job]
        out.print(f"This job holds: {escape(', '.join(held) or '(no QPU resources)')}")


def _cells(row: _Row) -> tuple[str, ...]:
    from rich.markup import escape

    name = escape(row.rdef.name) + (" [bold](job)[/]" if row.in_job else "")
    if row.rdef.is_dynamic:
        return name, row.type_string, "provider", "", "", "dynamic: found at use"
    if row.status is None:
        return name, row.type_string, "[red]error[/]", "", "", "see below"
    status = row.status
    word = status.status.name.lower()
    colour = {"online": "green", "offline": "red", "paused": "yellow"}.get(word, "white")
    slots = (
        f"{status.capacity.available_slots}/{status.capacity.max_slots}" if status.capacity else "-"
    )
    queue = "-" if status.pending_job_count is None else str(status.pending_job_count)
    return (
        name,
        row.type_string,
        f"[{colour}]{word}[/]",
        slots,
        queue,
        escape(status.status_reason or ""),
    )
