"""``qrmi accounting``: QPU use recorded by the gateway, shaped like ``sacct`` and ``sreport``.

* ``qrmi accounting job JOBID``: the Slurm job's tasks, one row each;
* ``qrmi accounting totals --by user,account,qpu --start ... --end ...``: totals per group.

Both read the gateway's store (``--store``, the same default as ``qrmi gateway --store``) and
print a table, CSV or JSON (``--format``). Only Typer is imported here, so that ``qrmi --help``
stays fast; the store and matplotlib are imported when a command runs.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qrmi.cli._common import JsonOption, cli_errors, err, fail, out, print_json, warn
from qrmi.cli.gateway import _DEFAULT_STORE as DEFAULT_STORE
from qrmi.tools.runner import EXIT_USAGE

if TYPE_CHECKING:
    from qrmi.gateway.store import Store, UsageRecord
    from qrmi.gateway.usage import UsageTotal

__all__ = ["accounting_app"]

accounting_app = typer.Typer(
    help="QPU use recorded by the gateway: a job's tasks, totals per user, account and QPU.",
    no_args_is_help=True,
)

#: Default window of ``totals``: the last seven days, as ``sreport`` does for a week.
DEFAULT_DAYS = 7
FORMATS = ("table", "csv", "json")

StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        help="The gateway's store: its SQLite file (as given to 'qrmi gateway --store') or a "
        "database URL.",
    ),
]
FormatOption = Annotated[
    str, typer.Option("--format", "-o", help="table, csv or json (exact numbers).")
]

#: Columns of ``job``: heading, and how to read it from a usage record.
_TASK_COLUMNS = (
    "task_id",
    "qpu",
    "qpu_type",
    "state",
    "submitted",
    "started",
    "ended",
    "qpu_seconds",
    "source",
    "shots",
    "input_bytes",
    "result_bytes",
    "user",
    "account",
    "partition",
    "payload_kind",
    "program",
)


@accounting_app.command("job")
def job(
    job_id: Annotated[str, typer.Argument(metavar="JOBID", help="The Slurm job id.")],
    store: StoreOption = DEFAULT_STORE,
    output_format: FormatOption = "table",
    json_output: JsonOption = False,
) -> None:
    """The tasks a Slurm job ran through the gateway: QPU, state, times, QPU seconds, sizes.

    QPU seconds are the vendor's billed QPU time where its API reports one (source
    'vendor'), else the vendor's running time ('vendor-running'), else the running time the
    gateway saw ('gateway'); empty while the task has not ended.
    """
    output_format = _check_format("json" if json_output else output_format)
    with cli_errors():
        records = _read(store, lambda db: db.usage(slurm_job_id=job_id))
    if not records:
        warn(f"no tasks are recorded for job {job_id} in {store}")
    rows = [_task_row(record) for record in records]
    if output_format == "json":
        print_json({"job": job_id, "tasks": rows, "total": _job_total(records)})
    elif output_format == "csv":
        _write_csv(list(_TASK_COLUMNS), rows)
    else:
        _print_table(_job_title(job_id, records), list(_TASK_TABLE), rows)


@accounting_app.command("totals")
def totals(
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by",
            help="Group by user, account, partition or qpu (repeat it or give a comma list; "
            "default: account).",
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="Tasks submitted from then: ISO date or date-time (default: 7 days "
            "before --end); local time unless it names a zone."
        ),
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Tasks submitted before then (default: now).")
    ] = None,
    store: StoreOption = DEFAULT_STORE,
    output_format: FormatOption = "table",
    json_output: JsonOption = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Also draw QPU seconds per account over time into FILE.png or FILE.svg.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """QPU seconds and task counts per user, account, partition or QPU over a time window."""
    from qrmi.gateway.usage import plot_usage, usage_series, usage_totals

    output_format = _check_format("json" if json_output else output_format)
    fields = _group_fields(by or ["account"])
    window_start, window_end = _window(start, end)
    with cli_errors():
        records = _read(store, lambda db: db.usage(start=window_start, end=window_end))
        groups = usage_totals(records, fields)
        if plot is not None:
            series = usage_series(records, window_start, window_end)
            title = f"QPU seconds per account, {_day(window_start)} to {_day(window_end)}"
            plot_usage(series, plot, title=title)
    rows = [_total_row(fields, total) for total in groups]
    if output_format == "json":
        print_json(
            {
                "start": _iso(window_start),
                "end": _iso(window_end),
                "by": fields,
                "totals": rows,
                "total": _total_row([], *usage_totals(records, [])) if records else None,
            }
        )
    elif output_format == "csv":
        _write_csv([*fields, *_TOTAL_COLUMNS], rows)
    else:
        heading = f"QPU use from {_local(window_start)} to {_local(window_end)}"
        _print_table(heading, [*fields, *_TOTAL_COLUMNS], rows)
    if plot is not None:
        err.print(f"plot written to {plot}", markup=False)


# ----- reading the store -------------------------------------------------------------------


def _read(location: str, query: Any) -> list[UsageRecord]:
    """``query(store)`` on the gateway's store at ``location``, which must exist already."""
    from qrmi.errors import ConfigError

    if "://" not in location:
        path = Path(location)
        if not path.is_file():
            raise ConfigError(
                f"no gateway store at {location}: give the file the gateway keeps its jobs "
                "in (its --store option; default " + DEFAULT_STORE + ")"
            )
    store = _open(location)
    try:
        result: list[UsageRecord] = query(store)
        return result
    except Exception as exc:  # sqlite3/psycopg errors: the store is not one we can read
        raise _store_error(location, exc) from None
    finally:
        store.close()


