"""A job in a dedicated window (``qrmi slurm reserve --dedicated``) gets its QPU in the vendor's
exclusive mode through the gateway too: an IBM Quantum Compute Service session in dedicated
mode, where the config asks for batch sessions."""

from __future__ import annotations

import json
import os

import pytest

from gateway.conftest import QCS_QPU
from qrmi.gateway.client import finish_job, start_job
from qrmi.gateway.testing import LocalGateway
from qrmi.lifecycle import dedicated_window_prefix
from qrmi.testing.ibm_compute_service import ComputeServiceFake
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's")


def session_modes(fake: ComputeServiceFake) -> list[str]:
    return [json.loads(r.body)["mode"] for r in fake.requests("*/sessions", "POST")]


@pytest.mark.parametrize(
    ("reservation", "mode"),
    [
        (None, "batch"),
        ("course-week", "batch"),  # a window, but not a dedicated one
        (dedicated_window_prefix(QCS_QPU) + "course", "dedicated"),
    ],
)
def test_the_session_mode_follows_the_jobs_window(
    qcs_gateway: tuple[LocalGateway, ComputeServiceFake],
    munge: MungeDaemon,
    reservation: str | None,
    mode: str,
) -> None:
    gateway, fake = qcs_gateway

    start_job(
        gateway.url,
        "700",
        1000,
        [QCS_QPU],
        3600,
        munge_socket=munge.socket,
        reservation=reservation,
    )
    finish_job(gateway.url, "700", munge_socket=munge.socket)

    assert session_modes(fake) == [mode]
    assert gateway.service is not None
    job = gateway.service.store.job("700")
    assert job is not None and job.reservation == reservation
