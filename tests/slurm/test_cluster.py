"""End to end on a real Slurm (Debian's 22.05): jobs of an unprivileged user with --qpu.

"Exactly once" is proven on the backend's side: the ledger QPUs write every acquisition and
release to a file, the local emulator counts them in its store.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from .lab import SECRET, Lab

pytestmark = pytest.mark.slurm


def _tokens(events: list[tuple[str, str]], kind: str) -> list[str]:
    return [token for event, token in events if event == kind]


def _assert_exactly_once(lab: Lab, qpu: str, job_id: int) -> str:
    """The job acquired ``qpu`` once and released that token once; returns the token."""
    events = lab.ledger_events(qpu, job_id)
    acquired, released = _tokens(events, "acquire"), _tokens(events, "release")
    assert len(acquired) == 1, events
    assert released == acquired, events
    return acquired[0]


def _assert_clean(lab: Lab) -> None:
    assert lab.leftover_state() == []
    states = lab.cluster.run(["sinfo", "-h", "-N", "-o", "%N %t"]).stdout
    assert "drain" not in states and "drng" not in states, states


def _write_script(lab: Lab, name: str, body: str) -> str:
    path = lab.cluster.work / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def _batch_stepd(lab: Lab, job_id: int) -> int:
    """The step daemon of the job's batch step on this cluster (not a same-numbered job's of
    another cluster on the machine)."""
    pids = lab.cluster.step_daemons(job_id)
    # a task the daemon forks keeps its name until it execs: take the one whose parent is not
    daemons = [pid for pid in pids if _parent(pid) not in pids]
    assert len(daemons) == 1, f"slurmstepd for {job_id}.batch: {pids}"
    return daemons[0]


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def test_qpu_option_is_listed_in_help(lab: Lab) -> None:
    help_text = lab.cluster.as_user(["sbatch", "--help"]).stdout
    assert "--qpu=names" in help_text
    assert "Comma separated list of QPU resources to use." in help_text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a;b", "invalid character ';'"),
        ("", "needs a comma separated list"),
        ("qa,,qb", "empty QPU name"),
    ],
)
def test_malformed_qpu_is_refused_by_the_client(lab: Lab, value: str, reason: str) -> None:
    name = f"malformed-{abs(hash(value))}"
    result = lab.cluster.as_user(
        ["sbatch", f"--qpu={value}", f"--job-name={name}", "--wrap", "true"]
    )
    assert result.returncode != 0
    assert reason in result.stderr
    assert "Submitted" not in result.stdout
    assert lab.cluster.run(["squeue", "-h", "-t", "all", "-n", name]).stdout == ""


def test_unknown_qpu_is_rejected_at_submit_naming_the_valid_ones(lab: Lab) -> None:
    result = lab.cluster.as_user(["sbatch", "--qpu=qa,nope", "--wrap", "true"])
    assert result.returncode != 0
    assert "unknown QPU 'nope'" in result.stderr
    assert "emu, emu2, qa, qb, qfail, qhang, qoff" in result.stderr


@pytest.mark.slow
def test_sbatch_runs_a_sampler_on_the_emulator_and_prints_counts(lab: Lab) -> None:
    python = lab.cluster.python
    script = _write_script(
        lab,
        "sampler.sh",
        f"""