def _open(location: str) -> Store:
    from qrmi.gateway.store import Store

    try:
        return Store(location)
    except Exception as exc:
        raise _store_error(location, exc) from None


def _store_error(location: str, exc: Exception) -> Exception:
    from qrmi.errors import ConfigError

    return ConfigError(
        f"cannot read the gateway store {location}: {exc} (is it the gateway's store, and "
        "may this user read it? The gateway's store is readable by root only)"
    )


# ----- options -----------------------------------------------------------------------------


def _check_format(output_format: str) -> str:
    if output_format not in FORMATS:
        raise fail(f"unknown --format {output_format!r}; choose table, csv or json", EXIT_USAGE)
    return output_format


def _group_fields(values: Sequence[str]) -> list[str]:
    from qrmi.gateway.usage import GROUP_FIELDS

    fields: list[str] = []
    for value in values:
        for name in (part.strip().lower() for part in value.split(",")):
            if name not in GROUP_FIELDS:
                choices = ", ".join(GROUP_FIELDS)
                raise fail(f"cannot group by {name!r}; --by takes {choices}", EXIT_USAGE)
            if name not in fields:
                fields.append(name)
    return fields


def _window(start: str | None, end: str | None) -> tuple[float, float]:
    """``(start, end)`` in seconds since the epoch: default the last :data:`DEFAULT_DAYS`."""
    import time

    window_end = _moment(end, "--end") if end is not None else time.time()
    window_start = (
        _moment(start, "--start") if start is not None else window_end - DEFAULT_DAYS * 86400
    )
    if window_start >= window_end:
        raise fail(
            f"--start ({_local(window_start)}) must be before --end ({_local(window_end)})",
            EXIT_USAGE,
        )
    return window_start, window_end


def _moment(text: str, option: str) -> float:
    """An ISO date or date-time (``now`` too) as seconds since the epoch; naive is local."""
    from datetime import datetime

    value = text.strip()
    if value.lower() == "now":
        return datetime.now().timestamp()
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(
            f"{option} {text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] "
            "(local time unless a zone such as Z or +02:00 follows)",
            EXIT_USAGE,
        ) from None
    return moment.timestamp()  # a naive date-time is local time, as sacct reads it


