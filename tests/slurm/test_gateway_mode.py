"""End to end: QPUs in gateway mode on the live cluster, with a real ``qrmi gateway`` process.

The gateway (on 127.0.0.1, proving root with the cluster's own munged) holds the emulator QPU
``emu2`` (with a secret-looking setting) and, as ``qb``, an IBM Quantum System (our fake, with
its API key and S3 keys); the compute nodes' entries for them hold only the gateway's URL and
the munged socket. The other QPUs of the lab stay in direct mode.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from qrmi.backends.local_emulator.store import TaskStore
from qrmi.backends.local_emulator.worker import stop_worker
from qrmi.gateway.client import admin_request
from qrmi.testing.ibm_quantum_system import QuantumSystemFake
from qrmi.testing.slurm_cluster import find_checkout

from .lab import Lab

pytestmark = pytest.mark.slurm

#: A secret in the gateway's config: it must never reach a job, its output or the helper log.
GATEWAY_SECRET = "gw-side-apikey-5d1e9b"


@dataclass
class Gateway:
    url: str
    munge_socket: str
    emulator_dir: Path
    ibm_secrets: list[str]
    command: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def tasks_of(self, job_id: int) -> list[str]:
        tasks = admin_request("GET", self.url, "/v1/admin/tasks", munge_socket=self.munge_socket)
        return [t["task_id"] for t in tasks if t["job_id"] == str(job_id)]

    def jobs(self) -> dict[str, dict[str, object]]:
        """The gateway's jobs (archived runs of requeued jobs as ``<id>~<n>``) by id."""
        jobs = admin_request("GET", self.url, "/v1/admin/jobs", munge_socket=self.munge_socket)
        return {str(job["job_id"]): job for job in jobs}

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        _wait_healthy(self.url, self.process, self.log)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _set_emu2(lab: Lab, environment: dict[str, str], name: str = "emu2", kind: str = "") -> None:
    """Give QPU ``name`` of the compute nodes' config this ``environment`` (and type)."""
    path = lab.cluster.config_path
    config = json.loads(path.read_text())
    for resource in config["resources"]:
        if resource["name"] == name:
            resource["environment"] = environment
            resource["type"] = kind or resource["type"]
    path.write_text(json.dumps(config, indent=2))


@pytest.fixture(scope="module")
def gateway(lab: Lab) -> Iterator[Gateway]:
    home = lab.cluster.root / "gateway"
    home.mkdir(mode=0o700)
    emulator_dir = home / "emu2"
    config = home / "qrmi_config.json"
    environment = {"QRMI_LOCAL_STATE_DIR": str(emulator_dir), "QRMI_LOCAL_IDLE_SECONDS": "5"}
    environment["QRMI_IBM_QS_IAM_APIKEY"] = GATEWAY_SECRET
    entry = {"name": "emu2", "type": "local-emulator", "environment": environment}
    ibm = QuantumSystemFake(devices={"qb": "fake_perth"}).start()
    ibm_entry = {"name": "qb", "type": ibm.resource_type, "environment": ibm.settings}
    config.write_text(json.dumps({"resources": [entry, ibm_entry]}))
    secrets = [v for k, v in ibm.settings.items() if "KEY" in k]
    munge_socket = str(lab.cluster.root / "munge" / "munge.socket")
    url = f"http://127.0.0.1:{_free_port()}"
    command = [sys.executable, "-c", "from qrmi.cli import main; main()", "gateway"]
    command += ["--config", str(config), "--store", str(home / "gateway.db")]
    command += ["--listen", url[len("http://") :], "--munge-socket", munge_socket]
    original = lab.cluster.config_path.read_text()
    served = Gateway(
        url, munge_socket, emulator_dir, [*secrets, GATEWAY_SECRET], command, home / "gateway.log"
    )
    try:
        served.start()
        via_gateway = {"QRMI_GATEWAY_URL": url, "QRMI_GATEWAY_MUNGE_SOCKET": munge_socket}
        _set_emu2(lab, via_gateway)
        _set_emu2(lab, via_gateway, "qb", ibm.resource_type)
        yield served
    finally:
        lab.cluster.config_path.write_text(original)
        served.stop()
        stop_worker(emulator_dir)
        ibm.stop()


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


