"""Soak test: hundreds of ``--qpu`` jobs through a live Slurm while the vendor misbehaves.

It starts a throwaway Slurm cluster on 127.0.0.1 (``qrmi.testing.slurm_cluster``), the IBM
Quantum System fake (with its IAM and moto S3) and two local emulators, plus the ledger QPU of
the Slurm tests, with one or two licenses per QPU. Then it submits jobs as the unprivileged user,
each running a small sampler through ``task_runner``, with a fate drawn by a seeded RNG:

=============  ===========================================================  ==============
fate           what the job does                                            expected state
=============  ===========================================================  ==============
normal         runs the task, exits 0                                       COMPLETED
exit1          runs the task, then the script exits 1                       FAILED
cancel         a long task; ``scancel`` 0-5 s after submission or after     CANCELLED
               the job started running
timeout        a long task under ``--time=1``                               TIMEOUT
inaccessible   asks for ``ibm_brisbane`` while that QPU is offline          FAILED
=============  ===========================================================  ==============

Meanwhile the fake injects faults (5xx bursts, 429, 423 reservations, latency, dropped
connections, expired IAM tokens). At the end it checks that every job ended as its fate
implies, that every acquisition was released exactly once (backend side and helper side), that
no task is left running on a backend, that every completed task's result is readable, that no
node was drained and no license is still in use. It prints a summary table and exits 1 when a
check failed (2 when the cluster cannot run here: it needs root and Debian's Slurm packages).

    sudo .venv/bin/python benchmarks/soak.py --short            # ~35 jobs, < 4 minutes
    sudo .venv/bin/python benchmarks/soak.py --jobs 250 --seed 7 --report soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FAKEQPU = REPO / "tests" / "slurm" / "fakeqpu"
# ISA for fake_perth (IBM's services and their fakes refuse other circuits).
BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; bit[2] c; rz(pi/2) $0; sx $0; rz(pi/2) $0; '
    "cx $0, $1; c[0] = measure $0; c[1] = measure $1;"
)
SHOTS = 64
EMULATORS = ("emu", "emu2")
IBM = ("ibm_perth", "ibm_brisbane")
FLAKY = "ibm_brisbane"  # offline during the first half of the run
LICENSES = {"emu": 2, "emu2": 1, "ibm_perth": 2, "ibm_brisbane": 1, "ledger": 1}
EXPECTED = {
    "normal": "COMPLETED",
    "exit1": "FAILED",
    "cancel": "CANCELLED",
    "timeout": "TIMEOUT",
    "inaccessible": "FAILED",
}
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
LONG_TASK_SECONDS = 600.0  # a cancel/timeout task never ends on its own during the run
EXIT_UNAVAILABLE = 2


# ----- the plan -----------------------------------------------------------------------------


@dataclass
class JobSpec:
    """One job to submit: its fate, QPUs (the first one runs the task) and timing knobs."""

    index: int
    fate: str
    qpus: list[str]
    task_seconds: float
    cancel_after: float = 0.0
    cancel_running: bool = False
    job_id: int | None = None
    submitted_at: float = 0.0
    running_at: float = 0.0
    state_at_cancel: str = ""
    final_state: str = ""

    @property
    def expected(self) -> str:
        return EXPECTED[self.fate]

    @property
    def task_qpu(self) -> str:
        return next(q for q in self.qpus if q != "ledger")


def make_plan(rng: random.Random, jobs: int) -> list[JobSpec]:
    """``jobs`` specs: the first half sends only 'inaccessible' jobs to the flaky QPU, the
    second half only working ones (it is back online by then); time limits are spread out."""
    timeouts = max(2, round(jobs * 0.03))
    timeout_at = {round(i * jobs / (timeouts + 1)) for i in range(timeouts)}
    plan, timeout_rank = [], 0
    for index in range(jobs):
        first_half = index < jobs // 2
        if index in timeout_at:
            fate = "timeout"
            timeout_rank += 1
        else:
            fate = rng.choices(
                ["normal", "exit1", "cancel", "inaccessible"], weights=[50, 15, 20, 15]
            )[0]
            if fate == "inaccessible" and not first_half:
                fate = "normal"
        plan.append(_spec(rng, index, fate, first_half, timeout_rank))
    return plan


def _spec(
    rng: random.Random, index: int, fate: str, first_half: bool, timeout_rank: int
) -> JobSpec:
    if fate == "inaccessible":
        qpus = ["ledger", FLAKY] if rng.random() < 0.4 else [FLAKY]
    elif fate == "timeout":
        # alternate between the QPUs with two licenses: the other license stays free
        qpus = ["emu" if timeout_rank % 2 else "ibm_perth"]
    else:
        pool = ["emu", "emu2", "ibm_perth"] + ([] if first_half else [FLAKY])
        qpus = [rng.choice(pool)]
        extra = rng.random()
        if extra < 0.2:
            qpus.append("ledger")
        elif extra < 0.3:
            qpus.append(rng.choice([q for q in EMULATORS if q != qpus[0]] or ["emu"]))
    long_task = fate in ("cancel", "timeout")
    return JobSpec(
        index=index,
        fate=fate,
        qpus=list(dict.fromkeys(qpus)),
        task_seconds=LONG_TASK_SECONDS if long_task else round(rng.uniform(0.2, 2.5), 2),
        cancel_after=round(rng.uniform(0.0, 5.0), 2) if fate == "cancel" else 0.0,
        cancel_running=fate == "cancel" and rng.random() < 0.6,
    )


# ----- faults -------------------------------------------------------------------------------


@dataclass
class FaultSchedule:
    """Arms one fault on the IBM fake every few seconds (all within the client's retry budget)."""

    fake: Any
    rng: random.Random
    next_at: float = 0.0
    injected: Counter[str] = field(default_factory=Counter)
    undo: list[tuple[float, Callable[[], None]]] = field(default_factory=list)

    def tick(self, now: float) -> None:
        for item in [u for u in self.undo if u[0] <= now]:
            self.undo.remove(item)
            item[1]()
        if now < self.next_at:
            return
        self.next_at = now + self.rng.uniform(2.0, 6.0)
        kind = self.rng.choice(["5xx", "429", "423", "latency", "drop", "token-expiry"])
        self._arm(kind, now)
        self.injected[kind] += 1

    def _arm(self, kind: str, now: float) -> None:
        faults = self.fake.faults
        # a burst nobody consumed yet must not add up with this one beyond the client's
        # max_attempts (6): one counted fault at a time
        faults.reset()
        if kind == "5xx":
            faults.fail(self.rng.choice([500, 502, 503]), times=self.rng.randint(2, 4))
        elif kind == "429":
            faults.throttle(429, seconds=2.0, retry_after=0.5)
        elif kind == "423":
            self.fake.reserve("ibm_perth")
            self.undo.append((now + 3.0, lambda: self.fake.reserve("ibm_perth", False)))
        elif kind == "latency":
            faults.latency(0.3, times=20)
        elif kind == "drop":
            faults.drop_connections(times=2)
        else:
            self.fake.expire_tokens()

    def stop(self) -> None:
        for _, undo in self.undo:
            undo()
        self.undo.clear()
        self.fake.faults.reset()


# ----- the stack: fakes and cluster ---------------------------------------------------------


def _soak_cluster_class() -> Any:
    from qrmi.testing.slurm_cluster import SlurmCluster

    class SoakCluster(SlurmCluster):
        """The test cluster, tuned for many short jobs."""

        OVERRIDES = {
            # finished jobs stay visible to scontrol until the checks (there is no slurmdbd)
            "MinJobAge": "3600",
            "SchedulerParameters": "bf_interval=1,sched_interval=1,bf_continue,"
            "default_queue_depth=1000,bf_max_job_test=1000",
            # time for task_runner to cancel its task between SIGTERM and SIGKILL
            "KillWait": "10",
        }

        def _slurm_conf(self, licenses_line: str) -> str:
            lines = []
            for line in super()._slurm_conf(licenses_line).splitlines():
                key = line.split("=", 1)[0]
                lines.append(f"{key}={self.OVERRIDES[key]}" if key in self.OVERRIDES else line)
            return "\n".join(lines) + "\n"

    return SoakCluster


@dataclass
class Stack:
    """Everything the soak runs against."""

    cluster: Any
    fake: Any
    ledger: Path
    emulators: dict[str, Path]
    jobs_dir: Path
    inputs_dir: Path


def _config(fake: Any, root: Path, ledger: Path) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for seed, name in enumerate(EMULATORS, start=7):
        env = {
            "QRMI_LOCAL_STATE_DIR": str(root / "shared" / name),
            "QRMI_LOCAL_SEED": str(seed),
            "QRMI_LOCAL_IDLE_SECONDS": "30",
        }
        resources.append({"name": name, "type": "local-emulator", "environment": env})
    for name in IBM:
        entry = fake.resource_config(name)
        entry["environment"]["QRMI_IBM_QS_THROTTLE_WAIT_SECONDS"] = "60"
        resources.append(entry)
    resources.append(
        {"name": "ledger", "type": "test-ledger", "environment": {"QRMI_LEDGER_DIR": str(ledger)}}
    )
    for resource in resources:
        resource["environment"]["QRMI_SLURM_LICENSE_COUNT"] = str(LICENSES[resource["name"]])
    return {"resources": resources}


def _license_counts(config: dict[str, Any], path: Path) -> dict[str, int]:
    """The counts ``qrmi slurm licenses`` derives from the config (as an admin would)."""
    from qrmi.slurm import admin

    if str(FAKEQPU) not in sys.path:
        sys.path.append(str(FAKEQPU))  # its dist-info registers the 'test-ledger' type
    path.write_text(json.dumps(config))
    return admin.license_counts(admin.load_config(path))


@contextmanager
def running_stack() -> Iterator[Stack]:
    """Start the IBM fake and the cluster; stop both (by PID) and delete the cluster dir."""
    from qrmi.testing.ibm_quantum_system import QuantumSystemFake

    root = Path(tempfile.mkdtemp(prefix="qrmi-soak-", dir="/tmp"))
    ledger = root / "ledger"
    ledger.mkdir()
    ledger.chmod(0o755)
    fake = QuantumSystemFake(devices={name: "fake_perth" for name in IBM}, lanes=2).start()
    cluster = None
    try:
        config = _config(fake, root, ledger)
        counts = _license_counts(config, root / "licenses-check.json")
        cluster = _soak_cluster_class()(
            config, root=root, site_dirs=[FAKEQPU], helper_timeout=30, licenses=counts
        )
        cluster.start()
        stack = _prepare(cluster, fake, ledger)
        yield stack
    finally:
        if cluster is not None:
            cluster.cleanup()
        else:
            shutil.rmtree(root, ignore_errors=True)
        fake.stop()


def _prepare(cluster: Any, fake: Any, ledger: Path) -> Stack:
    emulators = {name: cluster.shared / name for name in EMULATORS}
    code = (
        "import sys; from qrmi.backends.local_emulator.store import TaskStore; "
        "TaskStore(sys.argv[1]).leases()"
    )
    for state_dir in emulators.values():
        # the job user owns the store, so the root helper's writes keep the files the user's
        result = cluster.as_user([str(cluster.python), "-c", code, str(state_dir)])
        if result.returncode != 0:
            raise RuntimeError(f"cannot create the emulator store {state_dir}: {result.stderr}")
    jobs_dir = cluster.work / "soak"
    inputs_dir = cluster.shared / "soak-inputs"
    for directory in (jobs_dir, inputs_dir):
        directory.mkdir()
        shutil.chown(directory, cluster.user, cluster.user)
    (inputs_dir / "job.sh").write_text(_job_script(cluster.python))
    (inputs_dir / "job.sh").chmod(0o755)
    return Stack(cluster, fake, ledger, emulators, jobs_dir, inputs_dir)


def _job_script(python: Path) -> str:
    return f"""#!/bin/bash
# soak job: task_runner QPU INPUT, then exit with the fate's code
{python} -m qrmi.tools.task_runner "$1" "$2" "result-$SLURM_JOB_ID.json"
rc=$?
echo "task_runner rc=$rc"
[ "$rc" -ne 0 ] && exit "$rc"
exit "$3"
"""


# ----- running the jobs -------------------------------------------------------------------


def _payload(seconds: float) -> str:
    return json.dumps(
        {
            "program_id": "sampler",
            "parameters": {
                "pubs": [[BELL, None, SHOTS]],
                "version": 2,
                "options": {"emulator": {"min_duration_seconds": seconds}},
            },
        }
    )


def submit(stack: Stack, spec: JobSpec) -> None:
    """Write the job's input and submit it as the test user."""
    inputs = stack.inputs_dir / f"input-{spec.index}.json"
    inputs.write_text(_payload(spec.task_seconds))
    inputs.chmod(0o644)
    time_limit = "1" if spec.fate == "timeout" else "10"
    spec.job_id = stack.cluster.sbatch(
        f"--qpu={','.join(spec.qpus)}",
        f"--time={time_limit}",
        f"--job-name=soak-{spec.fate}",
        f"--chdir={stack.jobs_dir}",
        "--output=slurm-%j.out",
        "--no-requeue",
        str(stack.inputs_dir / "job.sh"),
        spec.task_qpu,
        str(inputs),
        "1" if spec.fate == "exit1" else "0",
    )
    spec.submitted_at = time.monotonic()


def job_states(stack: Stack) -> dict[int, str]:
    """JobState of every job slurmctld knows (finished ones too, within MinJobAge)."""
    result = stack.cluster.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], timeout=60)
    states = {}
    for line in result.stdout.splitlines():
        job, _, state = line.partition(" ")
        if job.isdigit():
            states[int(job)] = state.strip()
    return states


