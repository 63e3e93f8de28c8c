"""Slurm's own accounting of QPU use: slurmdbd, license TRES, sacct, sreport, AdminComment.

A cluster of its own (``accounting=True``: MariaDB and slurmdbd, started here and stopped by
PID) with two accounts, ``physics`` (user qrmitest) and ``chemistry`` (user qrmitest2), and
two QPUs: ``qa``, a ledger QPU in direct mode, and ``gq``, an emulator held by a QRMI gateway
running in this process (proving root with the cluster's munged).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from qrmi.backends.local_emulator.worker import stop_worker
from qrmi.errors import InvalidInputError, QrmiError
from qrmi.gateway.testing import LocalGateway
from qrmi.lifecycle import JobUsage
from qrmi.slurm import admin
from qrmi.slurm.helper import NoAccountingError, record_usage, usage_comment
from qrmi.testing.slurm_cluster import (
    TEST_USER,
    TEST_USER2,
    ClusterUnavailable,
    SlurmCluster,
    find_checkout,
)

from .conftest import FAKEQPU
from .lab import Lab

T = TypeVar("T")

#: sacct's columns for the job lines (-X: the allocation, not its steps).
SACCT_FIELDS = "JobID,User,Account,State,AllocTRES%80,AdminComment%80"

#: A job program: run one Bell sampler on QPU ``gq`` through the gateway, to its end.
BELL_JOB = """
import json, time
from qrmi.models import Payload, TaskStatus
from qrmi.resource import QuantumResource
qpu = QuantumResource("gq", "local-emulator")
bell = ('OPENQASM 3.0; include "stdgates.inc"; bit[2] c; qubit[2] q; h q[0]; cx q[0], q[1]; '
        'c = measure q;')
