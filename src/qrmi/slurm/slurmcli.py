"""The few Slurm client calls the QPU readiness tools make (``scontrol``, ``squeue``).

Every call goes through one ``runner`` (``argv -> CompletedProcess``), so tests replace Slurm at
the subprocess boundary. Times are Slurm's: local wall-clock time without a zone, which is how
``scontrol`` prints and reads them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from qrmi.errors import ServiceError

__all__ = [
    "Job",
    "License",
    "Reservation",
    "Runner",
    "SlurmCli",
    "SlurmCommandError",
    "parse_license_list",
    "slurm_time",
]

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]
SLURM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class SlurmCommandError(ServiceError):
    """A Slurm client command failed; the message holds the command and Slurm's answer."""


@dataclass(frozen=True)
class License:
    """One cluster license as ``scontrol show lic`` reports it."""

    name: str
    total: int
    used: int
    reserved: int


@dataclass(frozen=True)
class Reservation:
    """One reservation as ``scontrol show res`` reports it (the fields the QPU tools use)."""

    name: str
    start: datetime
    end: datetime
    licenses: Mapping[str, int]
    users: str
    accounts: str
    flags: str
    state: str

    def active(self, now: datetime) -> bool:
        """True while the reservation holds its licenses."""
        return self.start <= now < self.end


@dataclass(frozen=True)
class Job:
    """A pending or running job and the licenses it asked for."""

    job_id: str
    state: str
    user: str
    licenses: Mapping[str, int]
    reservation: str
    reason: str


def slurm_time(moment: datetime) -> str:
    """``moment`` as Slurm reads it (``2026-12-01T09:00:00``)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def parse_license_list(text: str) -> dict[str, int]:
    """``"qx:2,qy"`` -> ``{"qx": 2, "qy": 1}`` (``(null)`` and empty give ``{}``)."""
    counts: dict[str, int] = {}
    if text in ("", "(null)", "N/A"):
        return counts
    for item in text.split(","):
        name, _, count = item.partition(":")
        if name:
            counts[name] = counts.get(name, 0) + (int(count) if count.isdigit() else 1)
    return counts


def _fields(line: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in line.split():
        key, sep, value = item.partition("=")
        if sep:
            fields.setdefault(key, value)
    return fields


def _time(text: str) -> datetime:
    if text in ("Unknown", "None", "(null)", ""):
        return datetime.max
    return datetime.fromisoformat(text)


def _default_runner(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "PATH"}
    env["PATH"] = SLURM_PATH
    return subprocess.run(
        list(args), capture_output=True, text=True, check=False, timeout=60, env=env
    )


class SlurmCli:
    """Reads and changes the reservations, licenses and jobs of the local Slurm cluster."""

    def __init__(self, runner: Runner | None = None) -> None:
        self._run = runner or _default_runner

    def _call(self, args: Sequence[str]) -> str:
        try:
            result = self._run(args)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmCommandError(f"{' '.join(args[:3])} did not run: {exc}") from None
        if result.returncode != 0:
            why = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
            raise SlurmCommandError(f"{' '.join(args)} failed: {why}")
        return result.stdout

    def licenses(self) -> dict[str, License]:
        """Every license of the cluster, by name."""
        found = {}
        for line in self._call(["scontrol", "-o", "show", "licenses"]).splitlines():
            fields = _fields(line)
            if "LicenseName" in fields:
                found[fields["LicenseName"]] = License(
                    fields["LicenseName"],
                    int(fields.get("Total", "0")),
                    int(fields.get("Used", "0")),
                    int(fields.get("Reserved", "0") or 0),
                )
        return found

    def reservations(self) -> dict[str, Reservation]:
        """Every reservation of the cluster, by name."""
        found = {}
        for line in self._call(["scontrol", "-o", "show", "reservations"]).splitlines():
            fields = _fields(line)
            if "ReservationName" not in fields:
                continue
            found[fields["ReservationName"]] = Reservation(
                name=fields["ReservationName"],
                start=_time(fields.get("StartTime", "")),
                end=_time(fields.get("EndTime", "")),
                licenses=parse_license_list(fields.get("Licenses", "")),
                users=fields.get("Users", "(null)"),
                accounts=fields.get("Accounts", "(null)"),
                flags=fields.get("Flags", ""),
                state=fields.get("State", ""),
            )
        return found

    def jobs(self) -> list[Job]:
        """Pending and running jobs (completing ones still hold their licenses: counted too)."""
        out = self._call(["squeue", "-h", "-t", "PD,R,CG,S", "-o", "%i|%T|%u|%W|%v|%r"])
        jobs = []
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) != 6:
                continue
            job_id, state, user, licenses, reservation, reason = parts
            jobs.append(Job(job_id, state, user, parse_license_list(licenses), reservation, reason))
        return jobs

    def create_reservation(
        self,
        name: str,
        licenses: Mapping[str, int],
        *,
        start: str,
        end: str | None = None,
        duration: str | None = None,
        users: Sequence[str] = (),
        accounts: Sequence[str] = (),
    ) -> None:
        """A license-only reservation (``Flags=ANY_NODES``): nodes stay free for everyone,
        jobs outside it cannot take the reserved licenses, running jobs are left alone."""
        args = [
            "scontrol",
            "create",
            "reservation",
            f"ReservationName={name}",
            "Licenses=" + ",".join(f"{q}:{n}" for q, n in licenses.items()),
            f"StartTime={start}",
            f"EndTime={end}" if end is not None else f"Duration={duration or 'infinite'}",
            "Flags=ANY_NODES",
        ]
        if users:
            args.append("Users=" + ",".join(users))
        if accounts:
            args.append("Accounts=" + ",".join(accounts))
        self._call(args)

    def update_reservation(
        self, name: str, *, end: str | None = None, licenses: Mapping[str, int] | None = None
    ) -> None:
        """Change a reservation's end time and/or licenses."""
        args = ["scontrol", "update", f"ReservationName={name}"]
        if end is not None:
            args.append(f"EndTime={end}")
        if licenses is not None:
            args.append("Licenses=" + ",".join(f"{q}:{n}" for q, n in licenses.items()))
        self._call(args)

    def notify(self, job_id: str, message: str) -> None:
        """Write ``message`` to a running job's stderr (``scontrol notify``; Slurm prefixes
        ``slurmstepd-NODE: error:``)."""
        self._call(["scontrol", "notify", job_id, message])

    def delete_reservation(self, name: str) -> bool:
        """Delete a reservation; True if deleted, False if it was ended instead.

        Slurm refuses to delete a reservation jobs run in ("Requested reservation is in use"):
        such a reservation is ended now instead (its jobs keep running; Slurm drops it once
        they are done).
        """
        try:
            self._call(["scontrol", "delete", f"ReservationName={name}"])
        except SlurmCommandError as exc:
            if "in use" not in str(exc):
                raise
            self.update_reservation(name, end="now")
            return False
        return True
