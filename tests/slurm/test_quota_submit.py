"""A user over a QPU-seconds quota is refused at ``sbatch --qpu`` time: ``qrmi slurm sync`` asks
the gateway who is over quota and writes ``qrmi_quota.lua``; ``job_submit.lua`` refuses them
with the quota's reason. First the pieces (the rule under a stand-in of Slurm's Lua API, the
sync with its gateway call injected), then the whole on the live cluster with a real gateway."""

from __future__ import annotations

import json
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from qrmi.backends.local_emulator.worker import stop_worker
from qrmi.gateway.store import Store, UsageRecord
from qrmi.slurm.slurmcli import SlurmCli
from qrmi.slurm.sync import QUOTA_FILE, Syncer, render_quota_lua
from qrmi.testing.slurm_cluster import find_checkout

from .fakeslurm import FakeSlurm
from .lab import Lab

CHECKOUT = find_checkout()
HOSTILE = 'x" } os.exit(3) --\n%s %d \\ ]] "'


def _lua() -> str:
    lua = shutil.which("lua5.1") or shutil.which("lua")
    if lua is None:
        pytest.skip("no Lua 5.1 interpreter (apt-get install lua5.1)")
    return lua


# ----- job_submit.lua under a stand-in of Slurm's Lua API --------------------------------------

HARNESS = """
slurm = { SUCCESS = 0, ERROR = -1 }
function slurm.log_user(fmt, ...) print("USER " .. string.format(fmt, ...)) end
function slurm.log_error(fmt, ...) print("ERROR " .. string.format(fmt, ...)) end
function slurm.log_debug(fmt, ...) end
dofile(arg[1])
local function given(value) if value ~= "" then return value end return nil end
local job = { spank_job_env = { [0] = "_SLURM_SPANK_OPTION_qrmi_qpu=" .. arg[2] },
              user_name = given(arg[3]), account = given(arg[4]) }
print("RC " .. slurm_job_submit(job, {}, tonumber(arg[5])))
print("LICENSES " .. tostring(job.licenses))
"""


