"""``GET /v1/admin/qpus``: the gateway tells root (or an admin token) every QPU's readiness, so
that ``qrmi slurm sync`` works on a controller whose config holds no vendor credentials."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qrmi.gateway.auth import hash_token
from qrmi.gateway.client import admin_request, qpu_readiness
from qrmi.gateway.testing import LocalGateway
from qrmi.testing.ibm_quantum_system import QuantumSystemFake
from qrmi.testing.munge import MungeDaemon

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="root's MUNGE credential")
TOKEN = "admin-token-for-readiness-tests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ibm() -> Iterator[QuantumSystemFake]:
    with QuantumSystemFake(devices={"ibm_perth": "fake_perth"}, lanes=2) as fake:
        yield fake


@pytest.fixture
def gateway(tmp_path: Path, munge: MungeDaemon, ibm: QuantumSystemFake) -> Iterator[LocalGateway]:
    """A gateway holding the IBM fake's credentials, and a QPU whose vendor is not there."""
    dead = {**ibm.settings, "QRMI_IBM_QS_ENDPOINT": f"http://127.0.0.1:{_free_port()}"}
    config = {
        "resources": [
            {"name": "ibm_perth", "type": "ibm-quantum-system", "environment": ibm.settings},
            {"name": "ibm_gone", "type": "ibm-quantum-system", "environment": dead},
        ]
    }
    gw = LocalGateway(
        config,
        tmp_path / "gateway",
        munge_socket=munge.socket,
        admin_hashes=frozenset({hash_token(TOKEN)}),
    ).start()
    try:
        yield gw
    finally:
        gw.stop()


def _until(
    gateway: LocalGateway, munge: MungeDaemon, check: Callable[[dict[str, Any]], bool]
) -> dict[str, dict[str, Any]]:
    """The report once ``check`` holds for it (the gateway asks a vendor every few seconds)."""
    deadline = time.monotonic() + 60
    while True:
        report = {q["name"]: q for q in qpu_readiness(gateway.url, munge_socket=munge.socket)}
        if check(report) or time.monotonic() > deadline:
            return report
        time.sleep(0.3)


@root_only
def test_root_sees_every_qpu_with_status_lanes_and_what_could_not_be_asked(
    gateway: LocalGateway, munge: MungeDaemon, ibm: QuantumSystemFake
) -> None:
    report = _until(gateway, munge, lambda r: r["ibm_perth"]["status"] is not None)
    perth, gone = report["ibm_perth"], report["ibm_gone"]
    assert perth["type"] == "ibm-quantum-system"
    assert perth["status"] == "online" and perth["error"] is None
    assert perth["capacity"]["max_slots"] == 2
    assert perth["paused_by_admin"] is None
    assert perth["age_seconds"] >= 0
    assert gone["status"] is None and gone["error"]  # says why, does not fail the report
    assert ibm.settings["QRMI_IBM_QS_IAM_APIKEY"] not in str(report)


@root_only
def test_the_vendors_offline_and_the_admins_pause_are_reported(
    gateway: LocalGateway, munge: MungeDaemon, ibm: QuantumSystemFake
) -> None:
    device = ibm.state.devices["ibm_perth"]
    device.status, device.message = "offline", "calibration until 10:00"
    report = _until(gateway, munge, lambda r: r["ibm_perth"]["status"] == "offline")
    assert report["ibm_perth"]["status"] == "offline"
    assert report["ibm_perth"]["reason"] == "calibration until 10:00"

    admin_request(
        "POST",
        gateway.url,
        "/v1/admin/qpus/ibm_perth/pause",
        json={"reason": "firmware upgrade"},
        admin_token=TOKEN,
    )
    report = _until(gateway, munge, lambda r: True)
    assert report["ibm_perth"]["paused_by_admin"] == "firmware upgrade"


def test_the_route_is_for_admins_only(gateway: LocalGateway) -> None:
    assert httpx.get(f"{gateway.url}/v1/admin/qpus").status_code in (401, 403)
    wrong = httpx.get(
        f"{gateway.url}/v1/admin/qpus", headers={"Authorization": "Bearer not-the-token"}
    )
    assert wrong.status_code in (401, 403)
    names = {q["name"] for q in qpu_readiness(gateway.url, admin_token=TOKEN)}
    assert names == {"ibm_perth", "ibm_gone"}


@root_only
def test_a_vendor_that_hangs_does_not_hang_the_report(
    gateway: LocalGateway, munge: MungeDaemon, ibm: QuantumSystemFake
) -> None:
    ibm.faults.latency(12)  # longer than the route waits for a vendor
    try:
        # A client deadline shorter than the vendor's delay: the report must come before it.
        report = {
            q["name"]: q for q in qpu_readiness(gateway.url, munge_socket=munge.socket, deadline=11)
        }
    finally:
        ibm.faults.reset()
    assert report["ibm_perth"]["status"] is None
    assert report["ibm_perth"]["error"] == "no answer yet"
