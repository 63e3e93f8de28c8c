"""A window declared with ``qrmi slurm reserve --dedicated``: its jobs get the QPU in the
vendor's exclusive mode (IBM Quantum Compute Service: a ``dedicated`` session), whatever
session mode the admin's config sets for everyday use. The reservation comes from slurmctld's
record of the job (the shim's ``--job-record`` or squeue's ``%v``), never from the user."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrmi.config import Config
from qrmi.lifecycle import JobContext, JobLifecycle, JobStateStore
from qrmi.slurm.helper import parse_job_record
from qrmi.slurm.reserve import declare_window
from qrmi.slurm.slurmcli import SlurmCli
from qrmi.slurm.sync import SyncState
from qrmi.testing.ibm_compute_service import ComputeServiceFake

from .fakeslurm import FakeSlurm
from .test_sync import T0, Clock


@pytest.fixture
def qcs() -> Iterator[ComputeServiceFake]:
    with ComputeServiceFake(devices={"ibm_torino": "fake_torino"}) as fake:
        yield fake


def _lifecycle(tmp_path: Path, qcs: ComputeServiceFake, mode: str = "batch") -> JobLifecycle:
    environment = {**qcs.settings, "QRMI_IBM_QCS_SESSION_MODE": mode}
    config = Config.from_dict(
        {
            "resources": [
                {
                    "name": "ibm_torino",
                    "type": "ibm-quantum-compute-service",
                    "environment": environment,
                },
                {"name": "ibm_other", "type": "ibm-quantum-compute-service", "environment": {}},
            ]
        }
    )
    return JobLifecycle(config, JobStateStore(tmp_path / "jobs"))


def _session_mode(qcs: ComputeServiceFake, lifecycle: JobLifecycle, ctx: JobContext) -> str:
    (lease,) = lifecycle.acquire(ctx, ["ibm_torino"])
    session = qcs.session(lease.token)
    assert session is not None
    variables = lifecycle.variables([lease], ctx)
    assert variables["ibm_torino_QRMI_IBM_QCS_SESSION_MODE"] == session.mode  # the job's, too
    lifecycle.finish(ctx.job_id)
    return session.mode


def test_a_job_in_a_dedicated_window_gets_a_dedicated_session(
    tmp_path: Path, qcs: ComputeServiceFake
) -> None:
    lifecycle = _lifecycle(tmp_path, qcs, mode="batch")
    inside = JobContext("51", 1000, 600, reservation="qrmi-ibm_torino-dedicated-lab")
    assert _session_mode(qcs, lifecycle, inside) == "dedicated"


@pytest.mark.parametrize(
    "reservation",
    [
        None,
        "qrmi-ibm_torino-window-course",  # a window, but not a dedicated one
        "qrmi-ibm_other-dedicated-lab",  # another QPU's dedicated window
        "maint",  # an admin's own reservation
    ],
)
def test_other_jobs_keep_the_configured_session_mode(
    tmp_path: Path, qcs: ComputeServiceFake, reservation: str | None
) -> None:
    lifecycle = _lifecycle(tmp_path, qcs, mode="batch")
    ctx = JobContext("52", 1000, 600, reservation=reservation)
    assert _session_mode(qcs, lifecycle, ctx) == "batch"


def test_the_reservation_is_read_from_slurms_record_of_the_job() -> None:
    record = parse_job_record("60|ibm_torino:1|2026-12-01T09:00:00||physics|qpu|qrmi-x-dedicated-l")
    assert record.reservation == "qrmi-x-dedicated-l"
    assert record.accounting == {"account": "physics", "partition": "qpu"}
    assert parse_job_record("60|ibm_torino:1|N/A||physics|qpu|").reservation is None
    assert parse_job_record("60|ibm_torino:1|N/A||physics|qpu").reservation is None  # older shim
    assert parse_job_record("60|ibm_torino:1|N/A||a|p|x y;rm").reservation is None  # not a name


def test_reserve_dedicated_names_and_records_the_window(tmp_path: Path) -> None:
    clock = Clock()
    slurm = FakeSlurm({"ibm_torino": 1}, now=clock)
    window = declare_window(
        SlurmCli(slurm),
        tmp_path / "sync",
        "ibm_torino",
        "lab",
        start="now",
        duration="60",
        accounts=["physics"],
        dedicated=True,
        now=T0,
    )
    assert window.name == "qrmi-ibm_torino-dedicated-lab"
    assert slurm.reservations[window.name].accounts == "physics"
    record = SyncState.load(tmp_path / "sync").reservations[window.name]
    assert record["kind"] == "window" and record["dedicated"] is True
    assert json.loads((tmp_path / "sync" / "sync.json").read_text())  # plain JSON
