"""``qrmi run`` (one task from an input file, to its end) and ``qrmi task ...`` (one call each)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from qrmi.cli._common import (
    ConfigOption,
    JsonOption,
    cli_errors,
    err,
    error,
    fail,
    print_json,
)
from qrmi.errors import TaskNotReadyError
from qrmi.models import TaskStatus
from qrmi.protocol import QuantumResourceProtocol
from qrmi.tools.runner import (
    EXIT_OK,
    RunOutcome,
    build_resource,
    check_output_writable,
    exit_code_for_status,
    resolve_resource,
    run_task,
    write_result,
)

__all__ = ["run", "task_app"]

ResourceArg = Annotated[str, typer.Argument(help="Resource name, e.g. ibm_fez or local.")]
TaskIdArg = Annotated[str, typer.Argument(help="Task id, as printed by 'qrmi run'.")]
OutputOption = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Write the result to this file (default: stdout).", dir_okay=False
    ),
]


def run(
    resource: ResourceArg,
    input_file: Annotated[
        Path, typer.Argument(metavar="INPUT", help="Task input file (JSON; see docs/cli.md).")
    ],
    output: OutputOption = None,
    config: ConfigOption = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Give up after this many seconds, counted from the submission to the result "
            "(the task keeps running).",
            min=0,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Run one task on RESOURCE and write its result.

    Exit codes: 0 completed, 1 failed, 2 bad input, 3 cancelled, 4 timed out (the task keeps
    running), 130 Ctrl-C / 143 SIGTERM (the task is cancelled first).
    """
    from qrmi.tools.inputs import load_payload

    with cli_errors():
        check_output_writable(output)
        rdef, _ = resolve_resource(resource, config_path=config)
        payload = load_payload(input_file, rdef.resource_type)
        qpu = build_resource(rdef)
        progress = _Progress(resource, config, show=not json_output)
        try:
            outcome = run_task(
                qpu,
                payload,
                timeout=timeout,
                on_started=progress.started,
                on_status=progress.changed,
            )
        finally:
            progress.stop()
        code = _report(outcome, resource, config, output, json_output, timeout)
    raise typer.Exit(code)


class _Progress:
    """Task id, status changes and elapsed time on stderr (a live spinner on terminals)."""

    def __init__(self, resource: str, config: Path | None, *, show: bool) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._hint = _hint(resource, config)
        self._show = show
        self._live = show and err.is_terminal
        self._start = time.monotonic()
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self._line: Any = None
        self._task = ""

    def started(self, task_id: str) -> None:
        # Printed even with --json: another shell may need the id while this one waits.
        err.print(f"Task ID: {task_id}", markup=False)
        if self._show:
            hint = escape(f"qrmi task status {self._hint} {task_id}")
            err.print(f"[dim]follow it with: {hint}[/]")
        if self._live:
            self._bar.start()
            self._task = escape(task_id)
            self._line = self._bar.add_task(f"task {self._task}: submitted", total=None)

    def changed(self, status: TaskStatus) -> None:
        if not self._show:
            return
        elapsed = time.monotonic() - self._start
        err.print(f"{elapsed:7.1f} s  {status.name}")
        if self._line is not None:
            self._bar.update(self._line, description=f"task {self._task}: {status.name}")

    def stop(self) -> None:
        if self._live:
            self._bar.stop()


def _hint(resource: str, config: Path | None) -> str:
    return f"{resource} --config {config}" if config else resource


