"""The helper's gateway mode, run as the shim runs it, against a gateway in this process.

The QPUs' compute-node entries hold only ``QRMI_GATEWAY_URL`` (and the munged socket); the
gateway's own config holds the emulator settings and a secret that must never reach the job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qrmi.backends.local_emulator.worker import stop_worker
from qrmi.gateway.testing import LocalGateway
from qrmi.testing.munge import MungeDaemon, MungeUnavailableError, munge_available

from .test_helper import Helper, setenv_lines

SECRET = "gw-only-s3cret-value-91c2"


@pytest.fixture(scope="module")
def munge() -> Iterator[MungeDaemon]:
    if os.geteuid() != 0:
        pytest.skip("the gateway's job start needs root's MUNGE credential")
    if not munge_available():
        pytest.skip("munged is not installed (apt install munge)")
    try:
        daemon = MungeDaemon().start()
    except MungeUnavailableError as exc:
        pytest.skip(f"munged cannot start: {exc}")
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def gateway(tmp_path: Path, munge: MungeDaemon) -> Iterator[LocalGateway]:
    state = tmp_path / "emulators"
    config = {
        "resources": [
            {
                "name": name,
                "type": "local-emulator",
                "environment": {
                    "QRMI_LOCAL_STATE_DIR": str(state / name),
                    "QRMI_LOCAL_IDLE_SECONDS": "5",
                    "QRMI_IBM_QS_IAM_APIKEY": SECRET,
                },
            }
            for name in ("a", "b")
        ]
    }
    gateway = LocalGateway(config, tmp_path / "gateway", munge_socket=munge.socket).start()
    try:
        yield gateway
    finally:
        gateway.stop()
        for name in ("a", "b"):
            stop_worker(state / name)


def gateway_helper(tmp_path: Path, url: str, munge: MungeDaemon, **modes: str) -> Helper:
    """A helper whose QPUs ``a`` and ``b`` are in gateway mode at ``url`` (``modes``: a QPU
    named there gets that URL instead, or stays a direct ledger QPU for ``"direct"``)."""
    helper = Helper(tmp_path)
    config: dict[str, Any] = json.loads(helper.config.read_text())
    for resource in config["resources"]:
        where = modes.get(resource["name"], url)
        if where != "direct":
            resource["type"] = "local-emulator"
            resource["environment"] = {
                "QRMI_GATEWAY_URL": where,
                "QRMI_GATEWAY_MUNGE_SOCKET": munge.socket,
            }
    helper.config.write_text(json.dumps(config))
    return helper


def job_state(helper: Helper) -> Path:
    return helper.state / "jobs" / "42.json"


def test_a_gateway_job_gets_a_token_and_no_secret_and_its_end_revokes_it(
    tmp_path: Path, gateway: LocalGateway, munge: MungeDaemon
) -> None:
    helper = gateway_helper(tmp_path, gateway.url, munge)
    started = helper.acquire("--step", "batch", "--qpu", "a,b", "--timeout", "20")
    assert started.returncode == 0, started.stdout + started.stderr
    variables = setenv_lines(started.stdout)
    assert variables["QRMI_GATEWAY_URL"] == gateway.url
    assert variables["QRMI_JOB_QPU_RESOURCES"] == "a,b"
    token = variables["a_QRMI_GATEWAY_TOKEN"]
    assert "QRMI_JOB_TASK_LOG" not in variables  # the gateway tracks the job's tasks
    assert SECRET not in started.stdout + started.stderr
    assert "release-at-exit" in started.stdout.splitlines()
    assert json.loads(job_state(helper).read_text())["gateway"]["url"] == gateway.url

    status = f"{gateway.url}/v1/qpus/a/status"
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(status, headers=auth).status_code == 200

    released = helper.run("release", "--job", "42", "--timeout", "20")
    assert released.returncode == 0, released.stdout
    assert "released a,b" in released.stdout
    assert httpx.get(status, headers=auth).status_code == 401
    assert not job_state(helper).exists()
    again = helper.run("epilog", "--job", "42", "--timeout", "20")
    assert again.returncode == 0 and again.stdout == ""


def test_the_helper_goes_on_with_the_next_replica_listed(
    tmp_path: Path, gateway: LocalGateway, munge: MungeDaemon
) -> None:
    replicas = f"http://127.0.0.1:9, {gateway.url}/"  # the first one is down
    helper = gateway_helper(tmp_path, replicas, munge)

    started = helper.acquire("--step", "batch", "--qpu", "a", "--timeout", "20")

    assert started.returncode == 0, started.stdout + started.stderr
    variables = setenv_lines(started.stdout)
    assert variables["QRMI_GATEWAY_URL"] == f"http://127.0.0.1:9,{gateway.url}"
    released = helper.run("release", "--job", "42", "--timeout", "20")
    assert released.returncode == 0, released.stdout
    assert "released a" in released.stdout


def test_a_requeued_jobs_next_run_starts_on_the_gateway_and_the_first_runs_token_is_refused(
    tmp_path: Path, gateway: LocalGateway, munge: MungeDaemon
) -> None:
    helper = gateway_helper(tmp_path, gateway.url, munge)
    helper.set_squeue("echo '1:30:00|a:1|2026-12-01T07:00:00'")
    first = helper.acquire("--step", "batch", "--qpu", "a", "--timeout", "20")
    assert first.returncode == 0, first.stdout + first.stderr
    step = helper.acquire("--step", "0", "--qpu", "a", "--timeout", "20")  # same run: reused
    assert step.returncode == 0, step.stdout + step.stderr
    assert helper.run("release", "--job", "42", "--timeout", "20").returncode == 0

    helper.set_squeue("echo '1:30:00|a:1|2026-12-01T07:02:41'")  # scontrol requeue 42
    second = helper.acquire("--step", "batch", "--qpu", "a", "--timeout", "20")

    assert second.returncode == 0, second.stdout + second.stderr
    status = f"{gateway.url}/v1/qpus/a/status"
    for started, code in ((step, 401), (second, 200)):
        token = setenv_lines(started.stdout)["a_QRMI_GATEWAY_TOKEN"]
        assert httpx.get(status, headers={"Authorization": f"Bearer {token}"}).status_code == code
    assert json.loads(job_state(helper).read_text())["run_id"] == "2026-12-01T07:02:41"
    assert helper.run("release", "--job", "42", "--timeout", "20").returncode == 0


def test_a_run_whose_end_never_came_is_ended_when_the_requeued_job_starts_again(
    tmp_path: Path, gateway: LocalGateway, munge: MungeDaemon
) -> None:
    """The node died mid-run and came back: its state file of the first run is still there."""
    helper = gateway_helper(tmp_path, gateway.url, munge)
    helper.set_squeue("echo '1:30:00|a:1|2026-12-01T07:00:00'")
    first = helper.acquire("--step", "batch", "--qpu", "a", "--timeout", "20")
    assert first.returncode == 0, first.stdout + first.stderr

    helper.set_squeue("echo '1:30:00|a:1|2026-12-01T07:09:30'")
    second = helper.acquire("--step", "batch", "--qpu", "a", "--timeout", "20")

    assert second.returncode == 0, second.stdout + second.stderr
    old, new = (setenv_lines(run.stdout) for run in (first, second))
    assert gateway.service is not None
    ended = gateway.service.store.lease("a", old["a_QRMI_JOB_ACQUISITION_TOKEN"])
    assert ended is not None and ended.job_id == "42~1" and ended.released is not None
    status = f"{gateway.url}/v1/qpus/a/status"
    token = old["a_QRMI_GATEWAY_TOKEN"]
    assert httpx.get(status, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert new["a_QRMI_JOB_ACQUISITION_TOKEN"] != old["a_QRMI_JOB_ACQUISITION_TOKEN"]
    assert json.loads(job_state(helper).read_text())["run_id"] == "2026-12-01T07:09:30"
    assert helper.run("release", "--job", "42", "--timeout", "20").returncode == 0


def test_an_ended_run_is_not_started_again(
    tmp_path: Path, gateway: LocalGateway, munge: MungeDaemon
) -> None:
    helper = gateway_helper(tmp_path, gateway.url, munge)
    helper.set_squeue("echo '1:30:00|a:1|2026-12-01T07:00:00'")
    assert helper.acquire("--step", "batch", "--qpu", "a", "--timeout", "20").returncode == 0
    assert helper.run("release", "--job", "42", "--timeout", "20").returncode == 0

    late = helper.acquire("--step", "1", "--qpu", "a", "--timeout", "20")

    assert late.returncode == 1
    assert "job 42 has ended" in late.stdout and "setenv" not in late.stdout


def test_a_gateway_that_is_down_fails_the_start_with_a_message_and_holds_nothing(
    tmp_path: Path, munge: MungeDaemon
) -> None:
    helper = gateway_helper(tmp_path, "http://127.0.0.1:9", munge)
    started = helper.acquire("--step", "batch", "--qpu", "a", "--timeout", "6")
    assert started.returncode == 1
    assert "error the QRMI gateway at http://127.0.0.1:9 did not answer" in started.stdout
    assert "setenv" not in started.stdout
    assert "Traceback" not in started.stderr
    assert not job_state(helper).exists()  # the gateway never saw the start: nothing to end


def test_a_gateway_refusal_reaches_the_job_and_ends_the_job_there(
    tmp_path: Path, gateway: LocalGateway, munge: MungeDaemon
) -> None:
    helper = gateway_helper(tmp_path, gateway.url, munge)
    config = json.loads(helper.config.read_text())
    config["resources"][1]["name"] = "c"  # not a QPU of the gateway
    helper.config.write_text(json.dumps(config))
    helper.set_squeue("echo '1:30:00|a:1,c:1'")
    started = helper.acquire("--step", "batch", "--qpu", "a,c", "--timeout", "20")
    assert started.returncode == 1
    assert "error the QRMI gateway refused" in started.stdout and "'c'" in started.stdout
    assert not job_state(helper).exists()  # ended on the gateway too, so nothing is left


def test_one_job_cannot_mix_direct_and_gateway_qpus_or_two_gateways(
    tmp_path: Path, munge: MungeDaemon
) -> None:
    for name in ("mixed", "two"):
        (tmp_path / name).mkdir()
    mixed = gateway_helper(tmp_path / "mixed", "http://127.0.0.1:9", munge, b="direct")
    answer = mixed.acquire("--step", "batch", "--qpu", "a,b")
    assert answer.returncode == 1
    assert "one job cannot mix them" in answer.stdout
    two = gateway_helper(tmp_path / "two", "http://127.0.0.1:9", munge, b="http://127.0.0.1:10")
    answer = two.acquire("--step", "batch", "--qpu", "a,b")
    assert answer.returncode == 1
    assert "must be held by one QRMI gateway" in answer.stdout
    assert mixed.events("b") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the check wants root-owned files")
def test_check_accepts_a_gateway_entry_and_warns_of_credentials_left_in_it(
    tmp_path: Path,
) -> None:
    from qrmi.slurm import admin

    from .test_admin import setup_cluster_files

    config, conf = setup_cluster_files(tmp_path, "Licenses=a:1,b:1")
    entries = {
        "a": {"QRMI_GATEWAY_URL": "https://qpu-gw.example.org:8443"},
        "b": {"QRMI_GATEWAY_URL": "https://qpu-gw.example.org:8443", "QRMI_X_APIKEY": SECRET},
    }
    data = json.loads(config.read_text())
    for resource in data["resources"]:
        resource["type"] = "local-emulator"
        resource["environment"] = entries[resource["name"]]
    config.write_text(json.dumps(data))
    findings = admin.check(config, conf)
    text = "\n".join(f"{f.level}: {f.message}" for f in findings)
    assert [f.message for f in findings if f.level == "error"] == [], text
    warnings = [f.message for f in findings if f.level == "warning"]
    assert len(warnings) == 1 and "QPU b is in gateway mode" in warnings[0], text
    assert "QRMI_X_APIKEY" in warnings[0] and SECRET not in text
    assert "served by the QRMI gateway at https://qpu-gw.example.org:8443" in text


def test_the_job_start_names_the_user_account_and_partition_slurm_has(
    tmp_path: Path, gateway: LocalGateway, munge: MungeDaemon
) -> None:
    helper = gateway_helper(tmp_path, gateway.url, munge)
    record = "90|a:1|2026-12-01T07:00:00||physics|qpu"  # the shim's, from slurm_load_job

    started = helper.run(
        "acquire", "--job", "42", "--uid", "0", "--step", "batch", "--qpu", "a",
        "--job-record", record, "--timeout", "20",
    )  # fmt: skip

    assert started.returncode == 0, started.stdout + started.stderr
    assert gateway.service is not None
    job = gateway.service.store.job("42")
    assert job is not None
    assert (job.user_name, job.account, job.partition) == ("root", "physics", "qpu")
    assert job.run_id == "2026-12-01T07:00:00"
    assert helper.run("release", "--job", "42", "--timeout", "20").returncode == 0


def test_a_name_the_gateway_would_refuse_is_left_out_not_fatal(
    tmp_path: Path, gateway: LocalGateway, munge: MungeDaemon
) -> None:
    helper = gateway_helper(tmp_path, gateway.url, munge)
    helper.set_squeue("echo '1:30:00|a:1|N/A|bob|acct,with,commas|qpu'")

    started = helper.acquire("--step", "batch", "--qpu", "a", "--timeout", "20")

    assert started.returncode == 0, started.stdout + started.stderr
    assert gateway.service is not None
    job = gateway.service.store.job("42")
    assert job is not None and (job.user_name, job.account) == ("bob", None)
    assert helper.run("release", "--job", "42", "--timeout", "20").returncode == 0