@dataclass
class Driver:
    """Submits the plan with a bounded number of unfinished jobs, cancels on schedule, arms
    faults, and brings the flaky QPU back at half time."""

    stack: Stack
    plan: list[JobSpec]
    faults: FaultSchedule
    max_in_flight: int
    deadline: float
    log: Callable[[str], None]
    states: dict[int, str] = field(default_factory=dict)

    def run(self) -> None:
        self.stack.fake.set_status(FLAKY, "offline", "in maintenance (soak)")
        pending = list(self.plan)
        while pending or self.unfinished():
            self._check_deadline()
            now = time.monotonic()
            self.faults.tick(now)
            self._cancel_due(now)
            if pending and self._room():
                if pending[0].index == len(self.plan) // 2:
                    self._flaky_back_online()
                submit(self.stack, pending.pop(0))
                continue
            self._poll()
            time.sleep(0.3)
        self.faults.stop()

    def _room(self) -> bool:
        """Jobs waiting for a busy QPU's license do not hold back the others (up to a cap)."""
        unfinished = self.unfinished()
        waiting = [s for s in unfinished if self.states.get(s.job_id or -1) == "PENDING"]
        return (
            len(unfinished) - len(waiting) < self.max_in_flight
            and len(unfinished) < 4 * self.max_in_flight
        )

    def unfinished(self) -> list[JobSpec]:
        return [s for s in self.plan if s.job_id is not None and not s.final_state]

    def _poll(self) -> None:
        self.states = job_states(self.stack)
        now = time.monotonic()
        for spec in self.unfinished():
            state = self.states.get(spec.job_id or -1, "")
            if state == "RUNNING" and not spec.running_at:
                spec.running_at = now
            if state in FINAL_STATES:
                spec.final_state = state
                self.log(f"job {spec.job_id} ({spec.fate} on {','.join(spec.qpus)}): {state}")

    def _cancel_due(self, now: float) -> None:
        for spec in self.unfinished():
            if spec.fate != "cancel" or spec.state_at_cancel:
                continue
            since = spec.running_at if spec.cancel_running else spec.submitted_at
            if since and now - since >= spec.cancel_after:
                state = self.stack.cluster.job(spec.job_id).get("JobState", "")
                spec.state_at_cancel = state or "unknown"
                self.stack.cluster.as_user(["scancel", str(spec.job_id)])

    def _flaky_back_online(self) -> None:
        """Wait for every 'inaccessible' job to end, then put the QPU back online."""
        self.log(f"half time: waiting for the jobs sent to offline {FLAKY}")
        while any(s.fate == "inaccessible" for s in self.unfinished()):
            self._check_deadline()
            self.faults.tick(time.monotonic())
            self._cancel_due(time.monotonic())
            self._poll()
            time.sleep(0.3)
        self.stack.fake.set_status(FLAKY, "online")
        self.log(f"{FLAKY} is online again")

    def _check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            stuck = ", ".join(
                f"{s.job_id}:{self.states.get(s.job_id or -1)}" for s in self.unfinished()
            )
            raise TimeoutError(f"the soak's deadline passed with jobs unfinished: {stuck}")


