"""``qrmi slurm sync`` / ``reserve`` / ``status`` decisions, with Slurm faked at the subprocess
boundary (``fakeslurm``) and the QPUs being ledger QPUs whose status the config sets."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from qrmi.errors import InvalidInputError
from qrmi.models import ResourceCapacity, ResourceStatus, ResourceStatusCode
from qrmi.slurm.reserve import declare_window, delete_window, parse_start
from qrmi.slurm.slurmcli import SlurmCli
from qrmi.slurm.status import collect, render
from qrmi.slurm.sync import Syncer, SyncState, render_held_lua
from qrmi.testing.munge import MungeDaemon, MungeUnavailableError, munge_available

from .fakeslurm import FakeJob, FakeReservation, FakeSlurm

T0 = datetime(2026, 12, 1, 9, 0, 0)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Site:
    """A config file of ledger QPUs, a fake Slurm and a sync daemon's state dir."""

    root: Path
    slurm: FakeSlurm
    clock: Clock
    modes: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "qrmi_config.json"

    @property
    def state_dir(self) -> Path:
        return self.root / "sync"

    def set_mode(self, qpu: str, mode: str) -> None:
        """The ledger QPU's status: ``online``, ``offline`` or ``unreachable``."""
        self.modes[qpu] = mode
        self.write_config()

    def write_config(self) -> None:
        resources = [
            {"name": n, "type": "test-ledger", "environment": {"QRMI_LEDGER_MODE": m}}
            for n, m in self.modes.items()
        ]
        self.config.write_text(json.dumps({"resources": resources}))
        self.config.chmod(0o600)

    def syncer(self, **kwargs: object) -> Syncer:
        return Syncer(
            self.config,
            self.state_dir,
            slurm=SlurmCli(self.slurm),
            clock=self.clock,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
def site(tmp_path: Path, ledger_backend: str) -> Site:
    clock = Clock()
    s = Site(tmp_path, FakeSlurm({"qa": 2, "qb": 1}, now=clock), clock)
    s.modes = {"qa": "online", "qb": "online"}
    s.write_config()
    return s


def test_an_offline_qpu_is_held_with_all_its_licenses_for_root_only(site: Site) -> None:
    site.set_mode("qa", "offline")
    changes = site.syncer().run_once()
    assert changes == ["created qrmi-qa-offline (qa:2)"]
    hold = site.slurm.reservations["qrmi-qa-offline"]
    assert hold.licenses == {"qa": 2}
    assert hold.users == "root"
    assert hold.flags == "ANY_NODES"  # nodes stay free for everyone
    assert hold.start == T0 and hold.end == T0 + timedelta(days=1)
    assert "qb" not in {q for r in site.slurm.reservations.values() for q in r.licenses}


def test_running_jobs_of_a_qpu_that_is_held_get_a_warning_line_once(site: Site) -> None:
    site.slurm.jobs = [
        FakeJob(7, "RUNNING", "alice", "qa:1"),
        FakeJob(8, "PENDING", "bob", "qa:1"),
        FakeJob(9, "RUNNING", "carol", "qb:1"),
    ]
    site.set_mode("qa", "offline")
    site.syncer().run_once()
    site.syncer().run_once()
    assert site.slurm.notices == [
        (
            7,
            "qrmi: QPU qa is offline: in maintenance until noon; this job keeps running, "
            "new jobs for it wait",
        )
    ]


def test_a_second_pass_and_a_restarted_daemon_change_nothing(site: Site) -> None:
    site.set_mode("qa", "offline")
    site.syncer().run_once()
    before = len(site.slurm.changes())
    site.clock.now += timedelta(minutes=1)
    assert site.syncer().run_once() == []  # a new object: the daemon restarted
    assert site.syncer().run_once() == []
    assert len(site.slurm.changes()) == before


def test_a_qpu_back_online_has_its_hold_deleted(site: Site) -> None:
    site.set_mode("qa", "offline")
    site.syncer().run_once()
    site.set_mode("qa", "online")
    assert site.syncer().run_once() == ["deleted qrmi-qa-offline"]
    assert site.slurm.reservations == {}


def test_an_unreachable_qpu_is_held_only_after_n_failures_in_a_row(site: Site) -> None:
    site.set_mode("qb", "unreachable")
    syncer = site.syncer(failures=3)
    assert syncer.run_once() == []
    assert syncer.run_once() == []
    assert syncer.run_once() == ["created qrmi-qb-unreachable (qb:1)"]
    record = SyncState.load(site.state_dir).qpus["qb"]
    assert record["condition"] == "unreachable" and "127.0.0.1:9" in record["reason"]
    site.set_mode("qb", "online")
    assert syncer.run_once() == ["deleted qrmi-qb-unreachable"]


def test_a_failure_between_successes_keeps_the_last_condition(site: Site) -> None:
    site.set_mode("qa", "offline")
    syncer = site.syncer(failures=2)
    syncer.run_once()
    site.set_mode("qa", "unreachable")
    assert syncer.run_once() == []  # still held as offline, not released, not renamed
    assert list(site.slurm.reservations) == ["qrmi-qa-offline"]
    site.set_mode("qa", "online")
    syncer.run_once()
    site.set_mode("qa", "unreachable")
    assert syncer.run_once() == []  # one failure: still online, nothing held
    assert site.slurm.reservations == {}


def test_a_change_of_condition_replaces_the_hold(site: Site) -> None:
    site.set_mode("qa", "offline")
    syncer = site.syncer(failures=1)
    syncer.run_once()
    site.set_mode("qa", "unreachable")
    assert syncer.run_once() == ["deleted qrmi-qa-offline", "created qrmi-qa-unreachable (qa:2)"]


def test_reservations_it_did_not_create_are_never_touched(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.slurm.reservations["qrmi-qa-offline"] = FakeReservation(
        "qrmi-qa-offline", {"qa": 1}, T0, T0 + timedelta(hours=1), users="alice"
    )
    site.slurm.reservations["qrmi-other"] = FakeReservation(
        "qrmi-other", {"qb": 1}, T0, T0 + timedelta(hours=1)
    )
    site.set_mode("qa", "offline")
    with caplog.at_level(logging.ERROR, logger="qrmi.slurm.sync"):
        assert site.syncer().run_once() == []
    assert "Duplicate reservation name" in caplog.text
    site.set_mode("qa", "online")
    assert site.syncer().run_once() == []
    assert set(site.slurm.reservations) == {"qrmi-qa-offline", "qrmi-other"}
    assert site.slurm.reservations["qrmi-qa-offline"].users == "alice"


def test_a_name_recorded_but_never_created_is_created_on_restart(site: Site) -> None:
    """A daemon killed between recording a hold and creating it."""
    site.set_mode("qa", "offline")
    state = SyncState.load(site.state_dir)
    state.reservations["qrmi-qa-offline"] = {"qpu": "qa", "kind": "hold", "why": "x"}
    state.save()
    assert site.syncer().run_once() == [
        "forgot qrmi-qa-offline (no longer in Slurm)",
        "created qrmi-qa-offline (qa:2)",
    ]


def test_a_hold_ends_where_another_reservation_of_the_qpu_starts(site: Site) -> None:
    window = T0 + timedelta(hours=3)
    site.slurm.reservations["course"] = FakeReservation(
        "course", {"qa": 2}, window, window + timedelta(hours=2), users="bob"
    )
    site.set_mode("qa", "offline")
    assert site.syncer().run_once() == ["created qrmi-qa-offline (qa:2)"]
    assert site.slurm.reservations["qrmi-qa-offline"].end == window


def test_no_hold_while_another_reservation_has_all_the_licenses(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.slurm.reservations["course"] = FakeReservation(
        "course", {"qa": 2}, T0 - timedelta(hours=1), T0 + timedelta(hours=1), users="bob"
    )
    site.set_mode("qa", "offline")
    with caplog.at_level(logging.INFO, logger="qrmi.slurm.sync"):
        assert site.syncer().run_once() == []
        assert site.syncer().run_once() == []
    assert caplog.text.count("other reservations hold its licenses") == 1  # said once
    site.clock.now += timedelta(hours=2)  # the window ended (Slurm dropped it)
    del site.slurm.reservations["course"]
    assert site.syncer().run_once() == ["created qrmi-qa-offline (qa:2)"]


def test_a_hold_is_renewed_before_it_ends(site: Site) -> None:
    site.set_mode("qa", "offline")
    site.syncer().run_once()
    site.clock.now += timedelta(hours=13)
    assert site.syncer().run_once() == ["updated qrmi-qa-offline (qa:2)"]
    assert site.slurm.reservations["qrmi-qa-offline"].end == site.clock.now + timedelta(days=1)


def test_lanes_drive_the_licenses_a_reservation_holds(site: Site) -> None:
    site.slurm.totals["qa"] = 3
    lanes = {"n": 1}

    def probe(rdef: object) -> ResourceStatus:
        return ResourceStatus(ResourceStatusCode.Online, capacity=ResourceCapacity(0, lanes["n"]))

    syncer = site.syncer(probe=probe)
    assert syncer.run_once() == ["created qrmi-qa-lanes (qa:2)"]  # qb: 1 lane, 1 license
    assert site.slurm.reservations["qrmi-qa-lanes"].licenses == {"qa": 2}
    lanes["n"] = 2
    assert syncer.run_once() == ["updated qrmi-qa-lanes (qa:1)"]
    lanes["n"] = 3
    assert syncer.run_once() == ["deleted qrmi-qa-lanes"]
    assert "qrmi-qa-lanes" not in site.slurm.reservations


def test_a_qpu_whose_status_call_hangs_counts_as_a_failure(site: Site) -> None:
    release = threading.Event()

    def probe(rdef: object) -> ResourceStatus:
        release.wait(60)
        return ResourceStatus(ResourceStatusCode.Online)

    try:
        syncer = site.syncer(probe=probe, failures=1, probe_timeout=0.1)
        assert syncer.run_once() == [
            "created qrmi-qa-unreachable (qa:2)",
            "created qrmi-qb-unreachable (qb:1)",
        ]
        assert SyncState.load(site.state_dir).qpus["qa"]["reason"] == "no answer within 0.1 s"
    finally:
        release.set()


def test_a_slurm_that_does_not_answer_changes_nothing_and_raises_nothing(site: Site) -> None:
    site.set_mode("qa", "offline")
    site.slurm.broken = True
    assert site.syncer().run_once() == []
    site.slurm.broken = False
    assert site.syncer().run_once() == ["created qrmi-qa-offline (qa:2)"]


def test_a_broken_config_keeps_the_holds(site: Site) -> None:
    site.set_mode("qa", "offline")
    site.syncer().run_once()
    site.config.write_text("{not json")
    assert site.syncer().run_once() == []
    assert list(site.slurm.reservations) == ["qrmi-qa-offline"]


def test_a_state_dir_others_may_write_is_refused(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.state_dir.mkdir(mode=0o777)
    site.state_dir.chmod(0o777)
    site.set_mode("qa", "offline")
    with caplog.at_level(logging.ERROR, logger="qrmi.slurm.sync"):
        assert site.syncer().run_once() == []
    assert "chmod 700" in caplog.text
    assert site.slurm.reservations == {}


def test_a_qpu_removed_from_the_config_loses_its_hold(site: Site) -> None:
    site.set_mode("qa", "offline")
    site.syncer().run_once()
    del site.modes["qa"]
    site.write_config()
    assert site.syncer().run_once() == ["deleted qrmi-qa-offline"]
    assert list(SyncState.load(site.state_dir).qpus) == ["qb"]


# ----- reserve ---------------------------------------------------------------------------------


def _declare(site: Site, **kwargs: object) -> object:
    options: dict[str, object] = {"start": "now+1hour", "duration": "60", "users": ["alice"]}
    options.update(kwargs)
    return declare_window(
        SlurmCli(site.slurm), site.state_dir, "qa", "course", now=site.clock.now, **options
    )  # type: ignore[arg-type]


def test_a_window_reserves_the_qpu_for_its_users(site: Site) -> None:
    _declare(site, users=["alice,bob"])
    window = site.slurm.reservations["qrmi-qa-window-course"]
    assert window.licenses == {"qa": 2}
    assert window.users == "alice,bob" and window.flags == "ANY_NODES"
    assert window.start == T0 + timedelta(hours=1)
    assert window.end == T0 + timedelta(hours=2)
    assert site.syncer().run_once() == []  # sync leaves windows alone
    assert "qrmi-qa-window-course" in site.slurm.reservations


def test_a_window_shortens_the_daemons_hold_that_overlaps_it(site: Site) -> None:
    site.set_mode("qa", "offline")
    site.syncer().run_once()
    _declare(site)
    assert site.slurm.reservations["qrmi-qa-offline"].end == T0 + timedelta(hours=1)
    assert site.syncer().run_once() == []


def test_a_window_slurm_refuses_says_why_and_is_not_recorded(site: Site) -> None:
    site.slurm.reservations["other"] = FakeReservation(
        "other", {"qa": 1}, T0, T0 + timedelta(days=2)
    )
    with pytest.raises(InvalidInputError, match="other reservations already hold qa"):
        _declare(site)
    assert SyncState.load(site.state_dir).reservations == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": []}, "--user NAME and/or --account NAME"),
        ({"users": ["bad user"]}, "--user 'bad user'"),
        ({"duration": "2 hours"}, "--duration '2 hours'"),
        ({"duration": None}, "exactly one of --duration"),
        ({"start": "tomorrow"}, "--start 'tomorrow'"),
        ({"count": 5}, "--count 5 must be between 1 and 2"),
    ],
)
def test_bad_window_arguments_are_named(
    site: Site, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(")):
        _declare(site, **kwargs)
    assert site.slurm.reservations == {}


def test_an_unknown_qpu_is_refused(site: Site) -> None:
    with pytest.raises(InvalidInputError, match="'zz' has no Slurm license"):
        declare_window(
            SlurmCli(site.slurm), site.state_dir, "zz", "x", start="now", duration="5", users=["a"]
        )


def test_only_declared_windows_can_be_deleted(site: Site) -> None:
    site.slurm.reservations["maint"] = FakeReservation(
        "maint", {"qa": 1}, T0, T0 + timedelta(hours=1)
    )
    _declare(site)
    with pytest.raises(InvalidInputError, match="declared: qrmi-qa-window-course"):
        delete_window(SlurmCli(site.slurm), site.state_dir, "maint")
    delete_window(SlurmCli(site.slurm), site.state_dir, "qrmi-qa-window-course")
    assert list(site.slurm.reservations) == ["maint"]


def test_a_window_jobs_run_in_ends_now_instead_and_is_forgotten_once_gone(site: Site) -> None:
    _declare(site, start="now")
    name = "qrmi-qa-window-course"
    site.slurm.jobs = [FakeJob(5, "RUNNING", "alice", "qa:1", reservation=name)]
    assert delete_window(SlurmCli(site.slurm), site.state_dir, name) is False
    assert site.slurm.reservations[name].end == T0  # ended, not deleted: the job runs on
    site.slurm.jobs = []
    del site.slurm.reservations[name]  # Slurm drops it once its jobs are done
    assert site.syncer().run_once() == [f"forgot {name} (no longer in Slurm)"]


def test_start_times() -> None:
    assert parse_start("now", T0) == T0
    assert parse_start("now+90minutes", T0) == T0 + timedelta(minutes=90)
    assert parse_start("now+1day", T0) == T0 + timedelta(days=1)
    assert parse_start("2026-12-02T09:00", T0) == datetime(2026, 12, 2, 9, 0)


# ----- status ----------------------------------------------------------------------------------


def test_status_shows_vendor_licenses_jobs_hold_and_next_window(site: Site) -> None:
    site.set_mode("qa", "offline")
    site.syncer().run_once()
    site.slurm.jobs = [
        FakeJob(1, "RUNNING", "alice", "qa:1"),
        FakeJob(2, "PENDING", "bob", "qa:1,qb:1", reason="Licenses"),
        FakeJob(3, "PENDING", "bob", "(null)"),
    ]
    window = T0 + timedelta(days=2)
    site.slurm.reservations["qrmi-qa-window-course"] = FakeReservation(
        "qrmi-qa-window-course", {"qa": 2}, window, window + timedelta(hours=1), users="carol"
    )
    rows = collect(
        ["qa", "qb"], SlurmCli(site.slurm), SyncState.load(site.state_dir), now=site.clock
    )
    qa, qb = rows
    assert (qa.vendor, qa.reason) == ("offline", "in maintenance until noon")
    assert (qa.licenses_total, qa.licenses_used, qa.licenses_reserved) == (2, 1, 2)
    assert (qa.running, qa.pending, qa.held_by) == (1, 1, "qrmi-qa-offline")
    assert qa.next_window.startswith("qrmi-qa-window-course 2026-12-03T09:00:00")
    assert qa.next_window.endswith("for carol")
    assert (qb.vendor, qb.running, qb.pending, qb.held_by) == ("online", 0, 1, "-")
    table = render(rows).splitlines()
    assert table[0].split() == [
        "QPU",
        "VENDOR",
        "LICENSES",
        "RUN",
        "PEND",
        "HELD_BY",
        "NEXT_WINDOW",
        "REASON",
    ]
    assert table[1].split()[:6] == ["qa", "offline", "1/2+2rsv", "1", "1", "qrmi-qa-offline"]


def test_status_without_the_daemons_state_shows_unknown_vendor(site: Site) -> None:
    rows = collect(["qa"], SlurmCli(site.slurm), None, now=site.clock)
    assert rows[0].vendor == "?" and rows[0].held_by == "-"


def test_a_user_who_cannot_read_the_state_sees_holds_by_their_names(site: Site) -> None:
    site.set_mode("qa", "offline")
    site.syncer().run_once()
    site.slurm.reservations["qrmi-qb-window-x"] = FakeReservation(
        "qrmi-qb-window-x", {"qb": 1}, T0, T0 + timedelta(hours=1), users="carol"
    )
    qa, qb = collect(["qa", "qb"], SlurmCli(site.slurm), None, now=site.clock)
    assert (qa.vendor, qa.held_by) == ("offline", "qrmi-qa-offline")
    assert (qb.vendor, qb.held_by) == ("?", "-")  # a window is not a hold
    assert qb.next_window.startswith("qrmi-qb-window-x now..")


# ----- through a real backend: the IBM Quantum System fake --------------------------------------


def test_ibm_quantum_system_lanes_and_pause_reach_slurm(tmp_path: Path) -> None:
    from qrmi.testing.ibm_quantum_system import QuantumSystemFake

    clock = Clock()
    slurm = FakeSlurm({"ibm_perth": 3}, now=clock)
    config = tmp_path / "qrmi_config.json"
    with QuantumSystemFake(devices={"ibm_perth": "fake_perth"}, lanes=2) as fake:
        apikey = fake.settings["QRMI_IBM_QS_IAM_APIKEY"]
        resource = {"name": "ibm_perth", "type": "ibm-quantum-system", "environment": fake.settings}
        config.write_text(json.dumps({"resources": [resource]}))
        config.chmod(0o600)
        syncer = Syncer(config, tmp_path / "sync", slurm=SlurmCli(slurm), clock=clock)
        assert syncer.run_once() == ["created qrmi-ibm_perth-lanes (ibm_perth:1)"]
        fake.state.devices["ibm_perth"].status = "paused"
        assert syncer.run_once() == [
            "deleted qrmi-ibm_perth-lanes",
            "created qrmi-ibm_perth-paused (ibm_perth:3)",
        ]
        fake.state.devices["ibm_perth"].status = "online"
        assert syncer.run_once() == [
            "deleted qrmi-ibm_perth-paused",
            "created qrmi-ibm_perth-lanes (ibm_perth:1)",
        ]
    assert apikey not in (tmp_path / "sync" / "sync.json").read_text()


# ----- the held list job_submit.lua reads ------------------------------------------------------

HOSTILE = 'x" } os.exit(3) --\n%s %d \\ ]] "'


def test_the_held_list_is_data_whatever_the_vendor_says(tmp_path: Path) -> None:
    lua = shutil.which("lua5.1") or shutil.which("lua")
    if lua is None:
        pytest.skip("no Lua interpreter")
    path = tmp_path / "qrmi_held.lua"
    path.write_text(render_held_lua({"qa": HOSTILE, 'q"b': "offline: ok"}))
    script = f'for k, v in pairs(dofile("{path}")) do io.write(k, "=", v, "\\n") end'
    result = subprocess.run([lua, "-e", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [
        'q"b=offline: ok',
        "qa=" + HOSTILE.replace("\n", " "),
    ]


def test_the_held_list_follows_the_holds(site: Site) -> None:
    held = site.root / "qrmi_held.lua"
    site.set_mode("qa", "offline")
    site.syncer(lua_data=held).run_once()
    assert '["qa"] = "offline: in maintenance until noon",' in held.read_text()
    assert held.stat().st_mode & 0o777 == 0o644
    site.set_mode("qa", "online")
    site.syncer(lua_data=held).run_once()
    assert "qa" not in held.read_text()


# ----- gateway mode: the controller's config names the gateway, the gateway holds the keys ------


@pytest.fixture
def munge_daemon() -> Iterator[MungeDaemon]:
    if os.geteuid() != 0 or not munge_available():
        pytest.skip("root's MUNGE credential needs root and munged")
    try:
        daemon = MungeDaemon().start()
    except MungeUnavailableError as exc:
        pytest.skip(f"munged cannot start: {exc}")
    try:
        yield daemon
    finally:
        daemon.stop()


def _gateway_mode_config(path: Path, url: str, socket: str, names: list[str]) -> None:
    resources = [
        {
            "name": name,
            "type": "ibm-quantum-system",
            "environment": {"QRMI_GATEWAY_URL": url, "QRMI_GATEWAY_MUNGE_SOCKET": socket},
        }
        for name in names
    ]
    path.write_text(json.dumps({"resources": resources}))
    path.chmod(0o600)


def _pass_until(syncer: Syncer) -> list[str]:
    """Passes until one changes something (the gateway asks a vendor every few
    seconds, so the first pass after a change may still hear the last answer)."""
    deadline = time.monotonic() + 60
    changes: list[str] = []
    while time.monotonic() < deadline:
        changes = syncer.run_once()
        if changes:
            return changes
        time.sleep(0.5)
    return changes


def test_gateway_mode_qpus_are_held_and_released_as_their_gateway_reports(
    tmp_path: Path, munge_daemon: MungeDaemon
) -> None:
    from qrmi.gateway.testing import LocalGateway
    from qrmi.testing.ibm_quantum_system import QuantumSystemFake

    clock = Clock()
    slurm = FakeSlurm({"ibm_perth": 2, "ibm_nope": 1}, now=clock)
    config = tmp_path / "qrmi_config.json"
    with QuantumSystemFake(devices={"ibm_perth": "fake_perth"}, lanes=2) as fake:
        apikey = fake.settings["QRMI_IBM_QS_IAM_APIKEY"]
        gateway_config = {
            "resources": [
                {"name": "ibm_perth", "type": "ibm-quantum-system", "environment": fake.settings}
            ]
        }
        gateway = LocalGateway(
            gateway_config, tmp_path / "gateway", munge_socket=munge_daemon.socket
        ).start()
        try:
            _gateway_mode_config(
                config, gateway.url, munge_daemon.socket, ["ibm_perth", "ibm_nope"]
            )
            syncer = Syncer(
                config, tmp_path / "sync", slurm=SlurmCli(slurm), clock=clock, failures=1
            )
            # ibm_nope is not a QPU of that gateway: held as unreachable, with the reason.
            assert syncer.run_once() == ["created qrmi-ibm_nope-unreachable (ibm_nope:1)"]
            record = SyncState.load(tmp_path / "sync").qpus["ibm_nope"]
            assert "does not report this QPU" in record["reason"]

            device = fake.state.devices["ibm_perth"]
            device.status, device.message = "offline", "calibration until 10:00"
            assert _pass_until(syncer) == ["created qrmi-ibm_perth-offline (ibm_perth:2)"]
            assert slurm.reservations["qrmi-ibm_perth-offline"].users == "root"
            assert SyncState.load(tmp_path / "sync").qpus["ibm_perth"]["reason"] == (
                "calibration until 10:00"
            )
            rows = collect(["ibm_perth"], SlurmCli(slurm), SyncState.load(tmp_path / "sync"))
            assert (rows[0].vendor, rows[0].held_by) == ("offline", "qrmi-ibm_perth-offline")

            device.status = "online"
            assert _pass_until(syncer) == ["deleted qrmi-ibm_perth-offline"]

            assert gateway.service is not None
            gateway.service.pause("ibm_perth", "firmware upgrade")
            assert _pass_until(syncer) == ["created qrmi-ibm_perth-paused (ibm_perth:2)"]
            reason = SyncState.load(tmp_path / "sync").qpus["ibm_perth"]["reason"]
            assert reason == "paused at the QRMI gateway: firmware upgrade"
        finally:
            gateway.stop()
    assert apikey not in (tmp_path / "sync" / "sync.json").read_text()


def test_a_gateway_that_does_not_answer_counts_as_a_failure_of_its_qpus(
    tmp_path: Path, munge_daemon: MungeDaemon
) -> None:
    clock = Clock()
    slurm = FakeSlurm({"qa": 1}, now=clock)
    config = tmp_path / "qrmi_config.json"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nobody listens there
    _gateway_mode_config(config, url, munge_daemon.socket, ["qa"])
    syncer = Syncer(
        config, tmp_path / "sync", slurm=SlurmCli(slurm), clock=clock, failures=2, probe_timeout=2
    )
    assert syncer.run_once() == []  # one failure is not enough
    assert syncer.run_once() == ["created qrmi-qa-unreachable (qa:1)"]
    reason = SyncState.load(tmp_path / "sync").qpus["qa"]["reason"]
    assert reason.startswith(f"the QRMI gateway at {url}:")