def _report(
    outcome: RunOutcome,
    resource: str,
    config: Path | None,
    output: Path | None,
    json_output: bool,
    timeout: float | None,
) -> int:
    task = f"{_hint(resource, config)} {outcome.task_id}"
    if outcome.result is not None:
        _emit_result(outcome, resource, output, json_output)
        return EXIT_OK
    status = outcome.status.name if outcome.status else "unknown"
    if outcome.interrupted_by is not None:
        if outcome.status == TaskStatus.Completed:
            message = f"interrupted; task {outcome.task_id} had completed: qrmi task result {task}"
        else:
            message = f"interrupted; task {outcome.task_id} was stopped (now {status})"
    elif outcome.timed_out and outcome.status == TaskStatus.Completed:
        message = (
            f"task {outcome.task_id} completed, but its result did not arrive within "
            f"{timeout:g} s; fetch it with: qrmi task result {task}"
        )
    elif outcome.timed_out:
        message = (
            f"task {outcome.task_id} is still {status} after {timeout:g} s and keeps running; "
            f"check it with: qrmi task status {task}; cancel it with: qrmi task cancel {task}"
        )
    elif outcome.status == TaskStatus.Failed:
        message = f"task {outcome.task_id} failed: {outcome.reason}"
    else:
        message = f"task {outcome.task_id} was cancelled"
    if json_output:
        print_json(_summary(outcome, resource) | {"error": message})
    error(message)
    return outcome.exit_code


def _emit_result(
    outcome: RunOutcome, resource: str, output: Path | None, json_output: bool
) -> None:
    assert outcome.result is not None
    if output is not None:
        write_result(outcome.result, output)
        err.print(f"result written to {escape(str(output))}")
    if json_output:
        summary = _summary(outcome, resource)
        if output is None:
            summary["result"] = _parsed(outcome.result)
        else:
            summary["output"] = str(output)
        print_json(summary)
    elif output is None:
        write_result(outcome.result, None)


def _summary(outcome: RunOutcome, resource: str) -> dict[str, Any]:
    return {
        "resource": resource,
        "task_id": outcome.task_id,
        "status": outcome.status.name if outcome.status else None,
        "exit_code": outcome.exit_code,
    }


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# ----- qrmi task ---------------------------------------------------------------------------

task_app = typer.Typer(
    help="Inspect or cancel one task: status, result, logs, cancel.", no_args_is_help=True
)


def _resource(name: str, config: Path | None) -> QuantumResourceProtocol:
    rdef, _ = resolve_resource(name, config_path=config)
    return build_resource(rdef)


@task_app.command("status")
def task_status(
    resource: ResourceArg,
    task_id: TaskIdArg,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Print the task's status (Queued, Running, Completed, Failed or Cancelled)."""
    with cli_errors():
        status = _resource(resource, config).task_status(task_id)
    if json_output:
        print_json({"resource": resource, "task_id": task_id, "status": status.name})
    else:
        print(status.name)


@task_app.command("result")
def task_result(
    resource: ResourceArg,
    task_id: TaskIdArg,
    output: OutputOption = None,
    config: ConfigOption = None,
) -> None:
    """Print (or write) the result of a completed task.

    Exits 1 if the task failed, 3 if it was cancelled, 4 if it has not finished yet.
    """
    with cli_errors():
        check_output_writable(output)
        qpu = _resource(resource, config)
        try:
            value = qpu.task_result(task_id).value
        except TaskNotReadyError as exc:
            raise fail(str(exc), exit_code_for_status(qpu.task_status(task_id))) from None
        write_result(value, output)


@task_app.command("logs")
def task_logs(resource: ResourceArg, task_id: TaskIdArg, config: ConfigOption = None) -> None:
    """Print the task's logs (for a failed task: the reason)."""
    with cli_errors():
        text = _resource(resource, config).task_logs(task_id)
    write_result(text, None)


@task_app.command("cancel")
def task_cancel(resource: ResourceArg, task_id: TaskIdArg, config: ConfigOption = None) -> None:
    """Cancel a task that has not finished. A finished task, and its result, are left alone."""
    with cli_errors():
        qpu = _resource(resource, config)
        qpu.task_stop(task_id)  # does nothing to a finished task
        after = qpu.task_status(task_id)
    if after in (TaskStatus.Completed, TaskStatus.Failed):
        err.print(f"task {escape(task_id)} had already finished ({after.name}); nothing to cancel")
    elif after == TaskStatus.Cancelled:
        err.print(f"task {escape(task_id)} is cancelled")
    else:
        err.print(f"task {escape(task_id)}: cancel requested; it is {after.name} for now")