params = {"pubs": [[bell, None, 50]], "version": 2}
task = qpu.task_start(Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler"))
deadline = time.monotonic() + 120
while qpu.task_status(task) not in (TaskStatus.Completed, TaskStatus.Failed):
    assert time.monotonic() < deadline, "the task did not end"
    time.sleep(0.2)
print("task", task, qpu.task_status(task).name, flush=True)
"""


# ----- without a cluster ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "usage"),
    [
        ({"usage": {"tasks": 3, "qpu_seconds": 1.5}}, JobUsage(3, 1.5)),
        ({"usage": {"tasks": 2}}, JobUsage(2, None)),
        ({"usage": {"qpu_seconds": 4}}, JobUsage(None, 4.0)),
        ({"usage": {"tasks": -1, "qpu_seconds": math.nan}}, None),
        ({"usage": {"tasks": True, "qpu_seconds": "9"}}, None),
        ({"usage": {"tasks": 10**12, "qpu_seconds": 1e30}}, None),
        ({"usage": "lots"}, None),
        ({"released": ["gq"]}, None),
        ([], None),
    ],
)
def test_usage_is_taken_from_a_finish_answer_only_when_valid(
    answer: object, usage: JobUsage | None
) -> None:
    assert JobUsage.from_answer(answer) == usage


def test_the_admin_comment_leaves_out_what_is_unknown() -> None:
    assert usage_comment(JobUsage(3, 1.5)) == "qrmi:tasks=3,qpu_seconds=1.500"
    assert usage_comment(JobUsage(tasks=7)) == "qrmi:tasks=7"


def test_record_usage_refuses_a_job_id_that_is_not_one() -> None:
    with pytest.raises(InvalidInputError, match="not a Slurm job id"):
        record_usage("12; rm -rf /", JobUsage(1, 1.0), 1)


def test_licenses_prints_the_tres_line_with_accounting(tmp_path: Path) -> None:
    config = tmp_path / "qrmi_config.json"
    config.write_text(json.dumps({"resources": [_emulator("b"), _emulator("a")]}))
    plain = _qrmi("slurm", "licenses", "--config", str(config))
    assert plain.stdout.splitlines() == ["Licenses=a:1,b:1"]
    both = _qrmi("slurm", "licenses", "--config", str(config), "--accounting")
    assert both.stdout.splitlines() == [
        "Licenses=a:1,b:1",
        "AccountingStorageTRES=license/a,license/b",
    ]


def test_check_says_which_tres_line_to_add(tmp_path: Path) -> None:
    config = tmp_path / "qrmi_config.json"
    config.write_text(json.dumps({"resources": [_emulator("a"), _emulator("b")]}))
    conf = tmp_path / "slurm.conf"
    # a slurmctld that does not answer (a closed port): check reads the file
    base = "ClusterName=nowhere\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=9\n"
    conf.write_text(base)
    assert _accounting_findings(config, conf) == [
        (
            "info",
            f"Slurm accounting is off ({conf}; optional): to see QPU use per job, user and "
            "account in sacct and sreport, run slurmdbd and set "
            "AccountingStorageType=accounting_storage/slurmdbd and "
            "'AccountingStorageTRES=license/a,license/b' in slurm.conf",
        )
    ]
    conf.write_text(
        base + "AccountingStorageType=accounting_storage/slurmdbd\n"
        "AccountingStorageTRES=gres/gpu,license/a\n"
    )
    ((level, message),) = _accounting_findings(config, conf)
    assert level == "warning"
    assert "does not track QPU b" in message
    assert "set 'AccountingStorageTRES=gres/gpu,license/a,license/b' in slurm.conf" in message
    conf.write_text(
        base + "AccountingStorageType=accounting_storage/slurmdbd\n"
        "AccountingStorageTRES=license/b,license/a\n"
    )
    ((level, message),) = _accounting_findings(config, conf)
    assert level == "ok" and "license/a,license/b" in message


def _accounting_findings(config: Path, conf: Path) -> list[tuple[str, str]]:
    return [
        (f.level, f.message) for f in admin.check(config, conf) if "accounting" in f.message.lower()
    ]


def _emulator(name: str) -> dict[str, object]:
    return {"name": name, "type": "local-emulator", "environment": {}}


def _qrmi(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-c", "from qrmi.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


# ----- the live cluster -------------------------------------------------------------------


@dataclass
class Books:
    """The cluster with accounting, and the gateway that holds QPU ``gq``."""

    cluster: SlurmCluster
    gateway: LocalGateway

    def sacct(self, *job_ids: int) -> dict[int, dict[str, str]]:
        """sacct's job lines (not the steps) by job id."""
        fields = SACCT_FIELDS.split(",")
        names = [f.split("%")[0] for f in fields]
        result = self.cluster.run(
            ["sacct", "-X", "-n", "-P", "-j", ",".join(map(str, job_ids)), "-o", SACCT_FIELDS]
        )
        assert result.returncode == 0, result.stderr
        rows = {}
        for line in result.stdout.splitlines():
            row = dict(zip(names, line.split("|"), strict=True))
            rows[int(row["JobID"])] = row
        return rows


@pytest.fixture(scope="module")
def books(ledger_backend: str) -> Iterator[Books]:
    if os.geteuid() != 0:
        pytest.skip("the Slurm test cluster needs root")
    script = find_checkout() / "scripts" / "install-system-deps"
    subprocess.run([str(script)], check=False, timeout=900)
    root = Path(tempfile.mkdtemp(prefix="qrmi-acct-", dir="/tmp"))
    ledger = root / "ledger"
    ledger.mkdir()
    ledger.chmod(0o755)
    qa = {"name": "qa", "type": ledger_backend, "environment": {"QRMI_LEDGER_DIR": str(ledger)}}
    gq = {"name": "gq", "type": "local-emulator", "environment": {}}  # gateway mode below
    cluster = SlurmCluster(
        {"resources": [qa, gq]},
        root=root,
        nodes=("n1", "n2"),
        site_dirs=[FAKEQPU],
        accounting=True,
    )
    try:
        cluster.start()
    except ClusterUnavailable as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"Slurm test cluster with accounting unavailable: {exc}")
    munge_socket = str(root / "munge" / "munge.socket")
    emulator_dir = root / "gateway" / "gq"
    gateway_config = {
        "resources": [
            {
                "name": "gq",
                "type": "local-emulator",
                "environment": {
                    "QRMI_LOCAL_STATE_DIR": str(emulator_dir),
                    "QRMI_LOCAL_IDLE_SECONDS": "5",
                },
            }
        ]
    }
    gateway = LocalGateway(gateway_config, root / "gateway", munge_socket=munge_socket)
    try:
        gateway.start()
        gq["environment"] = {
            "QRMI_GATEWAY_URL": gateway.url,
            "QRMI_GATEWAY_MUNGE_SOCKET": munge_socket,
        }
        cluster.config_path.write_text(json.dumps({"resources": [qa, gq]}, indent=2))
        yield Books(cluster, gateway)
    finally:
        gateway.stop()
        stop_worker(emulator_dir)
        if os.environ.get("QRMI_KEEP_SLURM_CLUSTER"):
            cluster.stop()
            print(f"\nSlurm test cluster kept in {root}", file=sys.stderr)
        else:
            cluster.cleanup()


