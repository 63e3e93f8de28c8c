"""Admin tools: licenses, the job_submit rule's data, the Epilog script and ``qrmi slurm check``;
the job_submit.lua rule under Lua 5.1 and the C shim's build."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qrmi.config import Config
from qrmi.errors import ConfigError
from qrmi.slurm import admin
from qrmi.slurm.cli import app
from qrmi.testing.slurm_cluster import find_checkout

CHECKOUT = find_checkout()


def write_config(path: Path, counts: dict[str, str | None]) -> Path:
    resources = []
    for name, count in counts.items():
        env = {} if count is None else {admin.COUNT_KEY: count}
        resources.append({"name": name, "type": "local-emulator", "environment": env})
    path.write_text(json.dumps({"resources": resources}))
    return path


def test_license_counts_default_to_one_with_config_and_cli_overrides(tmp_path: Path) -> None:
    config = Config.load(write_config(tmp_path / "c.json", {"fez": None, "torino": "3"}))
    assert admin.license_counts(config) == {"fez": 1, "torino": 3}
    assert admin.license_counts(config, {"fez": 2}) == {"fez": 2, "torino": 3}
    assert admin.render_licenses(admin.license_counts(config)) == "Licenses=fez:1,torino:3"


def test_bad_license_counts_are_refused(tmp_path: Path) -> None:
    config = Config.load(write_config(tmp_path / "c.json", {"fez": "0"}))
    with pytest.raises(ConfigError, match="at least 1"):
        admin.license_counts(config)
    with pytest.raises(ConfigError, match="unknown QPU nope"):
        admin.license_counts(
            Config.load(write_config(tmp_path / "d.json", {"a": None})), {"nope": 1}
        )


def test_cli_prints_licenses_and_writes_the_rule_data(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.json", {"b": None, "a": None})
    data = tmp_path / "qrmi_qpus.lua"
    result = CliRunner().invoke(
        app, ["licenses", "--config", str(config), "--count", "b=2", "--lua-data", str(data)]
    )
    assert result.exit_code == 0, result.output
    assert "Licenses=a:1,b:2" in result.output
    assert data.read_text().endswith('return { "a", "b" }\n')


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the check wants root-owned files")


def setup_cluster_files(
    tmp_path: Path, licenses: str, python: str = sys.executable
) -> tuple[Path, Path]:
    config = write_config(tmp_path / "qrmi_config.json", {"a": None, "b": "2"})
    config.chmod(0o600)
    shim = tmp_path / "spank_qrmi.so"
    shim.write_bytes(b"")
    (tmp_path / "plugstack.conf").write_text(f"include {tmp_path}/plugstack.conf.d/*.conf\n")
    (tmp_path / "plugstack.conf.d").mkdir()
    (tmp_path / "plugstack.conf.d" / "qrmi.conf").write_text(
        f"required {shim} config={config} python={python} timeout=30 "
        f"state_dir={tmp_path / 'state'}\n"
    )
    shutil.copy(CHECKOUT / "slurm" / "job_submit.lua", tmp_path / "job_submit.lua")
    (tmp_path / admin.LUA_DATA_FILE).write_text(admin.render_lua_data(["a", "b"]))
    epilog = tmp_path / "epilog.sh"
    state = str(tmp_path / "state")
    epilog.write_text(admin.render_epilog_script(python, str(config), state))
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        f"ClusterName=x\nJobSubmitPlugins=lua\n{licenses}\nEpilog={epilog}\n"
        f"PlugStackConfig={tmp_path / 'plugstack.conf'}\n"
    )
    return config, conf


@root_only
def test_check_passes_on_a_consistent_setup(tmp_path: Path) -> None:
    config, conf = setup_cluster_files(tmp_path, "Licenses=a:1,b:2")
    findings = admin.check(config, conf)
    assert [f.message for f in findings if f.level in ("error", "warning")] == []
    result = CliRunner().invoke(app, ["check", "--config", str(config), "--slurm-conf", str(conf)])
    assert result.exit_code == 0, result.output


def test_check_reports_each_inconsistency(tmp_path: Path) -> None:
    config, conf = setup_cluster_files(tmp_path, "Licenses=a:1,old:1")
    (tmp_path / admin.LUA_DATA_FILE).write_text(admin.render_lua_data(["a"]))
    conf.write_text(conf.read_text().replace("Epilog=", "#Epilog="))
    problems = [f"{f.level}: {f.message}" for f in admin.check(config, conf) if f.level != "ok"]
    text = "\n".join(problems)
    assert "error: slurm.conf Licenses= lacks QPU b" in text
    assert "warning: slurm.conf license old is not a QPU" in text
    assert "lists a but the config has a, b" in text
    assert "no Epilog=" in text
    result = CliRunner().invoke(app, ["check", "--config", str(config), "--slurm-conf", str(conf)])
    assert result.exit_code == 1


def test_check_finds_a_missing_shim_registration(tmp_path: Path) -> None:
    config, conf = setup_cluster_files(tmp_path, "Licenses=a:1,b:2")
    (tmp_path / "plugstack.conf.d" / "qrmi.conf").unlink()
    messages = [f.message for f in admin.check(config, conf) if f.level == "error"]
    assert any("does not load spank_qrmi.so" in m for m in messages)


def check_problems(config: Path, conf: Path) -> str:
    return "\n".join(
        f"{f.level}: {f.message}"
        for f in admin.check(config, conf)
        if f.level in ("error", "warning")
    )


def test_check_fails_when_python_lacks_pyqrmi(tmp_path: Path) -> None:
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = bare / "bin" / "python"
    config, conf = setup_cluster_files(tmp_path, "Licenses=a:1,b:2", python=str(python))
    assert f"error: pyqrmi is not installed in python={python}" in check_problems(config, conf)
    assert "No module named 'qrmi'" in check_problems(config, conf)
    result = CliRunner().invoke(app, ["check", "--config", str(config), "--slurm-conf", str(conf)])
    assert result.exit_code == 1
    assert f"pyqrmi is not installed in python={python}" in result.output


def test_check_wants_a_private_root_owned_config(tmp_path: Path) -> None:
    config, conf = setup_cluster_files(tmp_path, "Licenses=a:1,b:2")
    config.chmod(0o644)
    problems = check_problems(config, conf)
    assert f"error: config {config} (mode 0644) is readable by every user" in problems
    config.chmod(0o620)
    problems = check_problems(config, conf)
    assert f"error: config {config} (mode 0620) is writable by its group" in problems
    assert "chown root:root and chmod 600" in problems


@root_only
def test_check_wants_a_root_only_state_dir(tmp_path: Path) -> None:
    config, conf = setup_cluster_files(tmp_path, "Licenses=a:1,b:2")
    state = tmp_path / "state"
    assert "state_dir" not in check_problems(config, conf), "a missing state_dir is created"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    assert f"error: state_dir {state} (mode 0777) is writable by every user" in check_problems(
        config, conf
    )
    state.chmod(0o700)
    os.chown(state, 65534, 65534)
    assert f"error: state_dir {state} (mode 0700) is owned by uid 65534, not root" in (
        check_problems(config, conf)
    )


@root_only
def test_check_refuses_a_config_in_a_directory_others_can_write(tmp_path: Path) -> None:
    config, conf = setup_cluster_files(tmp_path, "Licenses=a:1,b:2")
    tmp_path.chmod(0o777)
    try:
        assert f"its directory {tmp_path} (owner root, mode 0777) lets others replace it" in (
            check_problems(config, conf)
        )
    finally:
        tmp_path.chmod(0o700)


def test_check_finds_an_epilog_looking_elsewhere_and_a_relative_python(tmp_path: Path) -> None:
    config, conf = setup_cluster_files(tmp_path, "Licenses=a:1,b:2", python="python3")
    epilog = tmp_path / "epilog.sh"
    epilog.write_text(admin.render_epilog_script(sys.executable, str(config), "/var/lib/other"))
    problems = check_problems(config, conf)
    assert "python=python3 must be an absolute path" in problems
    assert (
        f"error: Epilog {epilog} looks for job state in /var/lib/other, but plugstack.conf's "
        f"state_dir is {tmp_path / 'state'}"
    ) in problems


def test_check_lists_the_variables_a_job_sees_without_secret_values(tmp_path: Path) -> None:
    config, conf = setup_cluster_files(tmp_path, "Licenses=a:1,b:2,fez:1")
    environment = {
        "QRMI_IBM_QS_ENDPOINT": "https://qpu.example/api",
        "QRMI_IBM_QS_IAM_APIKEY": "sk-LEAK-ME-NOT",
        "QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY": "aws-LEAK-ME-NOT",
    }
    data = json.loads(config.read_text())
    data["resources"].append(
        {"name": "fez", "type": "ibm-quantum-system", "environment": environment}
    )
    config.write_text(json.dumps(data))
    (tmp_path / admin.LUA_DATA_FILE).write_text(admin.render_lua_data(["a", "b", "fez"]))
    result = CliRunner().invoke(app, ["check", "--config", str(config), "--slurm-conf", str(conf)])
    assert "LEAK-ME-NOT" not in result.output
    view = next(f.message for f in admin.check(config, conf) if "--qpu=fez" in f.message)
    assert view.startswith("a job with --qpu=fez sees")
    assert (
        "including the credentials QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY, QRMI_IBM_QS_IAM_APIKEY"
        in view
    )
    assert "fez_QRMI_IBM_QS_ENDPOINT=https://qpu.example/api" in view
    assert "fez_QRMI_IBM_QS_IAM_APIKEY=***" in view
    assert "fez_QRMI_JOB_ACQUISITION_TOKEN=<set at job start>" in view
    assert "QRMI_JOB_QPU_RESOURCES=fez" in view and "QRMI_JOB_TASK_LOG=" in view
    assert "LEAK-ME-NOT" not in view


def test_epilog_script_exits_zero_and_skips_jobs_without_state(tmp_path: Path) -> None:
    script = tmp_path / "epilog.sh"
    script.write_text(admin.render_epilog_script("/nonexistent/python", "/x.json", str(tmp_path)))
    script.chmod(0o755)
    quiet = subprocess.run(
        [str(script)],
        env={"SLURM_JOB_ID": "5", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert quiet.returncode == 0
    assert not (tmp_path / "helper.log").exists()  # Python was not even started
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "5.json").write_text("{}")
    broken = subprocess.run(
        [str(script)],
        env={"SLURM_JOB_ID": "5", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert broken.returncode == 0  # a failing Epilog would drain the node
    assert (tmp_path / "helper.log").exists()


def _blocked_on_a_lock(group: int) -> bool:
    """Whether a ``flock`` of the process group ``group`` is running (waiting for the lock)."""
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and os.getpgid(int(proc.name)) == group
                and (proc / "comm").read_text().strip() == "flock"
            ):
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock(1) (util-linux)")
def test_epilog_waits_for_a_running_release_instead_of_starting_python(tmp_path: Path) -> None:
    script = tmp_path / "epilog.sh"
    script.write_text(admin.render_epilog_script("/nonexistent/python", "/x.json", str(tmp_path)))
    script.chmod(0o755)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "5.json").write_text("{}")
    lock = os.open(jobs / "5.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # the step's release, still running
    epilog = subprocess.Popen(
        [str(script)],
        env={"SLURM_JOB_ID": "5", "PATH": "/usr/bin:/bin"},
        start_new_session=True,
    )
    try:
        while not _blocked_on_a_lock(epilog.pid) and not (tmp_path / "helper.log").exists():
            assert epilog.poll() is None, "the Epilog ended before the release did"
        (jobs / "5.json").unlink()  # the release forgets the job, then drops its lock
    finally:
        os.close(lock)
    assert epilog.wait(timeout=30) == 0
    assert not (tmp_path / "helper.log").exists()  # Python was not started


# ----- job_submit.lua under a stand-in of Slurm's Lua API --------------------------------------

LUA_HARNESS = """
slurm = { SUCCESS = 0, ERROR = -1 }
function slurm.log_user(fmt, ...) print("USER " .. string.format(fmt, ...)) end
function slurm.log_error(fmt, ...) print("ERROR " .. string.format(fmt, ...)) end
function slurm.log_debug(fmt, ...) end
dofile(arg[1])
local env = {}
for i = 3, #arg do env[i - 3] = arg[i] end   -- 0-indexed, as Slurm passes it
local job = { spank_job_env = env, licenses = (arg[2] ~= "" and arg[2] or nil) }
local rc = slurm_job_submit(job, {}, 1001)
print("RC " .. rc)
print("LICENSES " .. tostring(job.licenses))
"""


def run_rule(tmp_path: Path, licenses: str, *env: str) -> dict[str, str]:
    lua = shutil.which("lua5.1") or shutil.which("lua")
    if lua is None:
        pytest.skip("no Lua 5.1 interpreter (apt-get install lua5.1)")
    shutil.copy(CHECKOUT / "slurm" / "job_submit.lua", tmp_path / "job_submit.lua")
    (tmp_path / admin.LUA_DATA_FILE).write_text(admin.render_lua_data(["fez", "torino"]))
    harness = tmp_path / "harness.lua"
    harness.write_text(LUA_HARNESS)
    result = subprocess.run(
        [lua, str(harness), str(tmp_path / "job_submit.lua"), licenses, *env],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


OPTION = "_SLURM_SPANK_OPTION_qrmi_qpu="


def test_rule_turns_qpus_into_licenses(tmp_path: Path) -> None:
    out = run_rule(tmp_path, "", "HOME=/x", f"{OPTION}fez,torino,fez")
    assert (out["RC"], out["LICENSES"]) == ("0", "fez:1,torino:1")


def test_rule_merges_with_the_users_licenses(tmp_path: Path) -> None:
    out = run_rule(tmp_path, "matlab:2,fez:3", f"{OPTION}fez,torino")
    assert out["LICENSES"] == "matlab:2,fez:3,torino:1"


def test_rule_leaves_jobs_without_qpus_alone(tmp_path: Path) -> None:
    out = run_rule(tmp_path, "matlab:1", "HOME=/x")
    assert (out["RC"], out["LICENSES"]) == ("0", "matlab:1")


def test_rule_rejects_unknown_qpus_listing_the_valid_ones(tmp_path: Path) -> None:
    out = run_rule(tmp_path, "", f"{OPTION}fez,nope")
    assert out["RC"] == "-1"
    assert out["USER"] == "qrmi: unknown QPU 'nope' in --qpu=fez,nope; valid QPUs are: fez, torino"


def test_rule_refuses_qpu_jobs_when_its_data_is_missing(tmp_path: Path) -> None:
    run_rule(tmp_path, "", "HOME=/x")
    (tmp_path / admin.LUA_DATA_FILE).unlink()
    lua = shutil.which("lua5.1") or shutil.which("lua")
    assert lua is not None
    result = subprocess.run(
        [lua, str(tmp_path / "harness.lua"), str(tmp_path / "job_submit.lua"), "", f"{OPTION}fez"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "RC -1" in result.stdout and "QPU list of this cluster is missing" in result.stdout


# ----- the C shim ------------------------------------------------------------------------------


def test_shim_builds_warning_free_and_exports_the_spank_symbols(tmp_path: Path) -> None:
    if shutil.which("gcc") is None or not Path("/usr/include/slurm/spank.h").exists():
        pytest.skip("needs gcc and libslurm-dev")
    out = tmp_path / "spank_qrmi.so"
    build = subprocess.run(
        [
            "gcc",
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wconversion",
            "-O2",
            "-shared",
            "-fPIC",
            "-o",
            str(out),
            str(CHECKOUT / "slurm" / "spank_qrmi.c"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    symbols = subprocess.run(
        ["nm", "-D", str(out)], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    for name in (
        "plugin_name",
        "plugin_type",
        "plugin_version",
        "slurm_spank_init",
        "slurm_spank_init_post_opt",
        "slurm_spank_task_init",
        "slurm_spank_exit",
    ):
        assert f" {name}\n" in symbols
    assert "slurm_spank_job_prolog" not in symbols and "slurm_spank_job_epilog" not in symbols
    assert (
        "libslurm"
        not in subprocess.run(
            ["ldd", str(out)], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    )
