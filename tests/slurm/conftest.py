"""Fixtures for the Slurm integration: the ledger QPU backend and a live test cluster.

The ``test-ledger`` backend (``fakeqpu/``) is a fake vendor: it records every acquisition and
release in a ledger file, and can be offline, hang or fail. It is put on this process's path
(for config validation) and on the cluster's Python path (for the helper run by Slurm).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrmi.registry import register
from qrmi.testing.slurm_cluster import ClusterUnavailable, SlurmCluster, find_checkout

from .lab import SECRET, Lab

FAKEQPU = Path(__file__).parent / "fakeqpu"


def _ledger_qpu(name: str, ledger: Path, **extra: str) -> dict[str, object]:
    return {
        "name": name,
        "type": "test-ledger",
        "environment": {"QRMI_LEDGER_DIR": str(ledger), **extra},
    }


def _emulator(name: str, state_dir: Path, seed: str) -> dict[str, object]:
    return {
        "name": name,
        "type": "local-emulator",
        "environment": {
            "QRMI_LOCAL_STATE_DIR": str(state_dir),
            "QRMI_LOCAL_SEED": seed,
            "QRMI_LOCAL_IDLE_SECONDS": "5",
        },
    }


@pytest.fixture(scope="session")
def ledger_backend() -> str:
    """Make the ``test-ledger`` type usable in this process; returns the type string."""
    if str(FAKEQPU) not in sys.path:
        sys.path.append(str(FAKEQPU))
    register("test-ledger", "qrmi_ledger_qpu:LedgerBackend", replace=True)
    return "test-ledger"


def _install_system_deps() -> None:
    script = find_checkout() / "scripts" / "install-system-deps"
    if shutil.which("slurmctld", path="/usr/sbin:/usr/bin") is None and script.exists():
        subprocess.run([str(script)], check=False, timeout=600)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """A 3-node Slurm cluster with the QPUs ``emu``, ``emu2`` (local emulators), ``qa``,
    ``qb`` (ledger QPUs; ``qa`` carries an admin secret), ``qoff`` (offline), ``qhang``
    (acquire hangs) and ``qfail`` (acquire fails); one license each."""
    if os.geteuid() != 0:
        pytest.skip("the Slurm test cluster needs root")
    _install_system_deps()
    root = Path(tempfile.mkdtemp(prefix="qrmi-slurm-", dir="/tmp"))
    ledger = root / "ledger"
    ledger.mkdir()
    ledger.chmod(0o755)
    emulators = {"emu": root / "shared" / "emu", "emu2": root / "shared" / "emu2"}
    config = {
        "resources": [
            _emulator("emu", emulators["emu"], "7"),
            _emulator("emu2", emulators["emu2"], "11"),
            _ledger_qpu("qa", ledger, QRMI_LEDGER_NOTE="admin", QRMI_LEDGER_APIKEY=SECRET),
            _ledger_qpu("qb", ledger),
            _ledger_qpu("qoff", ledger, QRMI_LEDGER_MODE="offline"),
            _ledger_qpu("qhang", ledger, QRMI_LEDGER_MODE="hang"),
            _ledger_qpu("qfail", ledger, QRMI_LEDGER_MODE="fail"),
        ]
    }
    cluster = SlurmCluster(config, root=root, site_dirs=[FAKEQPU], helper_timeout=6)
    try:
        cluster.start()
    except ClusterUnavailable as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"Slurm test cluster unavailable: {exc}")
    try:
        for state_dir in emulators.values():
            _init_emulator_store(cluster, state_dir)
        shutil.copy(
            find_checkout() / "examples" / "inputs" / "bell_sampler.json",
            cluster.shared / "bell_sampler.json",
        )
        (cluster.shared / "bell_sampler.json").chmod(0o644)
        yield Lab(cluster, ledger, emulators)
    finally:
        if os.environ.get("QRMI_KEEP_SLURM_CLUSTER"):  # keep the logs to debug a failure
            cluster.stop()
            print(f"\nSlurm test cluster kept in {root}", file=sys.stderr)
        else:
            cluster.cleanup()


def _init_emulator_store(cluster: SlurmCluster, state_dir: Path) -> None:
    """Create the emulator's store as the job user, so that the root helper's writes keep the
    files the user's (SQLite makes journal files owned by the database's owner)."""
    code = (
        "import sys; from qrmi.backends.local_emulator.store import TaskStore; "
        "TaskStore(sys.argv[1]).leases()"
    )
    result = cluster.as_user([str(cluster.python), "-c", code, str(state_dir)])
    assert result.returncode == 0, result.stderr
