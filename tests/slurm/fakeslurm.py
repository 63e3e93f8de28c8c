"""A fake of the Slurm client commands the QPU readiness tools run, at the subprocess boundary.

It answers ``scontrol -o show licenses|reservations``, ``scontrol create|update|delete
reservation`` and ``squeue -h -t ... -o ...`` with what Slurm 22.05 printed on the live test
cluster, including its refusals: a duplicate name, and licenses reserved twice over at the same
time ("Invalid license specification").
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from qrmi.slurm.slurmcli import parse_license_list, slurm_time


@dataclass
class FakeReservation:
    name: str
    licenses: dict[str, int]
    start: datetime
    end: datetime
    users: str = "(null)"
    accounts: str = "(null)"
    flags: str = ""


@dataclass
class FakeJob:
    job_id: int
    state: str
    user: str
    licenses: str
    reservation: str = "(null)"
    reason: str = "None"


@dataclass
class FakeSlurm:
    """Licenses, reservations and jobs of a pretend cluster; ``calls`` logs every argv."""

    totals: dict[str, int]
    now: Callable[[], datetime] = datetime.now
    reservations: dict[str, FakeReservation] = field(default_factory=dict)
    jobs: list[FakeJob] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)
    notices: list[tuple[int, str]] = field(default_factory=list)
    broken: bool = False

    def __call__(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(args)
        self.calls.append(argv)
        if self.broken:
            return self._done(
                argv, 1, err="slurm_load_reservations error: Unable to contact slurm controller"
            )
        if argv[:4] == ["scontrol", "-o", "show", "licenses"]:
            return self._done(argv, 0, self._show_licenses())
        if argv[:4] == ["scontrol", "-o", "show", "reservations"]:
            return self._done(argv, 0, self._show_reservations())
        if argv[0] == "squeue":
            return self._done(argv, 0, self._squeue())
        if argv[:3] == ["scontrol", "create", "reservation"]:
            return self._create(argv, dict(a.split("=", 1) for a in argv[3:]))
        if argv[:2] == ["scontrol", "update"]:
            return self._update(argv, dict(a.split("=", 1) for a in argv[2:]))
        if argv[:2] == ["scontrol", "notify"]:
            if not any(str(j.job_id) == argv[2] and j.state == "RUNNING" for j in self.jobs):
                return self._done(argv, 1, err=f"scontrol: error: Invalid job id {argv[2]}")
            self.notices.append((int(argv[2]), argv[3]))
            return self._done(argv, 0)
        if argv[:2] == ["scontrol", "delete"]:
            name = argv[2].split("=", 1)[1]
            if name not in self.reservations:
                return self._done(argv, 1, err=f"Reservation {name} not found")
            if any(j.reservation == name and j.state == "RUNNING" for j in self.jobs):
                why = "Requested reservation is in use"
                return self._done(argv, 1, err=f"delete_reservation ReservationName={name}: {why}")
            del self.reservations[name]
            return self._done(argv, 0)
        return self._done(argv, 2, err=f"fake slurm: unexpected {argv}")

    def changes(self) -> list[list[str]]:
        """The calls that change something (create, update, delete, notify)."""
        return [c for c in self.calls if c[1] in ("create", "update", "delete", "notify")]

    # ----- answers -------------------------------------------------------------------------

    @staticmethod
    def _done(
        argv: list[str], rc: int, out: str = "", err: str = ""
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, rc, out, err)

    def _used(self, name: str) -> int:
        return sum(
            parse_license_list(j.licenses).get(name, 0)
            for j in self.jobs
            if j.state in ("RUNNING", "COMPLETING")
        )

    def _show_licenses(self) -> str:
        now = self.now()
        lines = []
        for name, total in self.totals.items():
            reserved = sum(
                r.licenses.get(name, 0)
                for r in self.reservations.values()
                if r.start <= now < r.end
            )
            used = self._used(name)
            lines.append(
                f"LicenseName={name} Total={total} Used={used} Free={total - used} "
                f"Reserved={reserved} Remote=no"
            )
        return "\n".join(lines) + "\n"

    def _show_reservations(self) -> str:
        if not self.reservations:
            return "No reservations in the system\n"
        now = self.now()
        return "".join(
            f"ReservationName={r.name} StartTime={slurm_time(r.start)} EndTime={slurm_time(r.end)} "
            f"Duration=x Nodes=(null) NodeCnt=0 CoreCnt=0 Features=(null) PartitionName=(null) "
            f"Flags={r.flags} TRES=(null) Users={r.users} Groups=(null) Accounts={r.accounts} "
            f"Licenses={','.join(f'{k}:{v}' for k, v in r.licenses.items())} "
            f"State={'ACTIVE' if r.start <= now < r.end else 'INACTIVE'} BurstBuffer=(null)\n"
            for r in self.reservations.values()
        )

    def _squeue(self) -> str:
        return "".join(
            f"{j.job_id}|{j.state}|{j.user}|{j.licenses}|{j.reservation}|{j.reason}\n"
            for j in self.jobs
        )

    def _time(self, text: str) -> datetime:
        now = self.now()
        return now if text == "now" else datetime.fromisoformat(text)

    def _fits(self, candidate: FakeReservation) -> bool:
        for name, count in candidate.licenses.items():
            if name not in self.totals:
                return False
            overlapping = sum(
                r.licenses.get(name, 0)
                for r in self.reservations.values()
                if r.name != candidate.name and r.start < candidate.end and candidate.start < r.end
            )
            if overlapping + count > self.totals[name]:
                return False
        return True

    def _create(self, argv: list[str], opts: dict[str, str]) -> subprocess.CompletedProcess[str]:
        name = opts["ReservationName"]
        if name in self.reservations:
            return self._done(
                argv, 1, err="Error creating the reservation: Duplicate reservation name"
            )
        start = self._time(opts["StartTime"])
        if "EndTime" in opts:
            end = self._time(opts["EndTime"])
        elif opts.get("Duration", "infinite") == "infinite":
            end = start + timedelta(days=365)
        else:
            end = start + timedelta(minutes=int(opts["Duration"]))
        candidate = FakeReservation(
            name,
            parse_license_list(opts["Licenses"]),
            start,
            end,
            opts.get("Users", "(null)"),
            opts.get("Accounts", "(null)"),
            opts.get("Flags", ""),
        )
        if not self._fits(candidate):
            return self._done(
                argv, 1, err="Error creating the reservation: Invalid license specification"
            )
        self.reservations[name] = candidate
        return self._done(argv, 0, f"Reservation created: {name}\n")

    def _update(self, argv: list[str], opts: dict[str, str]) -> subprocess.CompletedProcess[str]:
        current = self.reservations.get(opts["ReservationName"])
        if current is None:
            return self._done(
                argv, 1, err="Error updating the reservation: Requested reservation is invalid"
            )
        changed = FakeReservation(**vars(current))
        if "EndTime" in opts:
            changed.end = self._time(opts["EndTime"])
        if "Licenses" in opts:
            changed.licenses = parse_license_list(opts["Licenses"])
        if not self._fits(changed):
            return self._done(
                argv, 1, err="Error updating the reservation: Invalid license specification"
            )
        self.reservations[current.name] = changed
        return self._done(argv, 0, "Reservation updated.\n")
