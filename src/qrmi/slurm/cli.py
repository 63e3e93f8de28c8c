"""``qrmi slurm ...``: admin commands for the Slurm integration (a Typer sub-app, ``app``).

Also runnable as ``python -m qrmi.slurm.cli``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from qrmi.errors import QrmiError
from qrmi.slurm import admin

__all__ = ["app"]

DEFAULT_CONFIG = Path("/etc/slurm/qrmi_config.json")
DEFAULT_STATE_DIR = Path("/var/lib/qrmi-slurm")

app = typer.Typer(
    name="slurm",
    help="Slurm integration: QPU licenses, setup checks, the Epilog safety net, job leases.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

ConfigArg = Annotated[Path, typer.Option("--config", "-c", help="qrmi_config.json to read.")]
StateDirArg = Annotated[
    Path, typer.Option("--state-dir", help="The helper's per-job state (plugstack state_dir=).")
]


def _die(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _parse_counts(items: list[str]) -> dict[str, int]:
    counts = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            raise _die(f"--count {item!r} must look like NAME=N, e.g. --count ibm_fez=2")
        counts[name] = int(value)
    return counts


@app.command()
def licenses(
    config: ConfigArg = DEFAULT_CONFIG,
    count: Annotated[
        list[str] | None,
        typer.Option("--count", help="NAME=N: N jobs may hold QPU NAME at once (default 1)."),
    ] = None,
    lua_data: Annotated[
        Path | None,
        typer.Option("--lua-data", help="Also write job_submit.lua's QPU list to this file."),
    ] = None,
) -> None:
    """Print the slurm.conf Licenses= line for the QPUs of qrmi_config.json.

    Each QPU gets COUNT licenses: --count NAME=N, else the resource's environment
    QRMI_SLURM_LICENSE_COUNT, else 1. Paste the line into slurm.conf and restart slurmctld.
    """
    try:
        cfg = admin.load_config(config)
        counts = admin.license_counts(cfg, _parse_counts(count or []))
    except QrmiError as exc:
        raise _die(str(exc)) from None
    if lua_data is not None:
        lua_data.write_text(admin.render_lua_data(admin.qpu_names(cfg)))
        lua_data.chmod(0o644)
        typer.echo(f"wrote {lua_data}", err=True)
    typer.echo(admin.render_licenses(counts) or "# no QPUs configured")


@app.command()
def check(
    config: ConfigArg = DEFAULT_CONFIG,
    slurm_conf: Annotated[Path, typer.Option("--slurm-conf", help="slurm.conf to compare.")] = Path(
        "/etc/slurm/slurm.conf"
    ),
    plugstack: Annotated[
        Path | None,
        typer.Option("--plugstack", help="plugstack.conf (default: slurm.conf's PlugStackConfig)."),
    ] = None,
) -> None:
    """Report inconsistencies between qrmi_config.json, plugstack.conf and slurm.conf."""
    findings = admin.check(config, slurm_conf, plugstack)
    for finding in findings:
        typer.echo(f"{finding.level:7} {finding.message}")
    if any(f.level == "error" for f in findings):
        raise typer.Exit(1)


@app.command("epilog-script")
def epilog_script(
    python: Annotated[
        str, typer.Option("--python", help="Python with pyqrmi installed (plugstack python=).")
    ] = sys.executable,
    config: ConfigArg = DEFAULT_CONFIG,
    state_dir: StateDirArg = DEFAULT_STATE_DIR,
) -> None:
    """Print the slurm.conf Epilog= script that releases QPUs a crashed step left behind."""
    typer.echo(admin.render_epilog_script(python, str(config), str(state_dir)), nl=False)


@app.command()
def jobs(state_dir: StateDirArg = DEFAULT_STATE_DIR) -> None:
    """List jobs that still hold QPU leases on this node (token values are not shown)."""
    from qrmi.lifecycle import JobStateStore

    store = JobStateStore(state_dir)
    for job_id in store.job_ids():
        state = store.load(job_id)
        if state is None:
            continue
        held = [lease.name for lease in state.leases if not lease.released]
        typer.echo(f"{job_id}\tuid={state.uid}\tholds={','.join(held) or '-'}")


@app.command()
def release(
    job_id: Annotated[str, typer.Argument(help="Slurm job id.")],
    config: ConfigArg = DEFAULT_CONFIG,
    state_dir: StateDirArg = DEFAULT_STATE_DIR,
) -> None:
    """Release what a job still holds (e.g. after its node died). Safe to repeat."""
    from qrmi.config import Config
    from qrmi.lifecycle import JobLifecycle, JobStateStore

    try:
        report = JobLifecycle(Config.load(config), JobStateStore(state_dir)).finish(job_id)
    except QrmiError as exc:
        raise _die(str(exc)) from None
    if not report.had_state:
        typer.echo(f"job {job_id} holds nothing")
    for name in report.released:
        typer.echo(f"released {name}")
    for name, reason in report.failed.items():
        typer.echo(f"error: release of {name} failed: {reason}", err=True)
    if report.failed:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