def _gateway_reports_usage() -> bool:
    """Whether this checkout's gateway answers a job's end with its usage (issue #13)."""
    from qrmi.gateway.app import FinishJobAnswer

    return "usage" in FinishJobAnswer.model_fields


@pytest.mark.slurm
def test_sacct_and_sreport_show_qpu_use_per_job_user_and_account(books: Books) -> None:
    cluster = books.cluster
    first_hour = datetime.now().replace(minute=0, second=0, microsecond=0)
    direct = cluster.sbatch("--qpu=qa", "--wrap", "sleep 2")
    program = cluster.work_of(TEST_USER2) / "bell.py"
    program.write_text(BELL_JOB)
    via_gateway = cluster.sbatch(
        "--qpu=gq", "--wrap", f"{cluster.python} {program}", user=TEST_USER2
    )
    cancelled = cluster.sbatch("--qpu=qa", "--wrap", "sleep 300", user=TEST_USER2)
    assert cluster.wait_done(direct, timeout=120) == "COMPLETED", cluster.output(direct)
    cluster.wait_state(cancelled, ("RUNNING",), timeout=60)
    time.sleep(1)  # mid-way
    cluster.run(["scancel", str(cancelled)])
    assert cluster.wait_done(cancelled, timeout=60) == "CANCELLED"
    assert cluster.wait_done(via_gateway, timeout=180) == "COMPLETED", cluster.output(
        via_gateway, TEST_USER2
    )
    assert " Completed" in cluster.output(via_gateway, TEST_USER2)

    rows = _wait_for_records(books, [direct, via_gateway, cancelled])
    assert (rows[direct]["User"], rows[direct]["Account"]) == (TEST_USER, "physics")
    assert "license/qa=1" in rows[direct]["AllocTRES"]
    assert (rows[via_gateway]["User"], rows[via_gateway]["Account"]) == (TEST_USER2, "chemistry")
    assert "license/gq=1" in rows[via_gateway]["AllocTRES"]
    assert rows[cancelled]["State"].startswith("CANCELLED")
    assert "license/qa=1" in rows[cancelled]["AllocTRES"]
    assert rows[direct]["AdminComment"] == ""  # direct mode: the helper sees no task

    used = _sreport(cluster, first_hour)
    assert used[("physics", TEST_USER, "license/qa")] > 0
    assert used[("physics", TEST_USER, "license/gq")] == 0
    assert used[("chemistry", TEST_USER2, "license/gq")] > 0
    assert used[("chemistry", TEST_USER2, "license/qa")] > 0  # the cancelled job's share


@pytest.mark.slurm
def test_a_gateway_jobs_usage_is_its_admin_comment(books: Books) -> None:
    cluster = books.cluster
    program = cluster.work_of(TEST_USER2) / "bell.py"
    program.write_text(BELL_JOB)
    job = cluster.sbatch("--qpu=gq", "--wrap", f"{cluster.python} {program}", user=TEST_USER2)
    assert cluster.wait_done(job, timeout=180) == "COMPLETED", cluster.output(job, TEST_USER2)
    log = (cluster.state_dir / "helper.log").read_text()
    if not _gateway_reports_usage():
        # the gateway's answer has no usage: nothing is written, nothing fails
        assert f"job {job}: released gq" in log
        assert _wait_for_records(books, [job])[job]["AdminComment"] == ""
        pytest.skip("this checkout's gateway does not report a job's usage yet")
    comment = _wait_for(lambda: _wait_for_records(books, [job])[job]["AdminComment"], 30)
    assert comment.startswith("qrmi:tasks=1,qpu_seconds="), comment
    assert float(comment.rpartition("=")[2]) > 0
    assert f"job {job}: usage {comment} recorded" in log


