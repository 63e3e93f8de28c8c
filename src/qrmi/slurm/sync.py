"""``qrmi slurm sync``: Slurm holds new jobs for a QPU that is not ready, and lets them go again.

Each pass asks every QPU of ``qrmi_config.json`` for its status (through its backend, with the
admin's settings; for a QPU in gateway mode, whose entry holds no vendor credentials, through
``GET /v1/admin/qpus`` of its QRMI gateway, proving root with MUNGE) and turns what it hears
into license-only Slurm reservations:

* a QPU that is offline, paused, or could not be asked ``failures`` times in a row gets a
  reservation ``qrmi-<qpu>-<offline|paused|unreachable>`` holding all its licenses for
  ``root``: new ``--qpu`` jobs stay PENDING (reason ``Licenses``; ``sinfo -T`` and
  ``qrmi slurm status`` say why), nodes stay free, running jobs are not touched;
* an online QPU that reports fewer execution lanes than it has licenses gets
  ``qrmi-<qpu>-lanes`` holding the difference, so Slurm starts no more jobs than it has lanes;
* once the QPU is back the reservation is deleted, and Slurm's scheduler starts the pending
  jobs at its next pass.

The daemon changes only reservations it created: it writes each name into its state file
(``<state_dir>/sync.json``, root-only) before it asks Slurm to create it, and never touches a
reservation it did not record. Restarted, it picks up where it left off. Holds are finite
(``hold_span``, renewed while needed) and end before any other reservation on the same license
starts, because Slurm refuses licenses reserved twice over.

With ``lua_data`` it also writes, next to that file, ``qrmi_quota.lua``: the users and accounts
over a QPU-seconds quota of the QRMI gateway (asked at ``GET /v1/admin/quota`` of every gateway
the config's QPUs name, proving root with MUNGE), so that ``job_submit.lua`` refuses their
``--qpu`` jobs at submit time with the quota's reason. A gateway that cannot be asked leaves the
file as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from qrmi.errors import ConfigError, QrmiError
from qrmi.slurm.slurmcli import Reservation, SlurmCli, SlurmCommandError, slurm_time

if TYPE_CHECKING:
    from qrmi.config import Config, ResourceDef
    from qrmi.lifecycle import GatewaySite
    from qrmi.models import ResourceStatus

__all__ = [
    "PREFIX",
    "Reading",
    "SyncState",
    "Syncer",
    "direct_probe",
    "fetch_qpus",
    "gateway_reading",
    "hold_name",
    "read_qpus",
    "window_name",
]

log = logging.getLogger("qrmi.slurm.sync")

PREFIX = "qrmi-"
STATE_FILE = "sync.json"
#: Written next to the ``--lua-data`` file: who is over a QPU-seconds quota, per QPU.
QUOTA_FILE = "qrmi_quota.lua"
_MAX_QUOTA_ENTRIES = 100_000
ONLINE = "online"
UNREACHABLE = "unreachable"
# A hold that would last less than this before another reservation starts is not worth making.
MIN_HOLD = timedelta(minutes=2)

Probe = Callable[["ResourceDef"], "ResourceStatus"]
#: Asks one gateway (``GatewaySite``) for ``GET /v1/admin/quota``; returns its JSON answer.
QuotaFetch = Callable[["GatewaySite"], Any]
#: Asks one gateway for ``GET /v1/admin/qpus`` within a deadline; returns its QPU entries.
QpusFetch = Callable[["GatewaySite", float], list[dict[str, Any]]]
_T = TypeVar("_T")


def hold_name(qpu: str, condition: str) -> str:
    """The name of the reservation that holds ``qpu`` in ``condition`` (``qrmi-fez-offline``)."""
    return f"{PREFIX}{qpu}-{condition}"


def window_name(qpu: str, label: str) -> str:
    """The name of a declared window on ``qpu`` (``qrmi-fez-window-course``)."""
    return f"{PREFIX}{qpu}-window-{label}"


# ----- the state file ------------------------------------------------------------------------


@dataclass
class SyncState:
    """What the QPU tools created and last heard, kept in ``<state_dir>/sync.json``.

    ``qpus``: per QPU ``condition``, ``reason``, ``failures``, ``lanes``, ``checked``.
    ``reservations``: per reservation this tool created ``qpu``, ``kind`` (``hold``,
    ``lanes``, ``window``) and details.
    """

    path: Path
    qpus: dict[str, dict[str, Any]] = field(default_factory=dict)
    reservations: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path, *, create: bool = True) -> SyncState:
        """Read the state (empty when there is none yet).

        Raises:
            ConfigError: the directory is unsafe (others may write it) or the file is not ours.
        """
        if create:
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if state_dir.exists():
            _check_private(state_dir)
        path = state_dir / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"the QPU sync state {path} cannot be read ({exc}); move it away to start afresh "
                "(reservations named qrmi-* then have to be deleted by hand)"
            ) from None
        return cls(path, dict(data.get("qpus", {})), dict(data.get("reservations", {})))

    def save(self) -> None:
        """Write the state atomically (root-only)."""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"qpus": self.qpus, "reservations": self.reservations}, out, indent=1)
        os.replace(tmp, self.path)

    def ours(self, qpu: str, kinds: tuple[str, ...] = ("hold", "lanes")) -> list[str]:
        """The reservations of ``kinds`` this tool made for ``qpu``."""
        return sorted(
            n
            for n, r in self.reservations.items()
            if r.get("qpu") == qpu and r["kind"] in kinds and not r.get("ended")
        )

    def ours_windows(self) -> list[str]:
        """The windows declared with ``qrmi slurm reserve``."""
        return sorted(n for n, r in self.reservations.items() if r["kind"] == "window")


def _check_private(directory: Path) -> None:
    info = directory.stat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise ConfigError(
            f"the QPU sync state directory {directory} must belong to uid {os.geteuid()} and be "
            f"writable by it alone (mode now {info.st_mode & 0o777:o}); fix it with "
            f"'chown root: {directory} && chmod 700 {directory}'"
        )


# ----- what job_submit.lua tells users at submit time ------------------------------------------


def lua_string(text: str, limit: int = 200) -> str:
    """``text`` as a Lua string literal that cannot end early (the vendor's reason is not ours:
    it must never become Lua code in slurmctld)."""
    out = []
    for char in text[:limit]:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 32 or ord(char) == 127:
            out.append(" ")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def render_held_lua(held: Mapping[str, str]) -> str:
    """The ``qrmi_held.lua`` data file: QPU name -> why it is held."""
    lines = ["-- written by qrmi slurm sync: QPUs held now, and why", "return {"]
    lines += [
        f"    [{lua_string(name)}] = {lua_string(why)}," for name, why in sorted(held.items())
    ]
    return "\n".join([*lines, "}"]) + "\n"


def render_quota_lua(over: list[dict[str, str]], uid_of: Callable[[str], int | None]) -> str:
    """The ``qrmi_quota.lua`` data file: per QPU, the users (by name and uid) and accounts
    over a QPU-seconds quota, each with the reason ``sbatch`` shows."""
    by_qpu: dict[str, dict[str, dict[str, str]]] = {}
    for entry in over:
        tables = by_qpu.setdefault(entry["qpu"], {"users": {}, "uids": {}, "accounts": {}})
        if entry["kind"] == "user":
            tables["users"][lua_string(entry["name"])] = entry["reason"]
            uid = uid_of(entry["name"])
            if uid is not None:
                tables["uids"][str(uid)] = entry["reason"]
        else:
            tables["accounts"][lua_string(entry["name"])] = entry["reason"]
    lines = ["-- written by qrmi slurm sync: who is over a QPU-seconds quota, per QPU", "return {"]
    for qpu, tables in sorted(by_qpu.items()):
        lines.append(f"    [{lua_string(qpu)}] = {{")
        for table, entries in tables.items():
            items = "".join(
                f" [{key}] = {lua_string(why, 400)}," for key, why in sorted(entries.items())
            )
            lines.append(f"        {table} = {{{items} }},")
        lines.append("    },")
    return "\n".join([*lines, "}"]) + "\n"


def _uid_of(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def fetch_quota(site: GatewaySite) -> Any:
    """``GET /v1/admin/quota`` of the gateway ``site``, proving root with MUNGE."""
    from qrmi.gateway.client import admin_request

    return admin_request(
        "GET",
        site.url,
        "/v1/admin/quota",
        munge_socket=site.munge_socket,
        ca_file=site.ca_file,
        deadline=10.0,
    )


def over_quota_entries(answer: Any, where: str) -> list[dict[str, str]]:
    """The well-formed entries of a gateway's quota answer (others are logged and skipped:
    the answer becomes Lua in slurmctld, so nothing is taken on trust)."""
    over = answer.get("over") if isinstance(answer, dict) else None
    if not isinstance(over, list):
        raise ValueError(f"{where} did not answer a quota report ({{'over': [...]}})")
    entries = []
    for item in over[:_MAX_QUOTA_ENTRIES]:
        fields = (
            {k: item.get(k) for k in ("qpu", "kind", "name", "reason")}
            if isinstance(item, dict)
            else {}
        )
        if all(isinstance(v, str) and v for v in fields.values()) and fields["kind"] in (
            "user",
            "account",
        ):
            entries.append({k: str(v) for k, v in fields.items()})
        else:
            log.warning("%s: skipped a malformed quota entry", where)
    return entries


def write_if_changed(path: Path, text: str) -> bool:
    """Replace ``path`` atomically (mode 0644) when its text differs; True if written."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, path)
    return True


