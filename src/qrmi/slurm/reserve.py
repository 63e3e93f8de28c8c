"""``qrmi slurm reserve``: a QPU time window becomes a Slurm reservation on the QPU's license.

A window (a course, a dedicated slot bought from the vendor, the vendor's maintenance) is
declared once: ``qrmi-<qpu>-window-<label>`` reserves the QPU's licenses from ``start`` for a
duration, for the named users and/or accounts. Their jobs run in it with
``--reservation=<name>``; everyone else's ``--qpu`` jobs for that QPU wait until it ends (and a
job whose time limit would reach into the window does not start before it). Nodes are not
reserved. The window is recorded in the sync state, so ``qrmi slurm sync`` leaves it alone and
shortens its own holds to end where the window starts.

A ``dedicated`` window is named ``qrmi-<qpu>-dedicated-<label>`` instead: the Slurm helper
reads the job's reservation from slurmctld's record, and a job in such a window gets the QPU in
its vendor's exclusive mode where the vendor has one (IBM Quantum Compute Service: its session
is opened in ``dedicated`` mode, whatever ``QRMI_IBM_QCS_SESSION_MODE`` the config sets).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from qrmi.errors import InvalidInputError
from qrmi.lifecycle import dedicated_window_prefix
from qrmi.slurm.slurmcli import SlurmCli, SlurmCommandError, slurm_time
from qrmi.slurm.sync import SyncState, window_name

__all__ = ["Window", "declare_window", "delete_window", "parse_start"]

_LABEL = re.compile(r"^[A-Za-z0-9_.]{1,40}$")
_NAME_LIST = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]*$")
_RELATIVE = re.compile(r"^now(?:\+(\d+)(minutes?|hours?|days?))?$")
# Slurm's Duration forms: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_DURATION = re.compile(r"^(\d+|\d+:\d{2}(:\d{2})?|\d+-\d{1,2}(:\d{2}){0,2})$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Window:
    """A declared window, as created."""

    name: str
    qpu: str
    count: int
    start: datetime
    users: tuple[str, ...]
    accounts: tuple[str, ...]


def parse_start(text: str, now: datetime) -> datetime:
    """``now``, ``now+90minutes`` / ``now+2hours`` / ``now+1day``, or ``2026-12-02T09:00``.

    Raises:
        InvalidInputError: anything else (the message shows the accepted forms).
    """
    match = _RELATIVE.match(text)
    if match:
        if match.group(1) is None:
            return now
        unit = match.group(2).rstrip("s")
        return now + timedelta(seconds=int(match.group(1)) * _UNITS[unit])
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"--start {text!r} is not a time; use now, now+30minutes, now+2hours, now+1day or "
            "2026-12-02T09:00 (local time)"
        ) from None


def _check_names(values: Sequence[str], option: str) -> tuple[str, ...]:
    names = tuple(v for item in values for v in item.split(",") if v)
    for name in names:
        if not _NAME_LIST.match(name):
            raise InvalidInputError(
                f"{option} {name!r} is not a user or account name (letters, digits, _ . @ -)"
            )
    return names


def declare_window(
    slurm: SlurmCli,
    state_dir: Path,
    qpu: str,
    label: str,
    *,
    start: str,
    duration: str | None = None,
    end: str | None = None,
    users: Sequence[str] = (),
    accounts: Sequence[str] = (),
    count: int | None = None,
    dedicated: bool = False,
    now: datetime | None = None,
) -> Window:
    """Create the window's reservation and record it as ours.

    Raises:
        InvalidInputError: a bad argument, an unknown QPU, or Slurm refused the window (the
            message says why, e.g. another reservation holds the QPU then).
    """
    now = now or datetime.now()
    if not _LABEL.match(label):
        raise InvalidInputError(f"--label {label!r} must be 1-40 letters, digits, _ or .")
    if (duration is None) == (end is None):
        raise InvalidInputError("give exactly one of --duration (e.g. 120, 2:00:00) and --end")
    if duration is not None and not _DURATION.match(duration):
        raise InvalidInputError(
            f"--duration {duration!r}: use minutes (120), HH:MM:SS (2:00:00) or D-HH:MM:SS"
        )
    user_names = _check_names(users, "--user")
    account_names = _check_names(accounts, "--account")
    if not user_names and not account_names:
        raise InvalidInputError("name who may use the window: --user NAME and/or --account NAME")
    begins = parse_start(start, now)
    finish = parse_start(end, now) if end is not None else None
    if finish is not None and finish <= begins:
        raise InvalidInputError(f"--end {end} is not after --start {start}")
    license_ = slurm.licenses().get(qpu)
    if license_ is None:
        raise InvalidInputError(
            f"QPU {qpu!r} has no Slurm license; add it to slurm.conf Licenses= "
            "(qrmi slurm licenses) or check the name"
        )
    count = license_.total if count is None else count
    if not 1 <= count <= license_.total:
        raise InvalidInputError(f"--count {count} must be between 1 and {license_.total}")
    name = f"{dedicated_window_prefix(qpu)}{label}" if dedicated else window_name(qpu, label)
    state = SyncState.load(state_dir)
    if name in slurm.reservations():
        raise InvalidInputError(f"a reservation named {name} exists; pick another --label")
    _shorten_holds(slurm, state, qpu, begins, now)
    state.reservations[name] = {
        "qpu": qpu,
        "kind": "window",
        "users": list(user_names),
        "accounts": list(account_names),
        "dedicated": dedicated,
    }
    state.save()
    try:
        slurm.create_reservation(
            name,
            {qpu: count},
            start="now" if begins <= now else slurm_time(begins),
            end=slurm_time(finish) if finish is not None else None,
            duration=duration,
            users=user_names,
            accounts=account_names,
        )
    except SlurmCommandError as exc:
        del state.reservations[name]
        state.save()
        raise InvalidInputError(
            f"Slurm refused the window {name}: {exc}. 'Invalid license specification' means "
            f"other reservations already hold {qpu}'s licenses then (see qrmi slurm status)"
        ) from None
    return Window(name, qpu, count, begins, user_names, account_names)


def _shorten_holds(
    slurm: SlurmCli, state: SyncState, qpu: str, begins: datetime, now: datetime
) -> None:
    """Make the sync daemon's holds on ``qpu`` end where the window begins (Slurm refuses to
    reserve a license twice over); if the QPU is still not ready then, the daemon's next pass
    holds it again after the window."""
    if begins <= now:
        return
    reservations = slurm.reservations()
    for name in state.ours(qpu):
        current = reservations.get(name)
        if current is not None and current.end > begins:
            slurm.update_reservation(name, end=slurm_time(begins))


def delete_window(slurm: SlurmCli, state_dir: Path, name: str) -> bool:
    """Delete a window this tool declared; False when jobs still run in it, which Slurm does
    not allow: the window then ends now, its jobs keep running, and Slurm drops it after them.

    Raises:
        InvalidInputError: ``name`` is not a window declared with ``qrmi slurm reserve``.
    """
    state = SyncState.load(state_dir)
    record = state.reservations.get(name)
    if record is None or record["kind"] != "window":
        windows = ", ".join(sorted(state.ours_windows())) or "(none)"
        raise InvalidInputError(
            f"{name!r} is not a window declared with qrmi slurm reserve; declared: {windows}"
        )
    deleted = True
    try:
        deleted = slurm.delete_reservation(name)
    except SlurmCommandError as exc:
        if "not found" not in str(exc):
            raise InvalidInputError(f"Slurm did not delete {name}: {exc}") from None
    if deleted:
        del state.reservations[name]
    else:  # the sync daemon forgets it once Slurm dropped it
        record["ended"] = True
    state.save()
    return deleted
