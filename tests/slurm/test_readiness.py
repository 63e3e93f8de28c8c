"""QPU readiness on a live Slurm: ``qrmi slurm sync`` holds jobs for an offline QPU and lets
them go when it is back; ``qrmi slurm reserve`` admits its users only. A cluster of its own
(the ledger QPUs' status is set in its config, which the daemon re-reads every pass)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrmi.testing.slurm_cluster import ClusterUnavailable, SlurmCluster

from .conftest import FAKEQPU, _install_system_deps

QPUS = ("qs", "qr", "qw", "qd")


class Readiness:
    """The cluster plus the sync tools run as the admin would (the cluster's Python)."""

    def __init__(self, cluster: SlurmCluster, ledger: Path) -> None:
        self.cluster = cluster
        self.ledger = ledger
        self.sync_dir = cluster.root / "qrmi-sync"

    def set_mode(self, qpu: str, mode: str) -> None:
        """The ledger QPU's vendor status (``online``, ``offline``)."""
        path = self.cluster.config_path
        config = json.loads(path.read_text())
        for resource in config["resources"]:
            if resource["name"] == qpu:
                resource["environment"]["QRMI_LEDGER_MODE"] = mode
        path.write_text(json.dumps(config))

    def qrmi(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.cluster.python is not None
        command = [str(self.cluster.python), "-m", "qrmi.slurm.cli", *args]
        return self.cluster.run([*command, *self.common(args[0])])

    def common(self, command: str) -> list[str]:
        options = ["--sync-state-dir", str(self.sync_dir)]
        if command in ("sync", "status"):
            options += ["--config", str(self.cluster.config_path)]
        if command == "sync":
            options += ["--lua-data", str(self.cluster.etc / "qrmi_held.lua")]
        return options

    def sync_once(self) -> list[str]:
        result = self.qrmi("sync", "--once")
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    def reservations(self) -> dict[str, str]:
        """Reservation name -> its StartTime."""
        found = {}
        for line in self.cluster.run(["scontrol", "-o", "show", "res"]).stdout.splitlines():
            fields = dict(item.partition("=")[::2] for item in line.split())
            if "ReservationName" in fields:
                found[fields["ReservationName"]] = fields["StartTime"]
        return found

    def reason(self, job_id: int) -> str:
        return self.cluster.job(job_id).get("Reason", "")

    def nodes_idle(self) -> bool:
        states = self.cluster.run(["sinfo", "-h", "-N", "-o", "%t"]).stdout.split()
        return bool(states) and all(s == "idle" for s in states)


@pytest.fixture(scope="module")
def ready() -> Iterator[Readiness]:
    if os.geteuid() != 0:
        pytest.skip("the Slurm test cluster needs root")
    _install_system_deps()
    root = Path(tempfile.mkdtemp(prefix="qrmi-ready-", dir="/tmp"))
    ledger = root / "ledger"
    ledger.mkdir()
    config = {
        "resources": [
            {
                "name": name,
                "type": "test-ledger",
                "environment": {"QRMI_LEDGER_DIR": str(ledger), "QRMI_LEDGER_MODE": "online"},
            }
            for name in QPUS
        ]
    }
    cluster = SlurmCluster(config, root=root, site_dirs=[FAKEQPU], helper_timeout=6)
    try:
        cluster.start()
    except ClusterUnavailable as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"Slurm test cluster unavailable: {exc}")
    try:
        yield Readiness(cluster, ledger)
    finally:
        cluster.cleanup()


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def test_an_offline_qpu_holds_new_jobs_pending_and_lets_them_start_when_back(
    ready: Readiness,
) -> None:
    cluster = ready.cluster
    ready.set_mode("qs", "offline")
    assert ready.sync_once() == ["created qrmi-qs-offline (qs:1)"]

    submitted = cluster.as_user(["sbatch", "--parsable", "--qpu=qs", "--wrap", "echo ran"])
    assert submitted.returncode == 0, submitted.stderr
    assert "qrmi: QPU qs is offline: in maintenance until noon; the job waits" in submitted.stderr
    job = int(submitted.stdout.strip())
    _wait(lambda: ready.reason(job) == "Licenses", 30, "the job to pend on the QPU's license")
    assert cluster.job(job)["JobState"] == "PENDING"
    assert ready.nodes_idle()  # the job holds no node while it waits
    assert "qrmi-qs-offline" in cluster.as_user(["sinfo", "-T"]).stdout  # what users see
    status = ready.qrmi("status")
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if x.startswith("qs "))
    assert line.split()[:6] == ["qs", "offline", "0/1+1rsv", "0", "1", "qrmi-qs-offline"]
    assert line.endswith("in maintenance until noon")
    assert cluster.python is not None
    mine = cluster.as_user([str(cluster.python), "-m", "qrmi.slurm.cli", "status"])
    assert mine.returncode == 0, mine.stderr  # a user: no state, no config, still the hold
    line = next(x for x in mine.stdout.splitlines() if x.startswith("qs "))
    assert line.split()[:6] == ["qs", "offline", "0/1+1rsv", "0", "1", "qrmi-qs-offline"]
    other = cluster.sbatch("--wrap", "true")  # nodes stay free for jobs without the QPU
    assert cluster.wait_done(other) == "COMPLETED"
    assert ready.sync_once() == []

    ready.set_mode("qs", "online")
    assert ready.sync_once() == ["deleted qrmi-qs-offline"]
    assert cluster.wait_done(job) == "COMPLETED"
    assert cluster.output(job).strip() == "ran"