def _script(lab: Lab, name: str, body: str) -> str:
    path = lab.cluster.work / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def _assert_clean(lab: Lab) -> None:
    assert lab.leftover_state() == []
    states = lab.cluster.run(["sinfo", "-h", "-N", "-o", "%N %t"]).stdout
    assert "drain" not in states and "drng" not in states, states


#: A job program: start a Bell sampler held Running for a while, print its id, wait.
LONG_TASK = """
import json, sys, time
from qrmi.models import Payload
from qrmi.resource import QuantumResource
qpu = QuantumResource("emu2", "local-emulator")
for other in sys.argv[1:]:  # another job's task: not found
    try:
        qpu.task_status(other)
    except Exception as exc:
        print("other task:", type(exc).__name__, flush=True)
bell = 'OPENQASM 3.0; include "stdgates.inc"; bit[2] c; qubit[2] q; h q[0]; c = measure q;'
params = {"pubs": [[bell, None, 10]], "version": 2,
          "options": {"emulator": {"min_duration_seconds": 300}}}
task = qpu.task_start(Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler"))
print("task", task, flush=True)
time.sleep(600)
"""


def test_a_gateway_job_runs_a_sampler_and_holds_no_secret(lab: Lab, gateway: Gateway) -> None:
    python, shared = lab.cluster.python, lab.cluster.shared
    script = _script(
        lab,
        "gw-sampler.sh",
        f"""
env > env-$SLURM_JOB_ID.txt
echo "$emu2_QRMI_GATEWAY_TOKEN" > token-$SLURM_JOB_ID.txt
{python} -m qrmi.tools.task_runner emu2 {shared / "bell_sampler.json"} out-$SLURM_JOB_ID.json \
  || exit 1
{python} -c "
import json, sys
from qiskit_ibm_runtime import RuntimeDecoder
result = json.load(open(sys.argv[1]), cls=RuntimeDecoder)
print('counts', sorted(result[0].data.c.get_counts().items()))
" out-$SLURM_JOB_ID.json
""",
    )
    job = lab.cluster.sbatch("--qpu=emu2", script)
    assert lab.cluster.wait_done(job, timeout=120) == "COMPLETED", lab.cluster.output(job)
    output = lab.cluster.output(job)
    counts = re.search(r"counts \[\('00', (\d+)\), \('11', (\d+)\)\]", output)
    assert counts, output
    environment = (lab.cluster.work / f"env-{job}.txt").read_text()
    assert f"QRMI_GATEWAY_URL={gateway.url}" in environment
    assert "QRMI_LOCAL_STATE_DIR" not in environment and "QRMI_JOB_TASK_LOG" not in environment
    helper_log = (lab.cluster.state_dir / "helper.log").read_text()
    logs = "".join(lab.cluster.log(node) for node in lab.cluster.nodes)
    assert GATEWAY_SECRET not in output + environment + helper_log + logs
    token = (lab.cluster.work / f"token-{job}.txt").read_text().strip()
    assert token and token not in helper_log + logs
    copied = httpx.get(
        f"{gateway.url}/v1/qpus/emu2/status", headers={"Authorization": f"Bearer {token}"}
    )
    assert copied.status_code == 401  # the job ended: its token is revoked
    assert len(gateway.tasks_of(job)) == 1
    _assert_clean(lab)


def test_a_scancelled_jobs_task_is_cancelled_and_others_tasks_are_not_found(
    lab: Lab, gateway: Gateway
) -> None:
    program = lab.cluster.work / "gw-long.py"
    program.write_text(LONG_TASK)
    first = lab.cluster.sbatch("--qpu=emu2", "--wrap", f"{lab.cluster.python} {program}")
    _wait_for_output(lab, first, "task ")
    lab.cluster.run(["scancel", str(first)])
    assert lab.cluster.wait_done(first, timeout=60) == "CANCELLED"
    (task,) = gateway.tasks_of(first)
    assert TaskStore(gateway.emulator_dir).status(task) == "Cancelled"

    second = lab.cluster.sbatch(
        "--qpu=emu2", "--wrap", f"{lab.cluster.python} {program} {task}", "--time=1"
    )
    _wait_for_output(lab, second, "task ")
    assert "other task: TaskNotFoundError" in lab.cluster.output(second)
    lab.cluster.run(["scancel", str(second)])
    lab.cluster.wait_done(second, timeout=60)
    _assert_clean(lab)