@pytest.mark.slurm
def test_usage_is_recorded_while_the_job_runs_and_after_it_ended(
    books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = books.cluster
    monkeypatch.setenv("SLURM_CONF", str(cluster.slurm_conf))  # as the shim gives the helper
    running = cluster.sbatch("--wrap", "sleep 300")
    cluster.wait_state(running, ("RUNNING",), timeout=60)
    assert record_usage(str(running), JobUsage(2, 1.25), 15) == "slurmctld"
    cluster.run(["scancel", str(running)])
    ended = cluster.sbatch("--wrap", "true", user=TEST_USER2)
    cluster.wait_done(ended, timeout=60)
    cluster.wait_done(running, timeout=60)
    _wait_for_records(books, [running, ended])
    assert record_usage(str(ended), JobUsage(5, 0.5), 15) == "slurmdbd"
    rows = books.sacct(running, ended)
    assert rows[running]["AdminComment"] == "qrmi:tasks=2,qpu_seconds=1.250"
    assert rows[ended]["AdminComment"] == "qrmi:tasks=5,qpu_seconds=0.500"
    with pytest.raises(QrmiError, match="sacctmgr"):
        record_usage("987654", JobUsage(1, 1.0), 2)  # no such job: bounded, then an error


@pytest.mark.slurm
def test_without_slurmdbd_usage_is_recorded_only_while_the_job_runs(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = lab.cluster
    monkeypatch.setenv("SLURM_CONF", str(cluster.slurm_conf))
    job = cluster.sbatch("--wrap", "sleep 300")
    cluster.wait_state(job, ("RUNNING",), timeout=60)
    assert record_usage(str(job), JobUsage(1, 2.0), 15) == "slurmctld"
    assert cluster.job(job)["AdminComment"] == "qrmi:tasks=1,qpu_seconds=2.000"
    cluster.run(["scancel", str(job)])
    cluster.wait_done(job, timeout=60)
    with pytest.raises(NoAccountingError, match="no accounting"):
        record_usage(str(job), JobUsage(3, 4.0), 15)
    assert cluster.job(job)["AdminComment"] == "qrmi:tasks=1,qpu_seconds=2.000"


@pytest.mark.slurm
def test_check_finds_the_qpu_tres_in_the_running_configuration(books: Books) -> None:
    cluster = books.cluster
    findings = [
        (f.level, f.message)
        for f in admin.check(cluster.config_path, cluster.slurm_conf)
        if "accounting" in f.message
    ]
    assert findings == [
        (
            "ok",
            "accounting (the running slurmctld): slurmdbd tracks the QPU licenses as TRES "
            "license/gq,license/qa (sacct, sreport -T)",
        )
    ]
    # slurm.conf edited but slurmctld not restarted: the running configuration is what counts
    edited = cluster.etc / "slurm-edited.conf"
    text = cluster.slurm_conf.read_text().replace("license/gq,license/qa", "license/qa")
    edited.write_text(text)
    running = [f for f in admin.check(cluster.config_path, edited) if "accounting" in f.message]
    assert [f.level for f in running] == ["ok"]


def _wait_for_records(books: Books, job_ids: list[int]) -> dict[int, dict[str, str]]:
    """sacct's lines of ``job_ids`` once slurmdbd has their end."""

    def ended() -> dict[int, dict[str, str]] | None:
        rows = books.sacct(*job_ids)
        done = all(
            j in rows and rows[j]["State"] not in ("RUNNING", "PENDING", "") for j in job_ids
        )
        return rows if done else None

    return _wait_for(ended, 60)


def _wait_for(probe: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing after {timeout} s")
        time.sleep(0.2)


def _sreport(cluster: SlurmCluster, first_hour: datetime) -> dict[tuple[str, str, str], int]:
    """License seconds per (account, user, TRES), after rolling up the hours of the test (slurmdbd
    rolls usage up hourly; sreport reads only what is rolled up)."""
    end = datetime.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    span = [first_hour.strftime("%Y-%m-%dT%H:%M:%S"), end.strftime("%Y-%m-%dT%H:%M:%S")]
    cluster.sacctmgr("rollup", *span)
    result = cluster.run(
        [
            "sreport",
            "-n",
            "-P",
            "-t",
            "seconds",
            "cluster",
            "AccountUtilizationByUser",
            "-T",
            "license/qa,license/gq",
            f"start={span[0]}",
            f"end={span[1]}",
        ]
    )
    assert result.returncode == 0, result.stderr
    used = {}
    for line in result.stdout.splitlines():
        _, account, login, _, tres, seconds = line.split("|")
        if login:
            used[(account, login, tres)] = int(seconds)
    return used
