"""``qrmi slurm status``: an ``sinfo``-like view of the QPUs.

Per QPU: what the vendor said at the sync daemon's last pass (or now, with ``probe``), its
licenses (used / total, and how many a reservation holds), its running and pending jobs, the
reservation that holds it and why, and the next window.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from qrmi.errors import QrmiError
from qrmi.slurm.slurmcli import Job, License, Reservation, SlurmCli, slurm_time
from qrmi.slurm.sync import PREFIX, SyncState

HOLD_CONDITIONS = ("offline", "paused", "unreachable", "lanes")

__all__ = ["QpuRow", "collect", "render"]


@dataclass(frozen=True)
class QpuRow:
    """One line of the view."""

    qpu: str
    vendor: str
    reason: str
    checked: str
    licenses_total: int
    licenses_used: int
    licenses_reserved: int
    running: int
    pending: int
    held_by: str
    next_window: str


def _vendor(record: Mapping[str, Any] | None) -> tuple[str, str, str]:
    if record is None:
        return "?", "", ""
    condition = str(record.get("condition", "?"))
    failures = int(record.get("failures", 0))
    if failures and condition != "unreachable":
        condition += f" ({failures} failed)"
    return condition, str(record.get("reason") or ""), str(record.get("checked", ""))


def _next_window(qpu: str, reservations: Sequence[Reservation], held_by: str, now: datetime) -> str:
    upcoming = sorted(
        (r for r in reservations if qpu in r.licenses and r.name != held_by and r.end > now),
        key=lambda r: r.start,
    )
    if not upcoming:
        return "-"
    first = upcoming[0]
    who = ",".join(x for x in (first.users, first.accounts) if x != "(null)")
    state = "now" if first.active(now) else slurm_time(first.start)
    return f"{first.name} {state}..{slurm_time(first.end)} for {who}"


def _hold_names(qpu: str, reservations: Sequence[Reservation], now: datetime) -> list[str]:
    """Without the daemon's state (not root): its holds as their names show them."""
    return [
        r.name
        for r in reservations
        if r.name.removeprefix(f"{PREFIX}{qpu}-") in HOLD_CONDITIONS
        and qpu in r.licenses
        and r.active(now)
    ]


def collect(
    qpus: Sequence[str],
    slurm: SlurmCli,
    state: SyncState | None,
    *,
    live: Mapping[str, tuple[str, str]] | None = None,
    now: Callable[[], datetime] = datetime.now,
) -> list[QpuRow]:
    """The rows for ``qpus``; ``live`` (name -> (condition, reason)) overrides the state."""
    licenses: Mapping[str, License] = slurm.licenses()
    reservations = list(slurm.reservations().values())
    jobs: list[Job] = slurm.jobs()
    moment = now()
    rows = []
    for qpu in qpus:
        record = state.qpus.get(qpu) if state is not None else None
        vendor, reason, checked = _vendor(record)
        if live is not None and qpu in live:
            vendor, reason = live[qpu]
            checked = moment.isoformat(timespec="seconds")
        held = [
            n
            for n in (
                state.ours(qpu) if state is not None else _hold_names(qpu, reservations, moment)
            )
            if any(r.name == n for r in reservations)
        ]
        held_by = held[0] if held else "-"
        if state is None and held:  # a user's view: the hold's name says the condition
            condition = held[0].removeprefix(f"{PREFIX}{qpu}-")
            vendor = "online" if condition == "lanes" else condition
        license_ = licenses.get(qpu)
        mine = [j for j in jobs if qpu in j.licenses]
        rows.append(
            QpuRow(
                qpu=qpu,
                vendor=vendor,
                reason=reason,
                checked=checked,
                licenses_total=license_.total if license_ else 0,
                licenses_used=license_.used if license_ else 0,
                licenses_reserved=license_.reserved if license_ else 0,
                running=sum(1 for j in mine if j.state in ("RUNNING", "COMPLETING")),
                pending=sum(1 for j in mine if j.state == "PENDING"),
                held_by=held_by,
                next_window=_next_window(qpu, reservations, held_by, moment),
            )
        )
    return rows


def render(rows: Sequence[QpuRow]) -> str:
    """The rows as an aligned table (``LICENSES`` is used/total, ``+N rsv`` when reserved)."""
    header = ("QPU", "VENDOR", "LICENSES", "RUN", "PEND", "HELD_BY", "NEXT_WINDOW", "REASON")
    lines = [header]
    for row in rows:
        licenses = f"{row.licenses_used}/{row.licenses_total}"
        if row.licenses_reserved:
            licenses += f"+{row.licenses_reserved}rsv"
        lines.append(
            (
                row.qpu,
                row.vendor,
                licenses,
                str(row.running),
                str(row.pending),
                row.held_by,
                row.next_window,
                row.reason or "-",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in lines
    )


def as_json(rows: Sequence[QpuRow]) -> list[dict[str, Any]]:
    """The rows as plain JSON objects."""
    return [asdict(row) for row in rows]


def load_state(state_dir: Path) -> SyncState | None:
    """The sync daemon's state, or ``None`` when there is none or this user cannot read it."""
    try:
        state = SyncState.load(state_dir, create=False)
    except (QrmiError, OSError):
        return None
    return state if state.path.exists() else None