def _submit(directory: Path, qpus: str, user: str = "", account: str = "", uid: int = 1001) -> Any:
    harness = directory / "harness.lua"
    harness.write_text(HARNESS)
    result = subprocess.run(
        [_lua(), str(harness), str(directory / "job_submit.lua"), qpus, user, account, str(uid)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


@pytest.fixture
def rule_dir(tmp_path: Path) -> Path:
    from qrmi.slurm import admin

    shutil.copy(CHECKOUT / "slurm" / "job_submit.lua", tmp_path / "job_submit.lua")
    (tmp_path / admin.LUA_DATA_FILE).write_text(admin.render_lua_data(["fez", "torino"]))
    over = [
        {"qpu": "fez", "kind": "user", "name": "alice", "reason": "alice is over: " + HOSTILE},
        {"qpu": "fez", "kind": "account", "name": "physics", "reason": "physics is over"},
    ]
    uids = {"alice": 1234}
    (tmp_path / QUOTA_FILE).write_text(render_quota_lua(over, uids.get))
    return tmp_path


def test_the_rule_refuses_an_over_quota_user_with_the_reason(rule_dir: Path) -> None:
    out = _submit(rule_dir, "torino,fez", user="alice")
    assert out["RC"] == "-1"
    assert out["USER"] == (
        "qrmi: --qpu=torino,fez refused: alice is over: " + HOSTILE.replace("\n", " ")
    )
    assert out["LICENSES"] == "nil"  # nothing was granted


def test_the_rule_knows_the_user_by_uid_and_the_account(rule_dir: Path) -> None:
    assert _submit(rule_dir, "fez", uid=1234)["RC"] == "-1"
    assert _submit(rule_dir, "fez", user="bob", account="physics")["USER"].endswith(
        "physics is over"
    )


def test_the_rule_lets_others_and_other_qpus_through(rule_dir: Path) -> None:
    assert _submit(rule_dir, "fez", user="bob", account="chemistry")["RC"] == "0"
    assert _submit(rule_dir, "torino", user="alice")["LICENSES"] == "torino:1"
    (rule_dir / QUOTA_FILE).write_text("this is not Lua")  # a broken file refuses no one
    assert _submit(rule_dir, "fez", user="alice")["RC"] == "0"


# ----- qrmi slurm sync writes the list ---------------------------------------------------------


def _syncer(tmp_path: Path, fetch: Any) -> Syncer:
    environment = {"QRMI_LEDGER_MODE": "online", "QRMI_GATEWAY_URL": "http://127.0.0.1:9"}
    config = tmp_path / "qrmi_config.json"
    config.write_text(
        json.dumps(
            {"resources": [{"name": "qa", "type": "test-ledger", "environment": environment}]}
        )
    )
    return Syncer(
        config,
        tmp_path / "sync",
        slurm=SlurmCli(FakeSlurm({"qa": 1})),
        lua_data=tmp_path / "qrmi_held.lua",
        quota_fetch=fetch,
    )


def test_sync_writes_who_the_gateway_says_is_over_quota(
    tmp_path: Path, ledger_backend: str
) -> None:
    asked = []

    def fetch(site: Any) -> Any:
        asked.append(site.url)
        return {"over": [{"qpu": "qa", "kind": "user", "name": "root", "reason": HOSTILE}, {}]}

    _syncer(tmp_path, fetch).run_once()

    assert asked == ["http://127.0.0.1:9"]
    script = (
        f'local q = dofile("{tmp_path / QUOTA_FILE}").qa '
        'io.write(q.users.root, "|", q.uids[0], "|", tostring(next(q.accounts)))'
    )
    result = subprocess.run([_lua(), "-e", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    flat = HOSTILE.replace("\n", " ")
    assert result.stdout == f"{flat}|{flat}|nil"


def test_a_gateway_that_cannot_be_asked_leaves_the_list_as_it_was(
    tmp_path: Path, ledger_backend: str
) -> None:
    (tmp_path / QUOTA_FILE).write_text("-- before\n")

    def fetch(site: Any) -> Any:
        raise OSError("connection refused")

    _syncer(tmp_path, fetch).run_once()
    assert (tmp_path / QUOTA_FILE).read_text() == "-- before\n"


# ----- the live cluster ------------------------------------------------------------------------

#: A second job user, under quota (the lab's own user is over it).
OTHER_USER = "qrmiquota2"


@dataclass
class QuotaSite:
    url: str
    controller_config: Path
    home: Path


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spent(store: Store, user: str, seconds: float) -> None:
    now = time.time()
    store.add_usage(
        UsageRecord(
            qpu="emu2",
            task_id=f"earlier-{user}",
            slurm_job_id="1",
            uid=pwd.getpwnam(user).pw_uid,
            user_name=user,
            account=None,
            partition="debug",
            qpu_type="local-emulator",
            payload_kind="QiskitPrimitive",
            program="sampler",
            shots=100,
            input_bytes=10,
            submitted=now,
        )
    )
    store.end_usage(
        "emu2",
        f"earlier-{user}",
        state="Completed",
        ended=now,
        quantum_seconds=seconds,
        usage_source="vendor",
    )


@pytest.fixture(scope="module")
def quota_site(lab: Lab) -> Iterator[QuotaSite]:
    if subprocess.run(["id", OTHER_USER], capture_output=True, check=False).returncode != 0:
        made = subprocess.run(
            ["useradd", "--no-create-home", "--shell", "/bin/sh", OTHER_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0:
            pytest.skip(f"cannot create the user {OTHER_USER}: {made.stderr}")
    home = lab.cluster.root / "quota-gateway"
    home.mkdir(mode=0o700)
    environment = {"QRMI_LOCAL_STATE_DIR": str(home / "emu2"), "QRMI_LOCAL_IDLE_SECONDS": "5"}
    rule = {"qpu": "emu2", "user": "*", "qpu_seconds": 100, "period": "month"}
    config = home / "qrmi_config.json"
    config.write_text(
        json.dumps(
            {
                "resources": [
                    {"name": "emu2", "type": "local-emulator", "environment": environment}
                ],
                "quotas": [rule],
            }
        )
    )
    store = Store(home / "gateway.db")
    _spent(store, lab.cluster.user, 150.0)  # over
    _spent(store, OTHER_USER, 20.0)  # under
    store.close()
    munge_socket = str(lab.cluster.root / "munge" / "munge.socket")
    url = f"http://127.0.0.1:{_free_port()}"
    command = [sys.executable, "-c", "from qrmi.cli import main; main()", "gateway"]
    command += ["--config", str(config), "--store", str(home / "gateway.db")]
    command += ["--listen", url[len("http://") :], "--munge-socket", munge_socket]
    log = (home / "gateway.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    controller = home / "controller_config.json"
    via_gateway = {"QRMI_GATEWAY_URL": url, "QRMI_GATEWAY_MUNGE_SOCKET": munge_socket}
    controller.write_text(
        json.dumps(
            {"resources": [{"name": "emu2", "type": "local-emulator", "environment": via_gateway}]}
        )
    )
    controller.chmod(0o600)
    try:
        _wait_healthy(url, process, home / "gateway.log")
        yield QuotaSite(url, controller, home)
    finally:
        for name in ("qrmi_quota.lua", "qrmi_held.lua"):
            (lab.cluster.etc / name).unlink(missing_ok=True)
        process.terminate()
        process.wait(timeout=30)
        log.close()
        stop_worker(home / "emu2")
        subprocess.run(["userdel", OTHER_USER], capture_output=True, check=False)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(300):
        if process.poll() is not None:
            pytest.fail(f"qrmi gateway exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"qrmi gateway did not answer: {log.read_text()}")


def _sbatch_as(lab: Lab, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["runuser", "-u", user, "--", "env", f"SLURM_CONF={lab.cluster.slurm_conf}"]
    command += ["sbatch", "--parsable", *args]
    env = {k: v for k, v in lab.cluster.env.items() if k in ("PATH", "LANG")}
    return subprocess.run(command, capture_output=True, text=True, cwd="/tmp", env=env, timeout=60)


@pytest.mark.slurm
def test_an_over_quota_user_is_refused_at_submit_and_others_still_submit(
    lab: Lab, quota_site: QuotaSite
) -> None:
    assert lab.cluster.python is not None
    sync = [str(lab.cluster.python), "-m", "qrmi.slurm.cli", "sync", "--once"]
    sync += ["--config", str(quota_site.controller_config), "--probe-timeout", "5"]
    sync += ["--lua-data", str(lab.cluster.etc / "qrmi_held.lua")]
    sync += ["--sync-state-dir", str(quota_site.home / "sync-state")]
    result = lab.cluster.run(sync)
    assert result.returncode == 0, result.stderr
    assert "nobody over quota" not in result.stderr

    refused = _sbatch_as(lab, lab.cluster.user, "--qpu=emu2", "--wrap", "true")
    assert refused.returncode != 0 and refused.stdout.strip() == ""  # no job, no node
    assert (
        f"qrmi: --qpu=emu2 refused: QPU-seconds quota exceeded: user {lab.cluster.user} has "
        "used 150.0 s of the 100 s per month allowed on QPU emu2" in refused.stderr
    ), refused.stderr
    assert "it resets at " in refused.stderr

    accepted = _sbatch_as(
        lab, OTHER_USER, "--qpu=emu2", "--output=/dev/null", "--hold", "--wrap", "true"
    )
    assert accepted.returncode == 0, accepted.stderr
    job = int(accepted.stdout.strip().split(";")[0])
    assert "emu2" in lab.cluster.job(job).get("Licenses", "")
    lab.cluster.run(["scancel", str(job)])
    plain = _sbatch_as(lab, lab.cluster.user, "--output=/dev/null", "--hold", "--wrap", "true")
    assert plain.returncode == 0, plain.stderr  # a job without --qpu is not the quota's business
    lab.cluster.run(["scancel", plain.stdout.strip().split(";")[0]])