OUT=result-$SLURM_JOB_ID.json
{python} -m qrmi.tools.task_runner emu {lab.cluster.shared / "bell_sampler.json"} $OUT || exit 1
{python} -c "
import json, sys
from qiskit_ibm_runtime import RuntimeDecoder
result = json.load(open(sys.argv[1]), cls=RuntimeDecoder)
print('counts', sorted(result[0].data.c.get_counts().items()))
" $OUT
""",
    )
    leases_before = len(lab.emulator_leases("emu"))
    job = lab.cluster.sbatch("--qpu=emu", script)
    assert lab.cluster.wait_done(job, timeout=120) == "COMPLETED", lab.cluster.output(job)
    output = lab.cluster.output(job)
    counts = re.search(r"counts \[\('00', (\d+)\), \('11', (\d+)\)\]", output)
    assert counts, output
    assert int(counts[1]) + int(counts[2]) == 1024
    leases = lab.emulator_leases("emu")[leases_before:]
    assert len(leases) == 1 and leases[0][1] == 1, leases
    _assert_clean(lab)


def test_two_qpus_of_different_types_each_get_a_token(lab: Lab) -> None:
    script = _write_script(lab, "env.sh", "env | sort\n")
    job = lab.cluster.sbatch("--qpu=emu2,qa", script)
    assert lab.cluster.wait_done(job) == "COMPLETED"
    env = dict(line.split("=", 1) for line in lab.cluster.output(job).splitlines() if "=" in line)
    assert env["QRMI_JOB_QPU_RESOURCES"] == env["SLURM_JOB_QPU_RESOURCES"] == "emu2,qa"
    assert env["QRMI_JOB_QPU_TYPES"] == env["SLURM_JOB_QPU_TYPES"] == "local-emulator,test-ledger"
    assert env["QRMI_JOB_ID"] == str(job)
    assert env["QRMI_JOB_UID"] == str(os.stat(lab.cluster.work).st_uid)
    assert env["emu2_QRMI_LOCAL_SEED"] == "11"  # the admin's settings, per resource
    assert env["qa_QRMI_LEDGER_NOTE"] == "admin"
    assert env["emu2_QRMI_JOB_ACQUISITION_TOKEN"] != env["qa_QRMI_JOB_ACQUISITION_TOKEN"]
    assert env["qa_QRMI_JOB_TIMEOUT_SECONDS"] == "4294967295"  # no limit (backfill says 365 d)
    assert _assert_exactly_once(lab, "qa", job) == env["qa_QRMI_JOB_ACQUISITION_TOKEN"]
    assert lab.cluster.job(job)["Licenses"] == "emu2:1,qa:1"
    _assert_clean(lab)


def test_time_limit_becomes_the_timeout_variable(lab: Lab) -> None:
    job = lab.cluster.sbatch(
        "--qpu=qb", "--time=7", "--wrap", "echo T=$qb_QRMI_JOB_TIMEOUT_SECONDS"
    )
    assert lab.cluster.wait_done(job) == "COMPLETED"
    assert "T=420" in lab.cluster.output(job)
    _assert_exactly_once(lab, "qb", job)


def test_an_unlimited_job_gets_the_documented_timeout(lab: Lab) -> None:
    jobs = [
        lab.cluster.sbatch("--qpu=qb", "--wrap", "echo T=$qb_QRMI_JOB_TIMEOUT_SECONDS")
        for _ in range(3)  # some start by the main scheduler, some by backfill (365 days)
    ]
    for job in jobs:
        assert lab.cluster.wait_done(job) == "COMPLETED"
        assert "T=4294967295" in lab.cluster.output(job)


def test_python_without_pyqrmi_is_named(lab: Lab) -> None:
    python = "/usr/bin/python3"
    probe = subprocess.run([python, "-I", "-c", "import qrmi"], capture_output=True, check=False)
    if probe.returncode == 0:
        pytest.skip(f"{python} has pyqrmi")
    plugstack = lab.cluster.etc / "plugstack.conf"
    original = plugstack.read_text()
    plugstack.write_text(re.sub(r"python=\S+", f"python={python}", original))
    try:
        result = lab.cluster.as_user(["srun", "--qpu=qb", "true"])
    finally:
        plugstack.write_text(original)
    assert result.returncode != 0
    assert f"pyqrmi is not installed in python={python}" in result.stderr


def test_helper_logs_reach_slurmd_without_secrets(lab: Lab) -> None:
    job = lab.cluster.sbatch("--qpu=qa", "--wrap", "true")
    assert lab.cluster.wait_done(job) == "COMPLETED"
    _assert_exactly_once(lab, "qa", job)
    logs = "".join(lab.cluster.log(node) for node in lab.cluster.nodes)
    assert f"[{job}.batch] qrmi: job {job} step batch: QPUs qa ready" in logs
    release_log = (lab.cluster.state_dir / "helper.log").read_text()
    # the step's detached release, or the Epilog if it got there first
    assert re.search(rf"info job {job}: released qa \((release|epilog)\)", release_log)
    assert SECRET not in logs + release_log + lab.cluster.log("slurmctld")


def test_a_second_job_waits_for_the_license(lab: Lab) -> None:
    first = lab.cluster.sbatch("--qpu=qb", "--wrap", "sleep 120")
    lab.cluster.wait_state(first, ["RUNNING"])
    second = lab.cluster.sbatch("--qpu=qb", "--wrap", "true")
    deadline = time.monotonic() + 30
    while lab.cluster.job(second).get("Reason") != "Licenses" and time.monotonic() < deadline:
        time.sleep(0.2)
    info = lab.cluster.job(second)
    assert (info["JobState"], info["Reason"]) == ("PENDING", "Licenses")
    lab.cluster.run(["scancel", str(first)])
    assert lab.cluster.wait_done(second) == "COMPLETED"
    _assert_exactly_once(lab, "qb", first)
    _assert_exactly_once(lab, "qb", second)


def test_inaccessible_qpu_fails_the_job_with_the_reason_and_no_drain(lab: Lab) -> None:
    job = lab.cluster.sbatch("--qpu=qa,qoff", "--wrap", "echo should-not-run")
    assert lab.cluster.wait_done(job) == "FAILED"
    output = lab.cluster.output(job)
    assert "QPU 'qoff' (test-ledger) is not accessible" in output
    assert "in maintenance until noon" in output
    assert "should-not-run" not in output
    _assert_exactly_once(lab, "qa", job)  # all or nothing: qa went back at once
    _assert_clean(lab)


def test_refused_acquisition_fails_the_job(lab: Lab) -> None:
    job = lab.cluster.sbatch("--qpu=qfail", "--wrap", "echo should-not-run")
    assert lab.cluster.wait_done(job) == "FAILED"
    assert "qfail refused the lease: quota exhausted" in lab.cluster.output(job)
    _assert_clean(lab)


@pytest.mark.slow
def test_hanging_backend_cannot_block_the_job_start(lab: Lab) -> None:
    job = lab.cluster.sbatch("--qpu=qb,qhang", "--wrap", "echo should-not-run")
    assert lab.cluster.wait_done(job, timeout=60) == "FAILED"
    output = lab.cluster.output(job)
    assert "acquiring QPUs qb,qhang" in output and "did not finish within" in output
    _assert_exactly_once(lab, "qb", job)
    _assert_clean(lab)


def test_scancel_releases_exactly_once(lab: Lab) -> None:
    job = lab.cluster.sbatch("--qpu=qa", "--wrap", "sleep 120")
    lab.cluster.wait_state(job, ["RUNNING"])
    lab.cluster.run(["scancel", str(job)])
    assert lab.cluster.wait_done(job) == "CANCELLED"
    _assert_exactly_once(lab, "qa", job)
    _assert_clean(lab)


def test_failing_job_releases_exactly_once(lab: Lab) -> None:
    job = lab.cluster.sbatch("--qpu=qa", "--wrap", "exit 3")
    assert lab.cluster.wait_done(job) == "FAILED"
    _assert_exactly_once(lab, "qa", job)
    _assert_clean(lab)


def test_killed_step_daemon_is_covered_by_the_epilog(lab: Lab) -> None:
    job = lab.cluster.sbatch("--qpu=qa", "--wrap", "sleep 301")
    lab.cluster.wait_state(job, ["RUNNING"])
    deadline = time.monotonic() + 20
    while not lab.ledger_events("qa", job) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(_batch_stepd(lab, job), 9)
    time.sleep(1)
    assert _tokens(lab.ledger_events("qa", job), "release") == []
    assert f"{job}.json" in lab.leftover_state()
    lab.cluster.run(["scancel", str(job)])
    lab.cluster.wait_done(job)
    _assert_exactly_once(lab, "qa", job)
    _assert_clean(lab)
    for pid in lab.cluster.job_processes():  # the orphaned "sleep 301"
        if b"sleep\x00301" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, 9)


def test_multi_node_batch_job_shares_one_acquisition(lab: Lab) -> None:
    job = lab.cluster.sbatch(
        "-N2",
        "--qpu=qa",
        "--wrap",
        "srun -N2 sh -c 'echo TOKEN $SLURMD_NODENAME $qa_QRMI_JOB_ACQUISITION_TOKEN'",
    )
    assert lab.cluster.wait_done(job) == "COMPLETED", lab.cluster.output(job)
    lines = re.findall(r"TOKEN (\S+) (\S+)", lab.cluster.output(job))
    assert len({node for node, _ in lines}) == 2, lines
    token = _assert_exactly_once(lab, "qa", job)
    assert {t for _, t in lines} == {token}
    _assert_clean(lab)


def test_a_step_cannot_use_a_qpu_its_job_does_not_hold(lab: Lab) -> None:
    job = lab.cluster.sbatch("--qpu=qa", "--wrap", "srun --qpu=qb true; echo rc=$?")
    assert lab.cluster.wait_done(job) == "COMPLETED"
    output = lab.cluster.output(job)
    assert "asks for --qpu=qb but job" in output and "rc=1" in output
    assert lab.ledger_events("qb", job) == []
    _assert_exactly_once(lab, "qa", job)


def test_bare_srun_acquires_and_releases_once(lab: Lab) -> None:
    result = lab.cluster.as_user(
        ["srun", "--qpu=qb", "sh", "-c", "echo JOB=$SLURM_JOB_ID T=$qb_QRMI_JOB_ACQUISITION_TOKEN"]
    )
    assert result.returncode == 0, result.stderr
    job, token = re.findall(r"JOB=(\d+) T=(\S+)", result.stdout)[0]
    lab.cluster.wait_done(int(job))
    assert _assert_exactly_once(lab, "qb", int(job)) == token
    _assert_clean(lab)


def test_salloc_steps_share_one_acquisition_released_at_the_end(lab: Lab) -> None:
    result = lab.cluster.as_user(
        [
            "salloc",
            "--qpu=qb",
            "sh",
            "-c",
            "srun sh -c 'echo JOB=$SLURM_JOB_ID T=$qb_QRMI_JOB_ACQUISITION_TOKEN'; "
            "srun sh -c 'echo JOB=$SLURM_JOB_ID T=$qb_QRMI_JOB_ACQUISITION_TOKEN'",
        ],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    steps = re.findall(r"JOB=(\d+) T=(\S+)", result.stdout)
    assert len(steps) == 2 and steps[0] == steps[1], result.stdout
    job = int(steps[0][0])
    lab.cluster.wait_done(job)
    assert _assert_exactly_once(lab, "qb", job) == steps[0][1]
    _assert_clean(lab)


def test_bare_multi_node_srun_is_refused_without_acquiring(lab: Lab) -> None:
    result = lab.cluster.as_user(["srun", "-N2", "--qpu=qb", "true"], timeout=120)
    assert result.returncode != 0
    assert "is supported on one node only" in result.stderr
    job = int(re.findall(r"job (\d+)", result.stderr)[0])
    lab.cluster.wait_done(job)
    assert lab.ledger_events("qb", job) == []
    _assert_clean(lab)


@pytest.mark.slow
def test_time_limit_releases_exactly_once(lab: Lab) -> None:
    job = lab.cluster.sbatch("--qpu=qa", "--time=1", "--wrap", "sleep 300")
    assert lab.cluster.wait_done(job, timeout=180) == "TIMEOUT"
    _assert_exactly_once(lab, "qa", job)
    _assert_clean(lab)


@pytest.mark.slow
def test_a_dead_node_releases_when_it_comes_back(lab: Lab) -> None:
    job = lab.cluster.sbatch("--qpu=qa", "--no-requeue", "-w", "n3", "--wrap", "sleep 302")
    lab.cluster.wait_state(job, ["RUNNING"])
    deadline = time.monotonic() + 20
    while not lab.ledger_events("qa", job) and time.monotonic() < deadline:
        time.sleep(0.1)
    stepd = _batch_stepd(lab, job)
    lab.cluster.kill_node("n3")
    os.kill(stepd, 9)
    # Stay dead past the grace after which a registration without the job proves it lost (the
    # node only registers when slurmd starts, then once a minute), but not long enough to be set
    # DOWN: the node's return is what ends the job, as NODE_FAIL, and runs the Epilog.
    time.sleep(lab.cluster.lost_batch_grace + 3)
    assert lab.cluster.job(job)["JobState"] == "RUNNING"
    assert _tokens(lab.ledger_events("qa", job), "release") == []
    lab.cluster.start_node("n3")
    assert lab.cluster.wait_done(job, timeout=60) == "NODE_FAIL"
    assert f"Batch JobId={job} missing from batch node n3" in lab.cluster.log("slurmctld")
    _assert_exactly_once(lab, "qa", job)
    _assert_clean(lab)
    for pid in lab.cluster.job_processes():  # the orphaned "sleep 302"
        if b"sleep\x00302" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, 9)