# ----- checks -------------------------------------------------------------------------------


@dataclass
class Check:
    """One verdict of the summary."""

    name: str
    ok: bool
    detail: str


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return condition()


def check_states(stack: Stack, plan: list[JobSpec]) -> Check:
    wrong = []
    for spec in plan:
        fields = stack.cluster.job(spec.job_id)
        spec.final_state = fields.get("JobState", spec.final_state or "gone")
        if spec.final_state != spec.expected:
            reason = fields.get("Reason", "")
            wrong.append(f"{spec.job_id} {spec.fate}: {spec.final_state} ({reason})")
    return Check("job end states match their fates", not wrong, _first(wrong, f"{len(plan)} jobs"))


def helper_records(stack: Stack) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """``(acquired, released)``: QPUs per job from the slurmd logs' "ready" lines and the
    helper log's release lines (one list item per release)."""
    acquired: dict[int, list[str]] = {}
    for node in stack.cluster.nodes:
        for match in re.finditer(
            r"job (\d+) step batch: QPUs (\S+) ready", stack.cluster.log(node)
        ):
            acquired.setdefault(int(match[1]), []).extend(match[2].split(","))
    released: dict[int, list[str]] = {}
    log = stack.cluster.state_dir / "helper.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    for match in re.finditer(r"job (\d+): released (\S+) \(", text):
        released.setdefault(int(match[1]), []).extend(match[2].split(","))
    return acquired, released


def check_releases(stack: Stack, plan: list[JobSpec]) -> list[Check]:
    state_dir = stack.cluster.state_dir / "jobs"
    _wait_for(lambda: not list(state_dir.glob("*.json")), 90)  # releases run in the background
    left = sorted(p.name for p in state_dir.glob("*.json"))
    checks = [Check("no per-job helper state left", not left, _first(left, "none left"))]
    acquired, released = helper_records(stack)
    wrong = []
    for job in sorted(set(acquired) | set(released)):
        got, gave = sorted(acquired.get(job, [])), sorted(released.get(job, []))
        if got != gave:
            wrong.append(f"job {job}: acquired {got}, released {gave}")
    checks.append(
        Check(
            "helper: each acquisition released once",
            not wrong,
            _first(wrong, f"{sum(map(len, acquired.values()))} acquisitions"),
        )
    )
    checks.append(_check_emulator_leases(stack, acquired))
    checks.append(_check_ledger(stack))
    return checks


def _check_emulator_leases(stack: Stack, acquired: dict[int, list[str]]) -> Check:
    from qrmi.backends.local_emulator.store import TaskStore

    problems, total = [], 0
    for name, state_dir in stack.emulators.items():
        leases = TaskStore(state_dir).leases()
        total += len(leases)
        bad = [f"{name} {lease.token[:8]} x{lease.release_count}" for lease in leases]
        problems += [b for b, lease in zip(bad, leases, strict=True) if lease.release_count != 1]
        problems += [f"{name}: release of unknown token" for x in leases if x.acquired_at is None]
        ready = sum(names.count(name) for names in acquired.values())
        if ready > len(leases):
            problems.append(f"{name}: {ready} jobs ready but {len(leases)} leases")
    return Check(
        "emulators: every lease released exactly once",
        not problems,
        _first(problems, f"{total} leases"),
    )


def _check_ledger(stack: Stack) -> Check:
    path = stack.ledger / "ledger.log"
    events = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    acquires = Counter(e[1] for e in events if e[0] == "acquire")
    releases = Counter(e[1] for e in events if e[0] == "release")
    bad = [
        f"{t[:8]} acquired {acquires[t]} released {releases[t]}"
        for t in set(acquires) | set(releases)
        if acquires[t] != 1 or releases[t] != 1
    ]
    return Check(
        "ledger: every lease released exactly once", not bad, _first(bad, f"{len(acquires)} leases")
    )


def check_tasks(stack: Stack, plan: list[JobSpec]) -> list[Check]:
    from qrmi.backends.local_emulator.store import QUEUED, RUNNING, TaskStore

    owner = {task: spec for spec in plan for task in _task_ids(stack, spec)}

    def job_of(task_id: str) -> str:
        spec = owner.get(task_id)
        return f"job {spec.job_id} {spec.fate}/{spec.state_at_cancel}" if spec else "no job"

    live = []
    for name, state_dir in stack.emulators.items():
        live += [
            f"{name} {t.id[:8]} {t.status} ({job_of(t.id)})"
            for t in TaskStore(state_dir).tasks()
            if t.status in (QUEUED, RUNNING)
        ]
    with stack.fake.state.lock:
        jobs = list(stack.fake.state.jobs.values())
    live += [
        f"{job.backend} {job.id[:8]} Running ({job_of(job.id)})"
        for job in jobs
        if job.status == "Running"
    ]
    return [Check("no task left running on a backend", not live, _first(live, "none"))]


def _task_ids(stack: Stack, spec: JobSpec) -> list[str]:
    out = stack.jobs_dir / f"slurm-{spec.job_id}.out"
    text = out.read_text(errors="replace") if out.exists() else ""
    return re.findall(r"Task ID: (\S+)", text)


def check_results(stack: Stack, plan: list[JobSpec], config: dict[str, Any]) -> Check:
    """Every task of a job that ran it to the end: the result file has the counts, and the
    same result reads back through QRMI by task id."""
    from qrmi.resource import QuantumResource

    settings = {r["name"]: (r["type"], r["environment"]) for r in config["resources"]}
    bad, read = [], 0
    for spec in plan:
        if spec.fate not in ("normal", "exit1") or spec.final_state != spec.expected:
            continue
        ids = _task_ids(stack, spec)
        path = stack.jobs_dir / f"result-{spec.job_id}.json"
        if len(ids) != 1 or not path.exists():
            bad.append(f"job {spec.job_id}: task ids {ids}, result file {path.exists()}")
            continue
        kind, environment = settings[spec.task_qpu]
        resource = QuantumResource(spec.task_qpu, kind, config=environment, environ={})
        again = resource.task_result(ids[0]).value
        for label, text in (("file", path.read_text()), ("read back", again)):
            shots = _shots(text)
            if shots != SHOTS:
                bad.append(f"job {spec.job_id} {label}: {shots} shots in the counts")
        read += 1
    return Check("completed tasks' results readable", not bad, _first(bad, f"{read} results"))


def _shots(text: str) -> int:
    from qiskit_ibm_runtime import RuntimeDecoder

    try:
        result = json.loads(text, cls=RuntimeDecoder)
        return sum(result[0].data.c.get_counts().values())
    except Exception:  # a broken result is what this check is looking for
        return -1


def check_cluster(stack: Stack) -> list[Check]:
    nodes = stack.cluster.run(["sinfo", "-h", "-N", "-o", "%N %t %E"]).stdout.splitlines()
    bad_nodes = [n for n in nodes if not re.match(r"\S+ (idle|mix|alloc)\b", n)]
    used = stack.cluster.run(["scontrol", "-o", "show", "licenses"]).stdout.splitlines()
    busy = [line for line in used if not re.search(r"\bUsed=0\b", line)]
    return [
        Check("no node drained or down", not bad_nodes, _first(bad_nodes, f"{len(nodes)} nodes")),
        Check("no license left in use", not busy, _first(busy, f"{len(used)} licenses")),
    ]


def _first(items: list[str], fallback: str, limit: int = 5) -> str:
    if not items:
        return fallback
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


# ----- summary ------------------------------------------------------------------------------


def machine(stack: Stack) -> dict[str, str]:
    import qrmi

    slurm = stack.cluster.run(["sinfo", "-V"]).stdout.strip()
    return {
        "host": platform.node(),
        "cpus": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pyqrmi": qrmi.__version__,
        "slurm": slurm,
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def summarize(plan: list[JobSpec], checks: list[Check], extra: dict[str, Any]) -> dict[str, Any]:
    per_qpu: Counter[str] = Counter(q for spec in plan for q in spec.qpus)
    return {
        **extra,
        "jobs": len(plan),
        "fates": dict(Counter(s.fate for s in plan)),
        "states": dict(Counter(s.final_state for s in plan)),
        "cancelled_while": dict(Counter(s.state_at_cancel for s in plan if s.fate == "cancel")),
        "per_qpu": dict(sorted(per_qpu.items())),
        "checks": [asdict(c) for c in checks],
        "passed": all(c.ok for c in checks),
    }


def print_summary(summary: dict[str, Any]) -> None:
    print(
        f"\nSoak: {summary['jobs']} jobs, seed {summary['seed']}, "
        f"{summary['wall_seconds']:.0f} s wall time"
    )
    for key in ("fates", "states", "cancelled_while", "per_qpu", "faults"):
        print(f"  {key:16} " + ", ".join(f"{k}={v}" for k, v in summary[key].items()))
    print("  machine          " + ", ".join(f"{k}={v}" for k, v in summary["machine"].items()))
    width = max(len(c["name"]) for c in summary["checks"])
    print()
    for check in summary["checks"]:
        verdict = "ok  " if check["ok"] else "FAIL"
        print(f"  {verdict} {check['name']:{width}}  {check['detail']}")
    print(f"\n{'PASSED' if summary['passed'] else 'FAILED'}")


# ----- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="~35 jobs for CI (< 4 minutes)")
    parser.add_argument("--jobs", type=int, default=None, help="number of jobs (default 250)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fates and faults")
    parser.add_argument("--report", type=Path, default=None, help="write the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no line per job")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak and return its summary (raises ClusterUnavailable when it cannot run)."""
    jobs = args.jobs or (36 if args.short else 250)
    rng = random.Random(args.seed)
    plan = make_plan(rng, jobs)
    started = time.monotonic()
    log = (lambda _: None) if args.quiet else (lambda text: print(text, flush=True))
    with running_stack() as stack:
        config = json.loads(stack.cluster.config_path.read_text())
        faults = FaultSchedule(stack.fake, random.Random(args.seed + 1))
        deadline = started + 300 + jobs * (3 if args.short else 6)
        driver = Driver(stack, plan, faults, max_in_flight=8, deadline=deadline, log=log)
        driver.run()
        _wait_for(lambda: "comp" not in stack.cluster.run(["sinfo", "-h", "-o", "%t"]).stdout, 60)
        checks = [check_states(stack, plan)]
        checks += check_releases(stack, plan)
        checks += check_tasks(stack, plan)
        checks.append(check_results(stack, plan, config))
        checks += check_cluster(stack)
        extra = {
            "seed": args.seed,
            "short": bool(args.short),
            "wall_seconds": round(time.monotonic() - started, 1),
            "faults": dict(faults.injected),
            "licenses": LICENSES,
            "machine": machine(stack),
        }
        return summarize(plan, checks, extra)


def main(argv: list[str] | None = None) -> int:
    """Run the soak, print the summary and return 0 (all checks passed), 1 or 2 (cannot run)."""
    from qrmi.testing.slurm_cluster import ClusterUnavailable

    args = parse_args(argv)
    try:
        summary = run(args)
    except ClusterUnavailable as exc:
        print(f"soak: the Slurm test cluster cannot run here: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print_summary(summary)
    if args.report:
        args.report.write_text(json.dumps(summary, indent=1))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
