"""QPU readiness on a live Slurm with accounting: a window declared for an account admits that
account's jobs only, and a QPU in gateway mode (the controller's config names the QRMI gateway,
which holds the vendor credentials) is held while the gateway reports its vendor offline.

One cluster with accounts ``physics`` (user qrmitest) and ``chemistry`` (user qrmitest2), a
ledger QPU ``qacct`` in direct mode, ``ibm_perth``: the IBM Quantum System fake behind a
:class:`LocalGateway` in this process, and ``ibm_torino``: the IBM Quantum Compute Service fake
in direct mode, whose sessions are ``batch`` by the config and ``dedicated`` in a dedicated
window."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrmi.gateway.testing import LocalGateway
from qrmi.testing.ibm_compute_service import ComputeServiceFake
from qrmi.testing.ibm_quantum_system import QuantumSystemFake
from qrmi.testing.slurm_cluster import TEST_USER, TEST_USER2, ClusterUnavailable, SlurmCluster

from .conftest import FAKEQPU, _install_system_deps
from .test_readiness import Readiness, _wait


class Site(Readiness):
    """The cluster, the sync tools, and the vendor fake behind the gateway."""

    def __init__(
        self, cluster: SlurmCluster, ledger: Path, ibm: QuantumSystemFake, qcs: ComputeServiceFake
    ) -> None:
        super().__init__(cluster, ledger)
        self.ibm = ibm
        self.qcs = qcs

    def sync_until_change(self) -> list[str]:
        """Passes until one changes something (the gateway asks its vendor every few seconds,
        so the first pass after a change may still hear the last answer)."""
        deadline = time.monotonic() + 60
        changes: list[str] = []
        while time.monotonic() < deadline and not changes:
            changes = self.sync_once()
            if not changes:
                time.sleep(1)
        return changes


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    if os.geteuid() != 0:
        pytest.skip("the Slurm test cluster needs root")
    _install_system_deps()
    root = Path(tempfile.mkdtemp(prefix="qrmi-ready-gw-", dir="/tmp"))
    ledger = root / "ledger"
    ledger.mkdir()
    ledger.chmod(0o755)
    qacct = {
        "name": "qacct",
        "type": "test-ledger",
        "environment": {"QRMI_LEDGER_DIR": str(ledger), "QRMI_LEDGER_MODE": "online"},
    }
    perth = {"name": "ibm_perth", "type": "ibm-quantum-system", "environment": {}}
    torino = {"name": "ibm_torino", "type": "ibm-quantum-compute-service", "environment": {}}
    cluster = SlurmCluster(
        {"resources": [qacct, perth, torino]},
        root=root,
        site_dirs=[FAKEQPU],
        helper_timeout=6,
        accounting=True,
    )
    try:
        cluster.start()
    except ClusterUnavailable as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"Slurm test cluster with accounting unavailable: {exc}")
    munge_socket = str(root / "munge" / "munge.socket")
    ibm = QuantumSystemFake(devices={"ibm_perth": "fake_perth"}, lanes=1)
    qcs = ComputeServiceFake(devices={"ibm_torino": "fake_torino"})
    gateway: LocalGateway | None = None
    try:
        ibm.start()
        qcs.start()
        torino["environment"] = {**qcs.settings, "QRMI_IBM_QCS_SESSION_MODE": "batch"}
        gateway_config = {
            "resources": [
                {"name": "ibm_perth", "type": "ibm-quantum-system", "environment": ibm.settings}
            ]
        }
        gateway = LocalGateway(gateway_config, root / "gateway", munge_socket=munge_socket)
        gateway.start()
        perth["environment"] = {
            "QRMI_GATEWAY_URL": gateway.url,
            "QRMI_GATEWAY_MUNGE_SOCKET": munge_socket,
        }
        resources = [qacct, perth, torino]
        cluster.config_path.write_text(json.dumps({"resources": resources}, indent=2))
        yield Site(cluster, ledger, ibm, qcs)
    finally:
        if gateway is not None:
            gateway.stop()
        ibm.stop()
        qcs.stop()
        cluster.cleanup()


@pytest.mark.slurm
def test_a_window_for_an_account_admits_that_accounts_jobs_only(site: Site) -> None:
    cluster = site.cluster
    made = site.qrmi(
        "reserve", "qacct", "--label", "lab", "--duration", "30", "--account", "physics"
    )
    assert made.returncode == 0, made.stderr
    name = "qrmi-qacct-window-lab"
    window = f"--reservation={name}"
    assert "Accounts=physics" in cluster.run(["scontrol", "show", "res", name]).stdout
    outside = None
    try:
        inside = cluster.sbatch("--qpu=qacct", window, "--wrap", "echo physics", user=TEST_USER)
        assert cluster.wait_done(inside) == "COMPLETED"
        assert cluster.output(inside, user=TEST_USER).strip() == "physics"

        refused = cluster.as_user(
            ["sbatch", "--qpu=qacct", window, "--wrap", "true"], user=TEST_USER2
        )
        assert refused.returncode != 0
        assert "Access denied to requested reservation" in refused.stderr

        outside = cluster.sbatch("--qpu=qacct", "-t", "1", "--wrap", "true", user=TEST_USER2)
        _wait(lambda: site.reason(outside) == "Licenses", 30, "chemistry's job to pend")
        assert cluster.job(outside)["JobState"] == "PENDING"  # the license is free, but reserved
        assert cluster.job(outside)["Account"] == "chemistry"
        assert site.sync_once() == []  # the daemon leaves the window alone
    finally:
        gone = site.qrmi("unreserve", "qrmi-qacct-window-lab")
    assert gone.returncode == 0, gone.stderr
    assert cluster.wait_done(outside) == "COMPLETED"  # once the window is gone


@pytest.mark.slurm
def test_a_gateway_mode_qpu_offline_at_its_vendor_holds_new_jobs_until_it_is_back(
    site: Site,
) -> None:
    cluster = site.cluster
    config = cluster.config_path.read_text()
    assert "QRMI_IBM_QS_IAM_APIKEY" not in config  # the controller has no vendor credential
    device = site.ibm.state.devices["ibm_perth"]
    device.status, device.message = "offline", "calibration until 10:00"
    assert site.sync_until_change() == ["created qrmi-ibm_perth-offline (ibm_perth:1)"]

    submitted = cluster.as_user(["sbatch", "--parsable", "--qpu=ibm_perth", "--wrap", "echo ran"])
    assert submitted.returncode == 0, submitted.stderr
    assert "qrmi: QPU ibm_perth is offline: calibration until 10:00" in submitted.stderr
    job = int(submitted.stdout.strip())
    _wait(lambda: site.reason(job) == "Licenses", 30, "the job to pend on the QPU's license")
    assert cluster.job(job)["JobState"] == "PENDING"
    assert site.nodes_idle()
    status = site.qrmi("status")
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if x.startswith("ibm_perth "))
    assert line.split()[:6] == [
        "ibm_perth",
        "offline",
        "0/1+1rsv",
        "0",
        "1",
        "qrmi-ibm_perth-offline",
    ]
    assert line.endswith("calibration until 10:00")

    device.status = "online"
    assert site.sync_until_change() == ["deleted qrmi-ibm_perth-offline"]
    assert cluster.wait_done(job) == "COMPLETED"
    assert cluster.output(job).strip() == "ran"


@pytest.mark.slurm
def test_jobs_in_a_dedicated_window_get_a_dedicated_ibm_session(site: Site) -> None:
    cluster = site.cluster
    sessions = site.qcs.state.sessions

    everyday = cluster.sbatch("--qpu=ibm_torino", "--wrap", "true")
    assert cluster.wait_done(everyday) == "COMPLETED"
    assert [s.mode for s in sessions.values()] == ["batch"]  # the config's mode

    made = site.qrmi(
        "reserve",
        "ibm_torino",
        "--label",
        "lab",
        "--duration",
        "30",
        "--user",
        TEST_USER,
        "--dedicated",
    )
    assert made.returncode == 0, made.stderr
    assert "--reservation=qrmi-ibm_torino-dedicated-lab" in made.stdout
    try:
        inside = cluster.sbatch(
            "--qpu=ibm_torino",
            "--reservation=qrmi-ibm_torino-dedicated-lab",
            "--wrap",
            "echo $ibm_torino_QRMI_IBM_QCS_SESSION_MODE",
        )
        assert cluster.wait_done(inside) == "COMPLETED"
    finally:
        gone = site.qrmi("unreserve", "qrmi-ibm_torino-dedicated-lab")
    assert gone.returncode == 0, gone.stderr
    assert sorted(s.mode for s in sessions.values()) == ["batch", "dedicated"]
    assert cluster.output(inside).strip() == "dedicated"