def _wait_for_output(lab: Lab, job: int, start: str) -> None:
    """Wait until a line of the job's output starts with ``start``."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if any(line.startswith(start) for line in lab.cluster.output(job).splitlines()):
            return
        time.sleep(0.2)
    pytest.fail(f"job {job} never printed {start!r}: {lab.cluster.output(job)}")


def test_a_gateway_that_is_down_fails_the_job_at_start_without_a_drain(
    lab: Lab, gateway: Gateway
) -> None:
    down = f"http://127.0.0.1:{_free_port()}"
    _set_emu2(lab, {"QRMI_GATEWAY_URL": down, "QRMI_GATEWAY_MUNGE_SOCKET": gateway.munge_socket})
    try:
        job = lab.cluster.sbatch("--qpu=emu2", "--wrap", "echo should-not-run")
        assert lab.cluster.wait_done(job, timeout=60) == "FAILED"
    finally:
        up = {"QRMI_GATEWAY_URL": gateway.url, "QRMI_GATEWAY_MUNGE_SOCKET": gateway.munge_socket}
        _set_emu2(lab, up)
    output = lab.cluster.output(job)
    assert f"the QRMI gateway at {down} did not answer" in output, output
    assert "should-not-run" not in output
    _assert_clean(lab)


def test_an_ibm_job_runs_the_bell_example_unchanged_and_holds_no_vendor_secret(
    lab: Lab, gateway: Gateway
) -> None:
    example = lab.cluster.work / "bell_sampler.py"
    example.write_text((find_checkout() / "examples" / "bell_sampler.py").read_text())
    command = f"env > env-$SLURM_JOB_ID.txt; {lab.cluster.python} {example}"
    job = lab.cluster.sbatch("--qpu=qb", "--wrap", command)
    assert lab.cluster.wait_done(job, timeout=180) == "COMPLETED", lab.cluster.output(job)
    output = lab.cluster.output(job)
    assert "resource: qb (ibm-quantum-system)" in output and "counts:" in output, output
    environment = (lab.cluster.work / f"env-{job}.txt").read_text()
    helper_log = (lab.cluster.state_dir / "helper.log").read_text()
    logs = "".join(lab.cluster.log(node) for node in lab.cluster.nodes)
    seen = output + environment + helper_log + logs
    assert [secret for secret in gateway.ibm_secrets if secret in seen] == []
    assert "QRMI_IBM_QS" not in environment
    _assert_clean(lab)


def _released_once(gateway: Gateway, leases: list[str]) -> None:
    counts = {
        lease.token: lease.release_count for lease in TaskStore(gateway.emulator_dir).leases()
    }
    assert {lease: counts.get(lease) for lease in leases} == {lease: 1 for lease in leases}


def _wait_for_file(path: Path, job: int, lab: Lab) -> str:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.2)
    pytest.fail(f"job {job} never wrote {path.name}: {lab.cluster.output(job)}")


def test_a_requeued_job_completes_its_second_run_and_its_first_runs_token_is_refused(
    lab: Lab, gateway: Gateway
) -> None:
    python, shared = lab.cluster.python, lab.cluster.shared
    script = _script(
        lab,
        "gw-requeue.sh",
        f"""
run=${{SLURM_RESTART_COUNT:-0}}
echo "$emu2_QRMI_GATEWAY_TOKEN" > token-$SLURM_JOB_ID-$run.txt
echo "$emu2_QRMI_JOB_ACQUISITION_TOKEN" > lease-$SLURM_JOB_ID-$run.txt
[ "$run" = 0 ] && sleep 300
{python} -m qrmi.tools.task_runner emu2 {shared / "bell_sampler.json"} out-$SLURM_JOB_ID.json \\
  && echo "run $run sampled"