def test_a_running_job_is_not_killed_when_its_qpu_goes_offline(ready: Readiness) -> None:
    cluster = ready.cluster
    started, marker = cluster.work / "qr-started", cluster.work / "qr-go"
    job = cluster.sbatch(
        "--qpu=qr",
        "--wrap",
        f"touch {started}; while [ ! -e {marker} ]; do sleep 0.2; done; echo finished",
    )
    _wait(started.exists, 60, "the job to hold its QPU and run")
    ready.set_mode("qr", "offline")
    assert ready.sync_once() == ["created qrmi-qr-offline (qr:1)"]
    assert cluster.job(job)["JobState"] == "RUNNING"
    cluster.as_user(["touch", str(marker)])
    assert cluster.wait_done(job) == "COMPLETED"
    assert "finished" in cluster.output(job)
    assert (
        "error: qrmi: QPU qr is offline: in maintenance until noon; this job keeps running"
        in cluster.output(job)
    )
    ready.set_mode("qr", "online")
    assert ready.sync_once() == ["deleted qrmi-qr-offline"]


def test_a_declared_window_admits_its_users_only(ready: Readiness) -> None:
    cluster = ready.cluster
    made = ready.qrmi(
        "reserve", "qw", "--label", "course", "--duration", "30", "--user", cluster.user
    )
    assert made.returncode == 0, made.stderr
    assert "--reservation=qrmi-qw-window-course" in made.stdout
    window = "--reservation=qrmi-qw-window-course"
    started, marker = cluster.work / "qw-started", cluster.work / "qw-go"
    try:
        inside = cluster.sbatch("--qpu=qw", window, "--wrap", "true")
        assert cluster.wait_done(inside) == "COMPLETED"
        refused = cluster.run(["sbatch", "-o", "/dev/null", "--qpu=qw", window, "--wrap", "true"])
        assert "Access denied to requested reservation" in refused.stderr  # root is not in it
        outside = cluster.sbatch("--qpu=qw", "-t", "1", "--wrap", "true")
        _wait(lambda: ready.reason(outside) == "Licenses", 30, "a job outside the window to pend")
        assert cluster.job(outside)["JobState"] == "PENDING"  # the license is free, but reserved
        assert ready.sync_once() == []  # the daemon leaves the window alone
        running = cluster.sbatch(
            "--qpu=qw",
            window,
            "--wrap",
            f"touch {started}; while [ ! -e {marker} ]; do sleep 0.2; done",
        )
        _wait(started.exists, 60, "a job in the window to run")
    finally:
        gone = ready.qrmi("unreserve", "qrmi-qw-window-course")
        cluster.as_user(["touch", str(marker)])
    assert gone.returncode == 0, gone.stderr
    assert "ended qrmi-qw-window-course now" in gone.stdout  # Slurm cannot delete it yet
    assert cluster.wait_done(running) == "COMPLETED"
    assert cluster.wait_done(outside) == "COMPLETED"


def _daemon(ready: Readiness, log: Path) -> subprocess.Popen[bytes]:
    assert ready.cluster.python is not None
    command = [str(ready.cluster.python), "-m", "qrmi.slurm.cli", "sync", "--interval", "0.5"]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*command, *ready.common("sync")],
            env=ready.cluster.env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def _passes(ready: Readiness) -> str:
    state = json.loads((ready.sync_dir / "sync.json").read_text())
    return str(state["qpus"]["qd"]["checked"])


def test_the_daemon_killed_and_restarted_changes_nothing_twice(
    ready: Readiness, tmp_path: Path
) -> None:
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    ready.set_mode("qd", "offline")
    daemon = _daemon(ready, first_log)
    try:
        _wait(lambda: "held with reservation" in first_log.read_text(), 60, "the daemon's hold")
    finally:
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait()
    started = ready.reservations()["qrmi-qd-offline"]

    daemon = _daemon(ready, second_log)
    try:
        seen = _passes(ready)
        _wait(lambda: _passes(ready) != seen, 60, "a pass of the restarted daemon")
        seen = _passes(ready)
        _wait(lambda: _passes(ready) != seen, 60, "a second pass")
        assert ready.reservations()["qrmi-qd-offline"] == started  # not made again
        assert "held with reservation" not in second_log.read_text()

        ready.set_mode("qd", "online")
        _wait(lambda: "qrmi-qd-offline" not in ready.reservations(), 60, "the hold's end")
    finally:
        os.kill(daemon.pid, signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert "held with reservation qrmi-qd-offline" in first_log.read_text()
    assert "deleted reservation qrmi-qd-offline" not in first_log.read_text()
    assert "released: deleted reservation qrmi-qd-offline" in second_log.read_text()
