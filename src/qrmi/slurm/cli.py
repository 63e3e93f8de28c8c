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
    help="Slurm integration: QPU licenses, setup checks, the Epilog safety net, job leases, "
    "QPU readiness (sync, status) and windows (reserve).",
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
    accounting: Annotated[
        bool,
        typer.Option(
            "--accounting",
            help="Also print the AccountingStorageTRES= line (Slurm accounting with slurmdbd).",
        ),
    ] = False,
) -> None:
    """Print the slurm.conf Licenses= line for the QPUs of qrmi_config.json.

    Each QPU gets COUNT licenses: --count NAME=N, else the resource's environment
    QRMI_SLURM_LICENSE_COUNT, else 1. Paste the line into slurm.conf and restart slurmctld.
    With --accounting, also the AccountingStorageTRES= line that makes slurmdbd account each
    QPU's license as a TRES (sacct, sreport -T license/QPU).
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
    if accounting and counts:
        typer.echo(admin.render_accounting_tres(list(counts)))


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


SYNC_STATE_DIR = Path("/var/lib/qrmi-slurm-sync")
SyncStateArg = Annotated[
    Path,
    typer.Option("--sync-state-dir", help="Root-only state of sync/reserve (what they created)."),
]


@app.command()
def sync(
    config: ConfigArg = DEFAULT_CONFIG,
    state_dir: SyncStateArg = SYNC_STATE_DIR,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit (for cron).")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between passes.")] = 30,
    failures: Annotated[
        int, typer.Option("--failures", help="Failed status calls in a row before a hold.")
    ] = 3,
    probe_timeout: Annotated[
        float, typer.Option("--probe-timeout", help="Seconds to wait for a QPU's status.")
    ] = 30,
    lua_data: Annotated[
        Path | None,
        typer.Option(
            "--lua-data", help="Write the held QPUs here for job_submit.lua (qrmi_held.lua)."
        ),
    ] = None,
) -> None:
    """Hold new jobs for QPUs that are offline, paused or unreachable, release them when back.

    Holds are license reservations named qrmi-QPU-STATE; docs/slurm-readiness.md.
    """
    from qrmi.slurm import sync as sync_mod

    _log_to_stderr()
    try:
        syncer = sync_mod.Syncer(
            config, state_dir, failures=failures, probe_timeout=probe_timeout, lua_data=lua_data
        )
    except QrmiError as exc:
        raise _die(str(exc)) from None
    if once:
        for change in syncer.run_once():
            typer.echo(change)
        return
    syncer.run(interval)


@app.command()
def status(
    config: ConfigArg = DEFAULT_CONFIG,
    state_dir: SyncStateArg = SYNC_STATE_DIR,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Ask the vendors now (root: reads the config; gateway-mode QPUs via the gateway).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """An sinfo-like view of the QPUs: vendor status, licenses, jobs, holds, next window."""
    import json

    from qrmi.slurm import status as status_mod
    from qrmi.slurm.slurmcli import SlurmCli

    state = status_mod.load_state(state_dir)
    live = None
    try:
        if probe:
            live, qpus = _probe_now(config)
        elif state is not None and state.qpus:
            qpus = sorted(state.qpus)
        else:
            qpus = sorted(SlurmCli().licenses())
        rows = status_mod.collect(qpus, SlurmCli(), state, live=live)
    except QrmiError as exc:
        raise _die(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(status_mod.as_json(rows), indent=1))
    else:
        typer.echo(status_mod.render(rows))


def _probe_now(config: Path) -> tuple[dict[str, tuple[str, str]], list[str]]:
    from qrmi.slurm.sync import direct_probe, fetch_qpus, read_qpus

    cfg = admin.load_config(config)
    definitions = {n: cfg.resource_map[n] for n in admin.qpu_names(cfg)}
    readings = read_qpus(definitions, direct_probe, fetch_qpus, 30)
    live = {n: (r.condition or "error", r.reason or r.error or "") for n, r in readings.items()}
    return live, sorted(definitions)


@app.command()
def reserve(
    qpu: Annotated[str, typer.Argument(help="The QPU (its Slurm license).")],
    label: Annotated[str, typer.Option("--label", help="Names the window: qrmi-QPU-window-LABEL.")],
    start: Annotated[
        str, typer.Option("--start", help="now, now+2hours, now+1day or 2026-12-02T09:00.")
    ] = "now",
    duration: Annotated[
        str | None, typer.Option("--duration", help="Minutes, HH:MM:SS or D-HH:MM:SS.")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", help="End time (instead of duration).")
    ] = None,
    user: Annotated[
        list[str] | None, typer.Option("--user", help="User allowed in the window (repeatable).")
    ] = None,
    account: Annotated[
        list[str] | None, typer.Option("--account", help="Account allowed (repeatable).")
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", help="Licenses reserved (default: all).")
    ] = None,
    dedicated: Annotated[
        bool,
        typer.Option(
            "--dedicated",
            help="Jobs in the window get the QPU in the vendor's exclusive mode (IBM Quantum "
            "Compute Service: dedicated session); named qrmi-QPU-dedicated-LABEL.",
        ),
    ] = False,
    state_dir: SyncStateArg = SYNC_STATE_DIR,
) -> None:
    """Declare a QPU time window for the named users or accounts (a license reservation).

    They submit with --reservation=qrmi-QPU-window-LABEL; others wait until it ends.
    """
    from qrmi.slurm.reserve import declare_window
    from qrmi.slurm.slurmcli import SlurmCli

    try:
        window = declare_window(
            SlurmCli(),
            state_dir,
            qpu,
            label,
            start=start,
            duration=duration,
            end=end,
            users=user or [],
            accounts=account or [],
            count=count,
            dedicated=dedicated,
        )
    except QrmiError as exc:
        raise _die(str(exc)) from None
    typer.echo(f"created {window.name}: submit with --qpu={qpu} --reservation={window.name}")


@app.command()
def unreserve(
    name: Annotated[str, typer.Argument(help="A window made by qrmi slurm reserve.")],
    state_dir: SyncStateArg = SYNC_STATE_DIR,
) -> None:
    """Delete a window declared with qrmi slurm reserve (or end it now, if jobs run in it)."""
    from qrmi.slurm.reserve import delete_window
    from qrmi.slurm.slurmcli import SlurmCli

    try:
        deleted = delete_window(SlurmCli(), state_dir, name)
    except QrmiError as exc:
        raise _die(str(exc)) from None
    if deleted:
        typer.echo(f"deleted {name}")
    else:
        typer.echo(f"ended {name} now: jobs still run in it; Slurm removes it after them")


def _log_to_stderr() -> None:
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("qrmi.slurm")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


if __name__ == "__main__":
    app()
