"""The root side never obeys the job's user: a hostile job environment and license bypasses,
on the live test cluster."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrmi.testing.slurm_cluster import find_checkout

from .lab import Lab

pytestmark = pytest.mark.slurm

#: Every setting name a backend reads: ``QRMI_*`` keys and the unprefixed globals.
SETTING = re.compile(r"\b((?:QRMI|PASQAL|AWS)_[A-Z0-9_]*[A-Z0-9])\b")


def backend_setting_keys() -> list[str]:
    """The setting keys found in the backends' sources (so a new backend is covered too)."""
    sources = (find_checkout() / "src" / "qrmi").rglob("*.py")
    keys = {key for path in sources for key in SETTING.findall(path.read_text())}
    return sorted(keys | {"HOME", "XDG_STATE_HOME", "QRMI_CONFIG", "QRMI_LEDGER_DIR"})


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def _record(self) -> None:
        self.requests.append(f"{self.command} {self.path}")
        self.send_response(500)
        self.end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = _record

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    """A server on 127.0.0.1 and the requests it got (it must get none): ``(url, requests)``."""
    _Recorder.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/evil", _Recorder.requests
    finally:
        server.shutdown()
        server.server_close()


def _hostile_value(key: str, url: str, link: Path) -> str:
    if any(part in key for part in ("URL", "ENDPOINT", "BASE")):
        return url
    if any(part in key for part in ("DIR", "ROOT", "SOCKET", "LOG", "HOME", "CONFIG")):
        return str(link / key.lower())
    return "hostile\nsetenv injected=1"


def test_a_hostile_job_environment_changes_nothing_root_does(
    lab: Lab, listener: tuple[str, list[str]]
) -> None:
    cluster = lab.cluster
    url, requests = listener
    root_only = cluster.root / "root-only"
    root_only.mkdir(mode=0o700, exist_ok=True)
    link = cluster.work / "link"
    cluster.as_user(["ln", "-sfn", str(root_only), str(link)])
    env: dict[str, str] = {}
    for key in backend_setting_keys():
        value = _hostile_value(key, url, link)
        env[key] = value
        for qpu in ("emu", "qa"):
            env[f"{qpu}_{key}"] = value
    env["qa_QRMI_LEDGER_NOTE\nsetenv qa_QRMI_LEDGER_NOTE"] = "injected"
    env["qa_QRMI_LEDGER_NOTE"] = "mine\nsetenv qa_QRMI_LEDGER_NOTE=injected"
    script = cluster.work / "hostile.sh"
    script.write_text("#!/bin/sh\nenv -0 > hostile-env-$SLURM_JOB_ID\n")
    script.chmod(0o755)
    job = cluster.sbatch("--qpu=emu,qa", str(script), env=env)
    assert cluster.wait_done(job) == "COMPLETED", cluster.output(job)
    job_env = dict(
        item.split("=", 1)
        for item in (cluster.work / f"hostile-env-{job}").read_text().split("\0")
        if "=" in item
    )
    assert job_env["qa_QRMI_LEDGER_NOTE"] == "admin"
    assert job_env["emu_QRMI_LOCAL_STATE_DIR"] == str(lab.emulators["emu"])
    assert job_env["qa_QRMI_LEDGER_DIR"] == str(lab.ledger)
    assert "injected" not in job_env
    events = lab.ledger_events("qa", job)
    assert [event for event, _ in events] == ["acquire", "release"]
    assert list(root_only.iterdir()) == []
    assert requests == []
    assert lab.leftover_state() == []


def test_a_user_cannot_ask_for_fewer_than_one_license(lab: Lab) -> None:
    job = lab.cluster.sbatch("--qpu=qb", "--licenses=qb:0", "--hold", "--wrap", "true")
    try:
        assert lab.cluster.job(job)["Licenses"] == "qb:1"
    finally:
        lab.cluster.run(["scancel", str(job)])


def test_a_job_without_qpu_cannot_use_one_in_a_step(lab: Lab) -> None:
    job = lab.cluster.sbatch("--wrap", "srun --qpu=qb true; echo rc=$?")
    assert lab.cluster.wait_done(job) == "COMPLETED"
    output = lab.cluster.output(job)
    assert f"job {job} holds no license for QPU qb" in output, output
    assert "submit with sbatch --qpu=qb" in output and "rc=1" in output
    assert lab.ledger_events("qb", job) == []
    assert lab.leftover_state() == []


def test_a_user_cannot_drop_the_qpu_license_of_a_pending_job(lab: Lab) -> None:
    job = lab.cluster.sbatch("--qpu=qb", "--hold", "--wrap", "true")
    try:
        lab.cluster.as_user(["scontrol", "update", f"job={job}", "licenses=emu2:1"])
        assert lab.cluster.job(job)["Licenses"] == "emu2:1,qb:1"
        lab.cluster.as_user(["scontrol", "update", f"job={job}", "licenses=qb:0"])
        assert lab.cluster.job(job)["Licenses"] == "qb:1"
        lab.cluster.run(["scontrol", "update", f"job={job}", "licenses=emu2:1"])  # root may
        assert lab.cluster.job(job)["Licenses"] == "emu2:1"
    finally:
        lab.cluster.run(["scancel", str(job)])
