"""The Slurm helper as the shim runs it: a subprocess with argv, stdin and a fake ``squeue``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qrmi.errors import InvalidInputError
from qrmi.slurm.helper import emit, parse_job_record, parse_time_limit

from .conftest import FAKEQPU

HEAVY = ("qiskit", "qiskit_aer", "qiskit_ibm_runtime", "httpx", "pydantic", "typer", "rich")


class Helper:
    """Runs ``python -m qrmi.slurm.helper`` against a config, a state dir and a fake squeue."""

    def __init__(self, tmp_path: Path) -> None:
        self.ledger = tmp_path / "ledger"
        self.ledger.mkdir()
        self.state = tmp_path / "state"
        self.config = tmp_path / "qrmi_config.json"
        env = {"QRMI_LEDGER_DIR": str(self.ledger), "QRMI_LEDGER_NOTE": "admin"}
        self.config.write_text(
            json.dumps(
                {
                    "resources": [
                        {"name": "a", "type": "test-ledger", "environment": env},
                        {"name": "b", "type": "test-ledger", "environment": env},
                    ]
                }
            )
        )
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.squeue_calls = tmp_path / "squeue.calls"
        self.set_squeue("echo '1:30:00|a:1,b:1'")

    def set_squeue(self, body: str) -> None:
        script = self.bin / "squeue"
        script.write_text(f'#!/bin/sh\necho "$@" >> {self.squeue_calls}\n{body}\n')
        script.chmod(0o755)

    def run(
        self, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "qrmi.slurm.helper", args[0]]
        command += ["--config", str(self.config), "--state-dir", str(self.state), *args[1:]]
        environ = {"PATH": f"{self.bin}:/usr/bin:/bin", "PYTHONPATH": str(FAKEQPU), **(env or {})}
        return subprocess.run(
            command,
            input=stdin.decode(),
            capture_output=True,
            text=True,
            env=environ,
            timeout=60,
            check=False,
        )

    def acquire(
        self, *extra: str, stdin: bytes = b"", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run("acquire", "--job", "42", "--uid", "1001", *extra, stdin=stdin, env=env)

    def set_mode(self, name: str, mode: str) -> None:
        config = json.loads(self.config.read_text())
        for resource in config["resources"]:
            if resource["name"] == name:
                resource["environment"] = {**resource["environment"], "QRMI_LEDGER_MODE": mode}
        self.config.write_text(json.dumps(config))

    def events(self, name: str) -> list[str]:
        path = self.ledger / f"{name}.log"
        return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def helper(tmp_path: Path) -> Helper:
    return Helper(tmp_path)


def setenv_lines(stdout: str) -> dict[str, str]:
    lines = [line[7:] for line in stdout.splitlines() if line.startswith("setenv ")]
    return dict(line.split("=", 1) for line in lines)


def test_batch_step_acquires_and_asks_for_release_at_exit(helper: Helper) -> None:
    result = helper.acquire("--step", "batch", "--qpu", "a,b")
    assert result.returncode == 0, result.stdout
    variables = setenv_lines(result.stdout)
    assert variables["QRMI_JOB_QPU_RESOURCES"] == "a,b"
    assert variables["a_QRMI_LEDGER_NOTE"] == variables["b_QRMI_LEDGER_NOTE"] == "admin"
    assert variables["a_QRMI_JOB_TIMEOUT_SECONDS"] == "5400"
    assert "release-at-exit" in result.stdout.splitlines()
    assert "info job 42 step batch: QPUs a,b ready" in result.stdout
    assert helper.squeue_calls.read_text().split() == [
        "-h",
        "-j",
        "42",
        "-o",
        "%l|%W|%S|%u|%a|%P|%v",
    ]
    assert helper.events("a") == ["acquire"]


def test_the_helper_ignores_its_stdin_and_environment(helper: Helper, tmp_path: Path) -> None:
    evil = tmp_path / "evil"
    hostile = {
        key: str(evil)
        for key in ("a_QRMI_LEDGER_DIR", "QRMI_LEDGER_DIR", "a_QRMI_LEDGER_MODE", "QRMI_CONFIG")
    }
    stdin = b"a_QRMI_LEDGER_NOTE=mine\0a_QRMI_LEDGER_DIR=" + str(evil).encode() + b"\0"
    result = helper.acquire("--step", "batch", "--qpu", "a", stdin=stdin, env=hostile)
    assert result.returncode == 0, result.stdout
    assert setenv_lines(result.stdout)["a_QRMI_LEDGER_NOTE"] == "admin"
    assert helper.events("a") == ["acquire"]  # the admin's ledger dir, the admin's mode
    assert not evil.exists()


def test_a_qpu_without_a_granted_license_is_refused(helper: Helper) -> None:
    helper.set_squeue("echo 'UNLIMITED|(null)'")
    result = helper.acquire("--step", "0", "--qpu", "a")
    assert result.returncode == 1
    assert "error job 42 holds no license for QPU a (its licenses: none)" in result.stdout
    assert "submit with sbatch --qpu=a" in result.stdout
    assert helper.events("a") == []


def test_a_license_of_another_qpu_is_not_enough(helper: Helper) -> None:
    helper.set_squeue("echo '5:00|b:1'")
    result = helper.acquire("--step", "batch", "--qpu", "a,b")
    assert result.returncode == 1
    assert "holds no license for QPU a (its licenses: b:1)" in result.stdout
    assert helper.events("a") == helper.events("b") == []


@pytest.mark.parametrize("limit", ["UNLIMITED", "365-00:00:00"])
def test_an_unlimited_job_gets_the_documented_infinity(helper: Helper, limit: str) -> None:
    helper.set_squeue(f"echo '{limit}|a:1'")  # backfill writes 365 days for "no limit"
    result = helper.acquire("--step", "batch", "--qpu", "a")
    assert setenv_lines(result.stdout)["a_QRMI_JOB_TIMEOUT_SECONDS"] == "4294967295"


def test_the_record_the_shim_passes_replaces_squeue(helper: Helper) -> None:
    result = helper.acquire(
        "--step", "batch", "--qpu", "a", "--job-record", "90|a:1|2026-12-01T07:00:00||phys|qpu"
    )
    assert result.returncode == 0, result.stdout
    assert setenv_lines(result.stdout)["a_QRMI_JOB_TIMEOUT_SECONDS"] == "5400"
    assert not helper.squeue_calls.exists()
    assert helper.events("a") == ["acquire"]


@pytest.mark.parametrize("limit", ["UNLIMITED", "NOT_SET", "525600"])
def test_an_unlimited_job_from_the_shim_gets_the_documented_infinity(
    helper: Helper, limit: str
) -> None:
    extra = ("--job-record", f"{limit}|a:1")  # 525600 minutes: backfill's year
    result = helper.acquire("--step", "batch", "--qpu", "a", *extra)
    assert setenv_lines(result.stdout)["a_QRMI_JOB_TIMEOUT_SECONDS"] == "4294967295"


def test_the_licenses_the_shim_passes_are_checked(helper: Helper) -> None:
    extra = ("--job-record", "5|b:1|N/A||phys|qpu")
    result = helper.acquire("--step", "batch", "--qpu", "a,b", *extra)
    assert result.returncode == 1
    assert "holds no license for QPU a (its licenses: b:1)" in result.stdout
    assert helper.events("a") == helper.events("b") == []
    assert not helper.squeue_calls.exists()


def test_a_config_value_with_a_line_break_holds_nothing(helper: Helper) -> None:
    config = json.loads(helper.config.read_text())
    config["resources"][1]["environment"]["QRMI_LEDGER_NOTE"] = "two\nlines"
    helper.config.write_text(json.dumps(config))
    result = helper.acquire("--step", "batch", "--qpu", "a,b")
    assert result.returncode == 1
    assert "the setting 'QRMI_LEDGER_NOTE' of QPU 'b'" in result.stdout
    assert helper.events("a") == helper.events("b") == []
    assert not (helper.state / "jobs" / "42.json").exists()


def test_a_failing_qpu_is_named_in_the_error(helper: Helper) -> None:
    helper.set_mode("b", "unreachable")
    result = helper.acquire("--step", "batch", "--qpu", "a,b")
    assert result.returncode == 1
    assert "error QPU 'b' (test-ledger): cannot connect to" in result.stdout
    assert helper.events("a") == ["acquire", "release"]


def test_a_hung_task_stop_cannot_hold_the_release_past_its_deadline(helper: Helper) -> None:
    helper.set_mode("a", "hang-cancel")
    helper.acquire("--step", "batch", "--qpu", "a")
    log = helper.state / "tasks" / "42.tasks"
    log.write_text("a\tt1\na\tt2\n")
    for task in ("t1", "t2"):
        (helper.ledger / f"a.task.{task}").write_text("Running")
    result = helper.run("release", "--job", "42", "--timeout", "3")
    assert result.returncode == 1
    assert "releasing QPUs for job 42 did not finish within 2 s" in result.stdout
    assert helper.events("a") == ["acquire", "release"]
    assert not (helper.state / "jobs" / "42.json").exists()  # released: the state is gone


def test_a_huge_task_log_is_read_with_a_limit(helper: Helper) -> None:
    helper.acquire("--step", "batch", "--qpu", "a")
    log = helper.state / "tasks" / "42.tasks"
    log.write_text("".join(f"a\ttask-{i}\n" for i in range(300_000)))
    result = helper.run("release", "--job", "42", "--timeout", "20")
    assert result.returncode == 0, result.stdout
    assert "released a" in result.stdout
    assert "only its last 262144 bytes are read" in result.stdout
    assert not (helper.state / "jobs" / "42.json").exists()


def test_release_happens_once(helper: Helper) -> None:
    helper.acquire("--step", "batch", "--qpu", "a")
    first = helper.run("release", "--job", "42")
    second = helper.run("release", "--job", "42")
    assert (first.returncode, second.returncode) == (0, 0)
    assert "info job 42: released a (release)" in first.stdout
    assert second.stdout == ""
    assert helper.events("a") == ["acquire", "release"]


def test_a_step_of_the_job_inherits_without_acquiring(helper: Helper) -> None:
    result = helper.acquire("--step", "0", "--qpu", "a", "--inherited", "a,b")
    assert (result.returncode, result.stdout) == (0, "")
    assert helper.events("a") == []


def test_a_step_cannot_ask_for_a_qpu_the_job_does_not_hold(helper: Helper) -> None:
    result = helper.acquire("--step", "0", "--qpu", "b", "--inherited", "a")
    assert result.returncode == 1
    assert "error this step asks for --qpu=b but job 42 holds a" in result.stdout


def test_multi_node_job_without_batch_step_is_refused(helper: Helper) -> None:
    result = helper.acquire("--step", "0", "--qpu", "a", "--job-nodes", "2", "--own-allocation")
    assert result.returncode == 1
    assert "supported on one node only" in result.stdout and "sbatch -N2 --qpu=a" in result.stdout
    assert helper.events("a") == []


def test_srun_allocation_releases_at_step_end_but_salloc_steps_do_not(helper: Helper) -> None:
    own = helper.acquire("--step", "0", "--qpu", "a", "--own-allocation")
    assert "release-at-exit" in own.stdout.splitlines()
    helper.run("release", "--job", "42")
    salloc_step = helper.acquire("--step", "0", "--qpu", "a")
    later_step = helper.acquire("--step", "1", "--qpu", "a")
    assert "release-at-exit" not in salloc_step.stdout + later_step.stdout
    token = "a_QRMI_JOB_ACQUISITION_TOKEN"
    assert setenv_lines(salloc_step.stdout)[token] == setenv_lines(later_step.stdout)[token]
    assert helper.events("a") == ["acquire", "release", "acquire"]


def test_epilog_releases_leftovers_and_is_quiet_otherwise(helper: Helper) -> None:
    nothing = helper.run("epilog", env={"SLURM_JOB_ID": "42"})
    assert (nothing.returncode, nothing.stdout) == (0, "")
    helper.acquire("--step", "batch", "--qpu", "a")
    result = helper.run("epilog", env={"SLURM_JOB_ID": "42"})
    assert "released a (epilog)" in result.stdout
    assert helper.events("a") == ["acquire", "release"]


def test_unreadable_config_is_a_clear_error(helper: Helper) -> None:
    helper.config.unlink()
    result = helper.acquire("--step", "batch", "--qpu", "a")
    assert result.returncode == 1
    assert f"error cannot read QRMI config file {helper.config}" in result.stdout


def test_unknown_qpu_names_the_configured_ones(helper: Helper) -> None:
    result = helper.acquire("--step", "batch", "--qpu", "zz")
    assert result.returncode == 1
    assert "unknown QPU 'zz' in --qpu; the QPUs configured on this cluster are: a, b" in (
        result.stdout
    )


def test_squeue_failure_fails_the_acquisition(helper: Helper) -> None:
    helper.set_squeue("echo 'slurm_load_jobs error: Invalid job id' >&2; exit 1")
    result = helper.acquire("--step", "batch", "--qpu", "a")
    assert result.returncode == 1
    assert "cannot read the record of job 42 with squeue: slurm_load_jobs error" in (result.stdout)
    assert helper.events("a") == []  # nothing was acquired


def test_a_hung_backend_is_cut_by_the_helper_deadline(helper: Helper) -> None:
    helper.set_mode("a", "hang")
    result = helper.acquire("--step", "batch", "--qpu", "b,a", "--timeout", "3")
    assert result.returncode == 1
    assert "acquiring QPUs b,a for job 42 did not finish within 2 s" in result.stdout
    assert helper.events("b") == ["acquire", "release"]


def test_the_helper_starts_without_heavy_imports(helper: Helper) -> None:
    result = helper.run("acquire", "--job", "42", "--uid", "1", "--step", "batch", "--qpu", "a")
    assert result.returncode == 0
    command = [sys.executable, "-X", "importtime", "-m", "qrmi.slurm.helper", "epilog"]
    command += ["--config", str(helper.config), "--state-dir", str(helper.state), "--job", "1"]
    trace = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(FAKEQPU)},
        timeout=60,
        check=False,
    ).stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in trace.splitlines()}
    assert not imported & set(HEAVY)


def test_the_helper_module_loads_neither_typing_nor_dataclasses() -> None:
    """They load later, once ``__main__`` has turned the garbage collector off."""
    code = (
        "import sys, qrmi.slurm.helper\n"
        "print('typing' in sys.modules, 'dataclasses' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "False"]


def test_an_emulator_step_imports_neither_argparse_nor_the_emulator_worker(
    helper: Helper, tmp_path: Path
) -> None:
    store = tmp_path / "emulator"
    emulator = {"name": "emu", "type": "local-emulator"}
    emulator["environment"] = {"QRMI_LOCAL_STATE_DIR": str(store)}  # type: ignore[assignment]
    helper.config.write_text(json.dumps({"resources": [emulator]}))
    helper.set_squeue("echo '1:30:00|emu:1'")
    imported: dict[str, set[str]] = {}
    for command, extra in (
        ("acquire", ["--uid", "1", "--step", "batch", "--qpu", "emu"]),
        ("release", []),
    ):
        trace = helper.run(command, "--job", "42", *extra, env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert trace.returncode == 0, trace.stdout
        imported[command] = {line.split("|")[-1].strip() for line in trace.stderr.splitlines()}
    assert (store / "tasks.sqlite3").exists()  # the lease went to the emulator's store
    for command, modules in imported.items():
        unwanted = {"argparse", "multiprocessing", "qrmi.backends.local_emulator.worker"}
        unwanted |= {"uuid", "platform"}  # ~2 ms of every step (qrmi._uuid instead)
        assert not modules & unwanted, command


def test_a_wrong_command_line_is_one_error_line_naming_the_option(helper: Helper) -> None:
    unknown = helper.run("release", "--job", "42", "--qpu", "a")
    assert unknown.returncode == 2
    assert unknown.stdout.startswith("error unknown option '--qpu' for the QRMI helper's release")
    not_a_number = helper.acquire("--step", "batch", "--qpu", "a", "--uid=x")
    assert not_a_number.stdout == (
        "error option --uid of the QRMI helper needs a whole number, not 'x'\n"
    )
    missing = helper.run("acquire", "--job", "42", "--qpu", "a")
    assert "error the QRMI helper's acquire needs --step, --uid" in missing.stdout
    assert helper.events("a") == []


def test_emitted_messages_are_single_redacted_lines(capsys: pytest.CaptureFixture[str]) -> None:
    emit("error", "login failed\nwith apikey=abc123 for user")
    assert capsys.readouterr().out == "error login failed with apikey=*** for user\n"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 300),
        ("1:30:00", 5400),
        ("10:00", 600),
        ("2-03:00:00", 2 * 86400 + 3 * 3600),
        ("365-00:00:00", 365 * 86400),
        ("UNLIMITED", None),
        ("INFINITE", None),
    ],
)
def test_parse_time_limit(text: str, seconds: int | None) -> None:
    assert parse_time_limit(text) == seconds


def test_parse_time_limit_refuses_garbage() -> None:
    with pytest.raises(InvalidInputError, match="not a Slurm time limit"):
        parse_time_limit("soon")


def test_state_survives_for_the_epilog_when_nothing_released_it(helper: Helper) -> None:
    helper.acquire("--step", "batch", "--qpu", "a")
    assert "42.json" in os.listdir(helper.state / "jobs")


@pytest.mark.parametrize(
    ("line", "start", "accounting", "reservation"),
    [
        ("90", None, {}, None),  # fields missing: still a record, never a traceback
        ("90|a:1|2026-12-01T07:00:00", "2026-12-01T07:00:00", {}, None),
        (
            "90|a:1|N/A|bob|phys|qpu|qrmi-a-dedicated-x",
            None,
            {"user": "bob", "account": "phys", "partition": "qpu"},
            "qrmi-a-dedicated-x",
        ),
        ("90|a:1|N/A||acct,with,commas|qpu|(null)", None, {"partition": "qpu"}, None),
    ],
)
def test_a_job_record_line_gives_what_it_holds_and_drops_odd_names(
    line: str, start: str | None, accounting: dict[str, str], reservation: str | None
) -> None:
    record = parse_job_record(line)

    assert record.time_limit_seconds == 5400
    assert (record.start_time, record.accounting, record.reservation) == (
        start,
        accounting,
        reservation,
    )
