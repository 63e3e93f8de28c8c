"""The QRMI gateway against direct mode, side by side on the same IBM Quantum System fake.

Direct: ``QuantumResource`` with the vendor settings, in this process. Gateway: a ``qrmi
gateway`` process (its own Python, as deployed) serving the same fake; a job is opened on it
with root's MUNGE credential (a private ``munged``), and the client is a ``QuantumResource``
with only the gateway URL and the job token. Measured, alternating rounds:

* per-call latency of ``is_accessible``, ``status`` and ``task_status`` (of a running task:
  direct mode answers a finished one from its cache, without any request);
* time to result of a short task (about 10 ms of server-side work): ``task_start``, wait
  (direct: the backend's adaptive polling; gateway: the long-poll) and ``task_result``;
* throughput of ``task_status`` with 64 concurrent clients (4 processes x 16 threads), on
  loopback (CPU-bound: on a small machine the gateway's extra hop costs CPU the clients and
  the fake share) and with 100 ms added to every vendor request (a cloud API's latency),
  through a gateway of one process and through one of ``WORKERS`` worker processes;
* the gateway's resident memory with 1000 live job tokens (jobs opened and left running).

    .venv/bin/python benchmarks/bench_gateway.py [--quick]

Needs root and ``munged`` (``apt install munge``) for the job starts; otherwise it says so.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import FAKE_BACKEND, Context, ibm_fake, result, row, standalone
from _stats import alternating, time_call

NAME = "gateway"
TITLE = "QRMI gateway vs direct mode on the IBM Quantum System fake"
CALLS = ("is_accessible", "status", "task_status")
BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; bit[2] meas; rz(pi/2) $0; sx $0; rz(pi/2) $0; '
    "cx $0, $1; meas[0] = measure $0; meas[1] = measure $1;"
)
CLIENT_PROCESSES, THREADS_PER_PROCESS = 4, 16
#: Latency added to every request to the fake for the second throughput run (a cloud API's).
VENDOR_LATENCY = 0.1
#: Worker processes of the second gateway (``qrmi gateway --workers``): one per core, up to 4.
WORKERS = max(2, min(4, os.cpu_count() or 1))


def short_task(seconds: float = 0.01) -> Any:
    """A Bell sampler holding the fake QPU ``seconds`` (10 ms by default)."""
    from qrmi.models import Payload

    params = {
        "pubs": [[BELL, None, 100]],
        "version": 2,
        "options": {"emulator": {"min_duration_seconds": seconds}},
    }
    return Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler")


def run(ctx: Context) -> dict[str, object]:
    from qrmi.testing.munge import munge_available

    if os.geteuid() != 0 or not munge_available():
        return result(NAME, TITLE, method="", status="skipped", reason="needs root and munged")
    rounds, per_round, tasks = (3, 10, 3) if ctx.quick else (20, 20, 10)
    with (
        ibm_fake(ctx, lanes=3) as (fake, _),  # a running task per side in the throughput runs
        _gateway(ctx, fake.settings) as (gateway, environ),
        _gateway(ctx, fake.settings, workers=WORKERS) as (_, environ_workers),
    ):
        from qrmi.resource import QuantumResource

        sides = {
            "direct": lambda: QuantumResource.from_config(
                FAKE_BACKEND, "ibm-quantum-system", fake.settings
            ),
            "gateway": lambda: QuantumResource(FAKE_BACKEND, "ibm-quantum-system", environ=environ),
        }
        qpus = {side: make() for side, make in sides.items()}
        calls = _calls(qpus, rounds, per_round)
        ttr = _time_to_result(qpus, rounds, tasks)
        seconds = 2.0 if ctx.quick else 10.0
        gateways = {"gateway": environ, "workers": environ_workers}
        throughput = _throughput(gateways, fake.settings, seconds)
        fake.faults.latency(VENDOR_LATENCY)  # every vendor request now takes 100 ms more
        throughput_slow = _throughput(gateways, fake.settings, seconds)
        fake.faults.reset()
        memory = _memory(gateway, fake.settings, 100 if ctx.quick else 1000, ctx)
    rows = [
        row(f"`{call}()`", calls[call]["gateway"], calls[call]["direct"], "direct mode")
        for call in CALLS
    ]
    rows.append(row("time to result, 10 ms task", ttr["gateway"], ttr["direct"], "direct mode"))
    clients = CLIENT_PROCESSES * THREADS_PER_PROCESS
    for label, rates in (
        (f"`task_status` calls/s, {clients} clients", throughput),
        (f"`task_status` calls/s, {clients} clients, vendor +100 ms", throughput_slow),
    ):
        for side, suffix in (("gateway", ""), ("workers", f", gateway with {WORKERS} workers")):
            rows.append(
                row(
                    label + suffix,
                    [rates[side]],
                    [rates["direct"]],
                    "direct mode",
                    unit="1/s",
                    higher_is_better=True,
                )
            )
    return result(
        NAME,
        TITLE,
        method=(
            f"{rounds} alternating rounds of {per_round} calls per call and side, and "
            f"{tasks} short tasks per round and side; throughput: "
            f"{CLIENT_PROCESSES} processes x {THREADS_PER_PROCESS} threads calling task_status "
            "for a fixed time, each side in turn. Gateway as a separate process on loopback, "
            "without TLS; fake and direct client in this process."
        ),
        rows=rows,
        extra={"gateway_memory": memory},
    )


def _calls(qpus: dict[str, Any], rounds: int, per_round: int) -> dict[str, dict[str, list[float]]]:
    # task_status of a Running task: direct mode answers a final one from its own cache.
    running = {}
    for side, qpu in qpus.items():  # one after the other: the first also warms the fake up
        qpu.task_wait(qpu.task_start(short_task()), 60)
        running[side] = qpu.task_start(short_task(600))
    samples: dict[str, dict[str, list[float]]] = {call: {} for call in CALLS}
    for order in alternating(rounds, list(qpus)):
        for side in order:
            qpu = qpus[side]
            for call in CALLS:
                args = (running[side],) if call == "task_status" else ()
                method = getattr(qpu, call)
                samples[call].setdefault(side, []).extend(
                    time_call(lambda m=method, a=args: m(*a)) for _ in range(per_round)
                )
    for side, qpu in qpus.items():
        qpu.task_stop(running[side])
    return samples


def _time_to_result(qpus: dict[str, Any], rounds: int, tasks: int) -> dict[str, list[float]]:
    def once(qpu: Any) -> None:
        task = qpu.task_start(short_task())
        qpu.task_wait(task, 60)
        qpu.task_result(task)

    for qpu in qpus.values():  # warm-up
        once(qpu)
    samples: dict[str, list[float]] = {}
    for order in alternating(rounds, list(qpus)):
        for side in order:
            samples.setdefault(side, []).extend(
                time_call(lambda q=qpus[side]: once(q)) for _ in range(tasks)
            )
    return samples


def _throughput(
    gateways: dict[str, dict[str, str]], settings: dict[str, str], seconds: float
) -> dict[str, float]:
    """Calls/s of direct mode and of each gateway (its name -> its job's variables)."""
    task_ids = {}  # Running tasks (see _calls)
    environs = {"direct": {}, **gateways}
    qpus = {side: _make(side, environ, settings) for side, environ in environs.items()}
    for side, qpu in qpus.items():
        task_ids[side] = qpu.task_start(short_task(600))
    rates = {}
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        for side, environ in environs.items():
            ready = manager.Barrier(CLIENT_PROCESSES)  # all clients start calling together
            job = (side, environ, settings, task_ids[side], ready, seconds)
            with concurrent.futures.ProcessPoolExecutor(
                CLIENT_PROCESSES, mp_context=context
            ) as pool:
                rates[side] = sum(pool.map(_status_loop, [job] * CLIENT_PROCESSES))
    for side, qpu in qpus.items():
        qpu.task_stop(task_ids[side])
    return rates


def _make(side: str, environ: dict[str, str], settings: dict[str, str]) -> Any:
    from qrmi.resource import QuantumResource

    if side == "direct":
        return QuantumResource.from_config(FAKE_BACKEND, "ibm-quantum-system", settings)
    return QuantumResource(FAKE_BACKEND, "ibm-quantum-system", environ=environ)


def _status_loop(args: tuple[str, dict[str, str], dict[str, str], str, Any, float]) -> float:
    """``task_status`` calls per second of one client process's threads."""
    side, environ, settings, task_id, ready, seconds = args
    qpu = _make(side, environ, settings)
    qpu.task_status(task_id)
    ready.wait()
    started = time.time()
    stop_at = started + seconds
    counts = [0] * THREADS_PER_PROCESS

    def worker(index: int) -> None:
        while time.time() < stop_at:
            qpu.task_status(task_id)
            counts[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS_PER_PROCESS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.time() - started)


def _memory(gateway: Any, settings: dict[str, str], jobs: int, ctx: Context) -> dict[str, Any]:
    from qrmi.gateway.client import start_job

    before = _rss_kib(gateway["pid"])
    for index in range(jobs):
        start_job(
            gateway["url"], str(900000 + index), 1000, [FAKE_BACKEND], 3600,
            munge_socket=gateway["munge"],
        )  # fmt: skip
    after = _rss_kib(gateway["pid"])
    ctx.log(f"gateway RSS {before} KiB -> {after} KiB with {jobs} more live jobs")
    return {"jobs": jobs, "rss_before_kib": before, "rss_after_kib": after}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def _gateway(
    ctx: Context, settings: dict[str, str], *, workers: int = 1
) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    from qrmi.gateway.client import start_job
    from qrmi.testing.munge import MungeDaemon

    workdir = ctx.scratch(f"gateway-{workers}")
    config = workdir / "qrmi_config.json"
    resource = {"name": FAKE_BACKEND, "type": "ibm-quantum-system", "environment": settings}
    config.write_text(json.dumps({"resources": [resource]}))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with MungeDaemon() as munge, (workdir / "gateway.log").open("w") as log:
        command = [
            sys.executable, "-m", "qrmi.cli", "gateway", "--config", str(config),
            "--listen", f"127.0.0.1:{port}", "--store", str(workdir / "gateway.db"),
            "--munge-socket", munge.socket, "--log-level", "WARNING", "--workers", str(workers),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            _wait_up(url, process)
            _, environ = start_job(url, "1", 1000, [FAKE_BACKEND], 3600, munge_socket=munge.socket)
            yield {"url": url, "pid": process.pid, "munge": munge.socket}, environ
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def _wait_up(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/v1/health").status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("the gateway did not start; see gateway.log")


def main(argv: list[str] | None = None) -> int:
    return standalone(run, argv)


if __name__ == "__main__":
    sys.exit(main())