# ----- asking the QPUs -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failed:
    """A question of :func:`_ask_all` that raised or did not answer in time."""

    error: str


@dataclass(frozen=True)
class Reading:
    """What one pass learnt about a QPU: its condition (``online``, ``offline``, ``paused``),
    the vendor's reason, its lanes (``None`` when not reported); ``error`` when it could not
    be asked."""

    condition: str | None
    reason: str = ""
    lanes: int | None = None
    error: str | None = None


def direct_probe(rdef: ResourceDef) -> ResourceStatus:
    """The QPU's status through its backend, built with the admin's settings alone."""
    from qrmi.resource import QuantumResource

    return QuantumResource(
        rdef.name, rdef.resource_type, config=dict(rdef.environment), environ={}
    ).status()


def _reading(status: ResourceStatus) -> Reading:
    lanes = status.capacity.max_slots if status.capacity is not None else None
    return Reading(status.status.name.lower(), status.status_reason or "", lanes)


def _ask_all(questions: Mapping[str, Callable[[], _T]], timeout: float) -> dict[str, _T | _Failed]:
    """Ask every question at once; one that raises or does not answer within ``timeout`` gets
    a :class:`_Failed` that says why. A question that hangs is left behind in a daemon thread:
    it never delays the next pass nor the process's exit."""
    from qrmi.log import redact

    answers: dict[str, _T | _Failed] = {}
    lock = threading.Lock()

    def ask(name: str, question: Callable[[], _T]) -> None:
        answer: _T | _Failed
        try:
            answer = question()
        except Exception as exc:  # a vendor error must never stop the daemon
            answer = _Failed(redact(f"{type(exc).__name__}: {exc}"))
        with lock:
            answers.setdefault(name, answer)

    threads = [
        threading.Thread(target=ask, args=(n, q), name=f"probe-{n}", daemon=True)
        for n, q in questions.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        for name in questions:
            answers.setdefault(name, _Failed(f"no answer within {timeout:g} s"))
        return dict(answers)


def _as_reading(answer: Reading | _Failed) -> Reading:
    return Reading(None, error=answer.error) if isinstance(answer, _Failed) else answer


def probe_all(
    definitions: Mapping[str, ResourceDef], probe: Probe, timeout: float
) -> dict[str, Reading]:
    """Ask every QPU's backend at once; a QPU that raises or does not answer within
    ``timeout`` gets a reading with ``error`` set (a hung call never delays the next pass)."""
    questions = {n: partial(_probe_reading, probe, r) for n, r in definitions.items()}
    return {n: _as_reading(a) for n, a in _ask_all(questions, timeout).items()}


def _probe_reading(probe: Probe, rdef: ResourceDef) -> Reading:
    return _reading(probe(rdef))


# ----- asking a QRMI gateway (gateway mode: the vendor credentials are there) -----------------


def fetch_qpus(site: GatewaySite, deadline: float) -> list[dict[str, Any]]:
    """``GET /v1/admin/qpus`` of the gateway ``site``, proving root with MUNGE."""
    from qrmi.gateway.client import qpu_readiness

    return qpu_readiness(
        site.url, munge_socket=site.munge_socket, ca_file=site.ca_file, deadline=deadline
    )


def gateway_reading(entry: Any, where: str, max_age: float) -> Reading:
    """A QPU's reading from its entry in a gateway's readiness report: paused by the gateway's
    admin, the vendor's status, or an error when the gateway could not ask the vendor (or its
    last answer is older than ``max_age`` seconds). Nothing in the entry is taken on trust."""
    if not isinstance(entry, dict):
        return Reading(None, error=f"{where} does not report this QPU")
    paused = entry.get("paused_by_admin")
    if isinstance(paused, str):
        return Reading("paused", f"paused at the QRMI gateway: {paused or 'no reason given'}"[:300])
    status, age = entry.get("status"), entry.get("age_seconds")
    if status not in ("online", "offline", "paused"):
        error = entry.get("error")
        why = error if isinstance(error, str) and error else "no answer from the vendor yet"
        return Reading(None, error=f"{where} could not ask the vendor: {why[:300]}")
    if isinstance(age, int | float) and age > max_age:
        return Reading(None, error=f"{where} last heard from the vendor {age:.0f} s ago")
    reason = entry.get("reason")
    capacity = entry.get("capacity")
    lanes = capacity.get("max_slots") if isinstance(capacity, dict) else None
    return Reading(
        status,
        reason[:300] if isinstance(reason, str) else "",
        lanes if isinstance(lanes, int) and not isinstance(lanes, bool) else None,
    )


def read_qpus(
    definitions: Mapping[str, ResourceDef],
    probe: Probe,
    qpus_fetch: QpusFetch,
    timeout: float,
) -> dict[str, Reading]:
    """Every QPU's reading: a direct-mode QPU through its backend (``probe``), a gateway-mode
    QPU from its gateway's readiness report (``qpus_fetch``, one call per gateway), all at
    once and within ``timeout``."""
    from qrmi.lifecycle import gateway_site

    direct: dict[str, ResourceDef] = {}
    by_site: dict[GatewaySite, list[str]] = {}
    for name, rdef in definitions.items():
        site = gateway_site([rdef])
        if site is None:
            direct[name] = rdef
        else:
            by_site.setdefault(site, []).append(name)
    questions: dict[str, Callable[[], Any]] = {
        f"qpu:{n}": partial(_probe_reading, probe, r) for n, r in direct.items()
    }
    # One call per gateway serves all its QPUs, with a deadline a little under ``timeout`` so
    # that the gateway's own error (rather than "no answer") is what its QPUs get.
    for site in by_site:
        questions[f"gateway:{site.url}"] = partial(qpus_fetch, site, timeout * 0.9)
    answers = _ask_all(questions, timeout)
    readings = {n: _as_reading(answers[f"qpu:{n}"]) for n in direct}
    for site, names in by_site.items():
        where = f"the QRMI gateway at {site.url}"
        report = answers[f"gateway:{site.url}"]
        if isinstance(report, _Failed):
            readings.update({n: Reading(None, error=f"{where}: {report.error}") for n in names})
            continue
        entries = {e.get("name"): e for e in report if isinstance(e, dict)}
        max_age = max(60.0, 2 * timeout)
        readings.update({n: gateway_reading(entries.get(n), where, max_age) for n in names})
    return readings


# ----- deciding and applying -------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """The reservation a QPU should have now."""

    name: str
    kind: str
    count: int
    end: datetime
    why: str


class Syncer:
    """One QPU-to-Slurm synchronisation; :meth:`run_once` is one pass, :meth:`run` the daemon."""

    def __init__(
        self,
        config_path: Path,
        state_dir: Path,
        *,
        slurm: SlurmCli | None = None,
        probe: Probe = direct_probe,
        failures: int = 3,
        hold_span: timedelta = timedelta(days=1),
        probe_timeout: float = 30.0,
        lua_data: Path | None = None,
        clock: Callable[[], datetime] = datetime.now,
        quota_fetch: QuotaFetch = fetch_quota,
        qpus_fetch: QpusFetch = fetch_qpus,
    ) -> None:
        if failures < 1:
            raise ConfigError(f"failures={failures} must be at least 1")
        self.config_path = config_path
        self.state_dir = state_dir
        self.slurm = slurm or SlurmCli()
        self.probe = probe
        self.failures = failures
        self.hold_span = hold_span
        self.probe_timeout = probe_timeout
        self.lua_data = lua_data
        self.clock = clock
        self.quota_fetch = quota_fetch
        self.qpus_fetch = qpus_fetch

    def run_once(self) -> list[str]:
        """One pass: ask the QPUs, change the reservations that need it. Returns what it
        changed (one line per change); errors are logged, never raised."""
        try:
            state = SyncState.load(self.state_dir)
            config = self._config()
        except QrmiError as exc:
            log.error("sync pass skipped, nothing changed: %s", exc)
            return []
        definitions = {n: r for n, r in config.resource_map.items() if not r.is_dynamic}
        self._publish_quotas(config)
        readings = read_qpus(definitions, self.probe, self.qpus_fetch, self.probe_timeout)
        now = self.clock()
        for name in sorted(definitions):
            self._note(state, name, readings[name], now)
        try:
            licenses = self.slurm.licenses()
            reservations = self.slurm.reservations()
        except SlurmCommandError as exc:
            state.save()
            log.error("sync pass made no change: cannot read Slurm: %s", exc)
            return []
        changes = self._forget_vanished(state, reservations)
        for name in sorted(definitions):
            license_ = licenses.get(name)
            if license_ is None:
                log.warning("%s: no Slurm license of that name; add it to Licenses=", name)
                continue
            wanted = self._decide(name, state.qpus[name], license_.total, reservations, state, now)
            changes += self._apply(name, wanted, state, reservations, now)
        for name in sorted({r["qpu"] for r in state.reservations.values()} - set(definitions)):
            changes += self._apply(name, None, state, reservations, now)  # QPU left the config
        for name in set(state.qpus) - set(definitions):
            del state.qpus[name]
        state.save()
        self._publish(state)
        return changes

    def _publish(self, state: SyncState) -> None:
        """Tell job_submit.lua which QPUs are held and why (it tells users at submit)."""
        if self.lua_data is None:
            return
        held = {
            r["qpu"]: str(r.get("why", "not ready"))
            for r in state.reservations.values()
            if r["kind"] == "hold" and not r.get("ended")
        }
        try:
            if write_if_changed(self.lua_data, render_held_lua(held)):
                log.info("wrote %s: %s", self.lua_data, ", ".join(sorted(held)) or "nothing held")
        except OSError as exc:
            log.error("cannot write %s: %s", self.lua_data, exc)

    def _publish_quotas(self, config: Config) -> None:
        """Write who is over a QPU-seconds quota for job_submit.lua (``qrmi_quota.lua`` next to
        ``lua_data``), as the config's gateways report it."""
        if self.lua_data is None:
            return
        path = self.lua_data.with_name(QUOTA_FILE)
        try:
            over = self._over_quota(config)
        except Exception as exc:  # a gateway down or refusing: keep the last known file
            log.error("cannot ask the QRMI gateway who is over quota (%s unchanged): %s", path, exc)
            return
        try:
            if write_if_changed(path, render_quota_lua(over, _uid_of)):
                who = ", ".join(sorted({f"{e['kind']} {e['name']}" for e in over}))
                log.info("wrote %s: %s", path, who or "nobody over quota")
        except OSError as exc:
            log.error("cannot write %s: %s", path, exc)

    def _over_quota(self, config: Config) -> list[dict[str, str]]:
        from qrmi.lifecycle import gateway_site

        sites = set()
        for rdef in config.resource_map.values():
            site = gateway_site([rdef])
            if site is not None:
                sites.add(site)
        over = []
        for site in sorted(sites, key=lambda s: s.url):
            over += over_quota_entries(self.quota_fetch(site), f"the QRMI gateway at {site.url}")
        return over

    def _config(self) -> Config:
        from qrmi.config import Config

        return Config.load(self.config_path)

    def _note(self, state: SyncState, name: str, reading: Reading, now: datetime) -> None:
        """Fold a reading into the QPU's record: a QPU that cannot be asked keeps its last
        condition until it failed ``failures`` times in a row."""
        record = state.qpus.setdefault(name, {"condition": ONLINE, "reason": "", "failures": 0})
        record["checked"] = now.isoformat(timespec="seconds")
        if reading.error is None:
            if record["condition"] != reading.condition or record.get("failures"):
                log.info("%s: vendor says %s %s", name, reading.condition, reading.reason)
            record.update(
                condition=reading.condition, reason=reading.reason, failures=0, lanes=reading.lanes
            )
            return
        record["failures"] = record.get("failures", 0) + 1
        record["last_error"] = reading.error
        if record["failures"] >= self.failures:
            if record["condition"] != UNREACHABLE:
                log.warning(
                    "%s: could not be asked %d times in a row, now held as unreachable: %s",
                    name,
                    record["failures"],
                    reading.error,
                )
            record.update(condition=UNREACHABLE, reason=reading.error)
        else:
            log.warning(
                "%s: status failed (%d of %d before it is held): %s",
                name,
                record["failures"],
                self.failures,
                reading.error,
            )

    def _decide(
        self,
        name: str,
        record: Mapping[str, Any],
        total: int,
        reservations: Mapping[str, Reservation],
        state: SyncState,
        now: datetime,
    ) -> Hold | None:
        condition = record["condition"]
        lanes = record.get("lanes")
        if condition != ONLINE:
            kind, want = "hold", total
            hold = hold_name(name, condition)
            why = f"{condition}: {record.get('reason') or 'no reason given'}"
        elif isinstance(lanes, int) and lanes < total:
            kind, want, hold = "lanes", total - max(lanes, 0), hold_name(name, "lanes")
            why = f"{lanes} execution lane(s) for {total} licenses"
        else:
            return None
        mine = set(state.ours(name))
        others = [r for n, r in reservations.items() if n not in mine and name in r.licenses]
        taken_now = sum(r.licenses[name] for r in others if r.active(now))
        want = min(want, total - taken_now)
        end = min([now + self.hold_span] + [r.start for r in others if r.start > now])
        end = end.replace(microsecond=0)  # Slurm keeps whole seconds
        if want <= 0 or end - now < MIN_HOLD:
            if state.qpus[name].get("yielded") != why:  # said once, not at every pass
                log.info("%s: %s, but other reservations hold its licenses now or soon", name, why)
            state.qpus[name]["yielded"] = why
            return None
        state.qpus[name].pop("yielded", None)
        return Hold(hold, kind, want, end, why)

    def _forget_vanished(
        self, state: SyncState, reservations: Mapping[str, Reservation]
    ) -> list[str]:
        """Recorded reservations Slurm no longer has (ended, or deleted by an admin)."""
        gone = [n for n in state.reservations if n not in reservations]
        for name in gone:
            record = state.reservations.pop(name)
            if record["kind"] != "window":
                log.warning("%s: reservation %s is gone (deleted by hand?)", record["qpu"], name)
        return [f"forgot {name} (no longer in Slurm)" for name in gone]

    def _apply(
        self,
        qpu: str,
        wanted: Hold | None,
        state: SyncState,
        reservations: Mapping[str, Reservation],
        now: datetime,
    ) -> list[str]:
        changes = []
        for name in state.ours(qpu):
            if wanted is not None and name == wanted.name:
                continue
            try:
                deleted = self.slurm.delete_reservation(name)
            except SlurmCommandError as exc:
                log.error("%s: cannot delete reservation %s: %s", qpu, name, exc)
                continue
            if deleted:
                del state.reservations[name]
            else:  # jobs run in it: it ended now, Slurm drops it after them (forgotten then)
                state.reservations[name]["ended"] = True
            state.save()
            log.info("%s: released: deleted reservation %s, its pending jobs may start", qpu, name)
            changes.append(f"deleted {name}")
        if wanted is None:
            return changes
        current = reservations.get(wanted.name)
        if wanted.name in state.reservations and current is not None:
            return changes + self._renew(qpu, wanted, current, now)
        return changes + self._create(qpu, wanted, state)

    def _create(self, qpu: str, wanted: Hold, state: SyncState) -> list[str]:
        # Recorded first: a daemon killed between the two steps finds the name on restart.
        state.reservations[wanted.name] = {"qpu": qpu, "kind": wanted.kind, "why": wanted.why}
        state.save()
        try:
            self.slurm.create_reservation(
                wanted.name,
                {qpu: wanted.count},
                start="now",
                end=slurm_time(wanted.end),
                users=["root"],
            )
        except SlurmCommandError as exc:  # e.g. someone else's reservation has that name
            del state.reservations[wanted.name]
            state.save()
            log.error("%s: cannot hold it (%s): %s", qpu, wanted.why, exc)
            return []
        log.info(
            "%s: %s: held with reservation %s (%d license(s) until %s)",
            qpu,
            wanted.why,
            wanted.name,
            wanted.count,
            slurm_time(wanted.end),
        )
        if wanted.kind == "hold":
            self._warn_running_jobs(qpu, wanted.why)
        return [f"created {wanted.name} ({qpu}:{wanted.count})"]

    def _warn_running_jobs(self, qpu: str, why: str) -> None:
        """A warning line in the output of the jobs that run on the QPU (they keep running)."""
        text = "".join(c if c.isprintable() else " " for c in why)[:200]
        message = f"qrmi: QPU {qpu} is {text}; this job keeps running, new jobs for it wait"
        try:
            running = [j for j in self.slurm.jobs() if j.state == "RUNNING" and qpu in j.licenses]
        except SlurmCommandError as exc:
            log.warning("%s: cannot list its running jobs to warn them: %s", qpu, exc)
            return
        for job in running:
            try:
                self.slurm.notify(job.job_id, message)
            except SlurmCommandError as exc:
                log.warning("%s: cannot warn job %s: %s", qpu, job.job_id, exc)
            else:
                log.info("%s: warned running job %s", qpu, job.job_id)

    def _renew(self, qpu: str, wanted: Hold, current: Reservation, now: datetime) -> list[str]:
        count = current.licenses.get(qpu)
        ends_late = current.end > wanted.end  # another reservation starts before it ends
        ends_soon = current.end - now < self.hold_span / 2 and wanted.end > current.end
        if count == wanted.count and not ends_late and not ends_soon:
            return []
        try:
            self.slurm.update_reservation(
                wanted.name,
                end=slurm_time(wanted.end) if ends_late or ends_soon else None,
                licenses={qpu: wanted.count} if count != wanted.count else None,
            )
        except SlurmCommandError as exc:
            log.error("%s: cannot update reservation %s: %s", qpu, wanted.name, exc)
            return []
        log.info(
            "%s: reservation %s now holds %d license(s) until %s",
            qpu,
            wanted.name,
            wanted.count,
            slurm_time(wanted.end),
        )
        return [f"updated {wanted.name} ({qpu}:{wanted.count})"]

    def run(self, interval: float, stop: threading.Event | None = None) -> None:
        """Run passes every ``interval`` seconds until ``stop`` is set or SIGTERM/SIGINT."""
        stop = stop or threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping after this pass (reservations stay as they are)", signum)
            stop.set()

        with contextlib.suppress(ValueError):  # not the main thread: the caller stops us
            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)
        log.info("watching the QPUs of %s every %g s", self.config_path, interval)
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # a bug or a full disk must not end the watch
                log.exception("sync pass failed; trying again in %g s", interval)
            stop.wait(interval)