# ----- rows --------------------------------------------------------------------------------

_TOTAL_COLUMNS = ("tasks", "qpu_seconds", "unpriced", "shots", "input_bytes", "result_bytes")


def _task_row(record: UsageRecord) -> dict[str, Any]:
    return {
        "task_id": record.task_id,
        "qpu": record.qpu,
        "qpu_type": record.qpu_type,
        "state": record.state,
        "submitted": _iso(record.submitted),
        "started": _iso(record.started),
        "ended": _iso(record.ended),
        "qpu_seconds": record.quantum_seconds,
        "source": record.usage_source,
        "shots": record.shots,
        "input_bytes": record.input_bytes,
        "result_bytes": record.result_bytes,
        "user": record.user_name,
        "account": record.account,
        "partition": record.partition,
        "payload_kind": record.payload_kind,
        "program": record.program,
    }


def _job_total(records: list[UsageRecord]) -> dict[str, Any] | None:
    from qrmi.gateway.usage import usage_totals

    return _total_row([], *usage_totals(records, [])) if records else None


def _total_row(fields: Sequence[str], total: UsageTotal) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(fields, total.key, strict=True))
    row.update(
        tasks=total.tasks,
        qpu_seconds=total.qpu_seconds,
        unpriced=total.unpriced,
        shots=total.shots,
        input_bytes=total.input_bytes,
        result_bytes=total.result_bytes,
    )
    return row


# ----- output ------------------------------------------------------------------------------


def _write_csv(columns: list[str], rows: list[dict[str, Any]]) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {key: "" if value is None else value for key, value in row.items()} for row in rows
    )
    sys.stdout.flush()


#: Columns of the ``job`` table (the CSV and JSON have them all): who ran the job is in its title.
_TASK_TABLE = tuple(
    column
    for column in _TASK_COLUMNS
    if column not in ("qpu_type", "user", "account", "partition", "payload_kind", "program")
)
#: Table headings, where the field's name is not the best one for people.
_HEADINGS = {
    "task_id": "task",
    "qpu": "QPU",
    "started": "start",
    "ended": "end",
    "qpu_seconds": "QPU seconds",
    "input_bytes": "input B",
    "result_bytes": "result B",
}
_NUMERIC = frozenset({*_TOTAL_COLUMNS, "shots", "input_bytes", "result_bytes"})


def _job_title(job_id: str, records: list[UsageRecord]) -> str:
    who = {(r.user_name, r.account, r.partition) for r in records}
    if len(who) != 1:
        return f"Tasks of job {job_id}"
    ((user, account, partition),) = who
    return f"Tasks of job {job_id} (user {user or '-'}, account {account or '-'}, " + (
        f"partition {partition or '-'})"
    )


def _print_table(title: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(
            _HEADINGS.get(column, column),
            justify="right" if column in _NUMERIC else "left",
            overflow="fold",  # a narrow terminal folds ids and times rather than cut them
        )
    for row in rows:
        table.add_row(*(_cell(column, row.get(column)) for column in columns))
    out.print(table)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "qpu_seconds":
        return f"{value:.3f}"
    if column in ("submitted", "started", "ended"):
        return _local_text(value)
    return str(value)


def _iso(when: float | None) -> str | None:
    """UTC ISO 8601 with microseconds (JSON and CSV: exact and unambiguous)."""
    from datetime import UTC, datetime

    return None if when is None else datetime.fromtimestamp(when, UTC).isoformat()


def _local(when: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(when).strftime("%Y-%m-%dT%H:%M:%S")


def _local_text(iso: str) -> str:
    """A UTC ISO time shown in local time to the second, as ``sacct`` shows times."""
    from datetime import datetime

    return _local(datetime.fromisoformat(iso).timestamp())


def _day(when: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(when).strftime("%Y-%m-%d")