""",
    )
    job = lab.cluster.sbatch("--qpu=emu2", "--requeue", script)
    work = lab.cluster.work
    first_token = _wait_for_file(work / f"token-{job}-0.txt", job, lab)

    requeued = lab.cluster.run(["scontrol", "requeue", str(job)])
    assert requeued.returncode == 0, requeued.stderr

    assert lab.cluster.wait_done(job, timeout=300) == "COMPLETED", lab.cluster.output(job)
    assert "run 1 sampled" in lab.cluster.output(job), lab.cluster.output(job)
    second_token = (work / f"token-{job}-1.txt").read_text().strip()
    status = f"{gateway.url}/v1/qpus/emu2/status"
    for token in (first_token, second_token):  # the runs ended: both tokens are refused
        assert httpx.get(status, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    jobs = gateway.jobs()
    assert jobs[f"{job}~1"]["state"] == jobs[str(job)]["state"] == "finished"
    leases = [(work / f"lease-{job}-{run}.txt").read_text().strip() for run in (0, 1)]
    assert leases[0] != leases[1]
    _released_once(gateway, leases)
    _assert_clean(lab)


#: A job program: six short sampler tasks in a row through the gateway, one line per task.
TASK_LOOP = """
import json
from qrmi.models import Payload, TaskStatus
from qrmi.resource import QuantumResource
qpu = QuantumResource("emu2", "local-emulator")
bell = 'OPENQASM 3.0; include "stdgates.inc"; bit[2] c; qubit[2] q; h q[0]; c = measure q;'
for number in range(6):
    params = {"pubs": [[bell, None, 10]], "version": 2,
              "options": {"emulator": {"min_duration_seconds": 1}}}
    task = qpu.task_start(Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler"))
    assert qpu.task_wait(task, 120) == TaskStatus.Completed
    qpu.task_result(task)
    print("task", number, "done", flush=True)
"""


def test_a_gateway_killed_and_restarted_mid_job_loses_nothing(lab: Lab, gateway: Gateway) -> None:
    program = lab.cluster.work / "gw-loop.py"
    program.write_text(TASK_LOOP)
    command = 'echo "$emu2_QRMI_JOB_ACQUISITION_TOKEN" > lease-$SLURM_JOB_ID.txt; '
    command += f"{lab.cluster.python} {program}"
    job = lab.cluster.sbatch("--qpu=emu2", "--wrap", command)
    _wait_for_output(lab, job, "task 1 done")

    gateway.stop(signal.SIGKILL)  # kill -9 mid-job, then start again on the same store
    gateway.start()

    assert lab.cluster.wait_done(job, timeout=300) == "COMPLETED", lab.cluster.output(job)
    assert "task 5 done" in lab.cluster.output(job)
    assert gateway.jobs()[str(job)]["state"] == "finished"
    lease = (lab.cluster.work / f"lease-{job}.txt").read_text().strip()
    _released_once(gateway, [lease])
    _assert_clean(lab)


def _demo_job(lab: Lab, script: str, qpu: str) -> tuple[int, str]:
    """Submit ``examples/jobs/<script>`` as it is, on ``qpu``; wait; return (job, output)."""
    demo = lab.cluster.work / "demo"
    demo.mkdir(exist_ok=True)
    examples = find_checkout() / "examples"
    for name in ("bell_sampler.py", "estimator.py", f"jobs/{script}"):
        (demo / Path(name).name).write_text((examples / name).read_text())
    (demo / script).chmod(0o755)
    env = {"PYQRMI_VENV": str(lab.cluster.python.parent.parent), "PYQRMI_EXAMPLES": str(demo)}
    job = lab.cluster.sbatch(f"--qpu={qpu}", str(demo / script), env=env)
    state = lab.cluster.wait_done(job, timeout=300)
    output = lab.cluster.output(job)
    assert state == "COMPLETED", output
    return job, output


def test_the_demo_job_scripts_run_unchanged_in_gateway_and_direct_mode(
    lab: Lab, gateway: Gateway
) -> None:
    _, sampled = _demo_job(lab, "run_sampler.sh", "qb")  # an IBM QPU behind the gateway
    assert "resource: qb (ibm-quantum-system)" in sampled and "counts: {" in sampled, sampled
    _, estimated = _demo_job(lab, "run_estimator.sh", "emu2")  # the gateway's emulator
    assert "resource: emu2 (local-emulator)" in estimated, estimated
    values = dict(re.findall(r"^<(\w+)> = ([+-]\d\.\d+)", estimated, re.MULTILINE))
    assert abs(float(values["ZZ"]) - 1.0) <= 0.1 and abs(float(values["YY"]) + 1.0) <= 0.1
    _, direct = _demo_job(lab, "run_sampler.sh", "emu")  # the same script in direct mode
    assert "resource: emu (local-emulator)" in direct and "counts: {" in direct, direct
    logs = "".join(lab.cluster.log(node) for node in lab.cluster.nodes)
    seen = sampled + estimated + (lab.cluster.state_dir / "helper.log").read_text() + logs
    assert [secret for secret in gateway.ibm_secrets if secret in seen] == []
    _assert_clean(lab)
