"""Load test of QRMI gateway replicas: throughput and p99 latency per replica count.

Starts a private PostgreSQL (Debian's, on 127.0.0.1, fsync on as deployed) and a private
``munged``, then for each setup, in turn:

* ``sqlite x1``: one ``qrmi gateway`` process on a SQLite store (the embedded default);
* ``postgresql x1``: one on a PostgreSQL store;
* ``postgresql x2``: two replicas on the same PostgreSQL database.

Each setup opens one job per client process (MUNGE start, as the Slurm helper does), starts a
long task per job on the local emulator and lets ``PROCESSES x THREADS`` clients (each a
``QuantumResource`` in gateway mode) call ``task_status`` on it in a loop: every call
authenticates the job's token, checks task ownership in the store and asks the emulator.
Clients list both replicas, half of them in each order, so the load spreads and a client
would fail over. Every loop is bounded by time and by a count of calls; traffic goes to
127.0.0.1 only.

    .venv/bin/python benchmarks/bench_replicas.py                 # 4 x 64 clients, 10 s each
    .venv/bin/python benchmarks/bench_replicas.py --quick         # 4 x 32 clients, 3 s each
    .venv/bin/python benchmarks/bench_replicas.py --processes 6 --threads 50 --seconds 20

Prints a Markdown table (calls/s, p50, p99 per setup, and the load average) and, with
``--json FILE``, writes the raw numbers. Needs root (job starts) with ``munged`` and PostgreSQL
installed (``scripts/install-system-deps``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

#: Upper bound of calls of one client, whatever the duration.
MAX_CALLS_PER_CLIENT = 20_000
LONG_TASK_SECONDS = 600.0
CIRCUIT = 'OPENQASM 3.0; include "stdgates.inc"; bit[1] c; qubit[1] q; c[0] = measure q[0];'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer clients, 3 s per setup")
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--threads", type=int, help="clients per process (default 64; quick 32)")
    parser.add_argument("--seconds", type=float, help="load per setup (default 10; quick 3)")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    args = parser.parse_args(argv)
    threads = args.threads or (32 if args.quick else 64)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    if not 1 <= args.processes <= 16 or not 1 <= threads <= 256 or not 0 < seconds <= 120:
        parser.error("bounds: 1-16 processes, 1-256 threads, 0-120 seconds")
    problem = _missing_prerequisite()
    if problem:
        print(f"bench_replicas: skipped: {problem}", file=sys.stderr)
        return 0
    results = []
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qrmi-bench-")))
        munge_socket, postgres = stack.enter_context(_services(scratch))
        for store, count in (("sqlite", 1), ("postgresql", 1), ("postgresql", 2)):
            location = (
                str(scratch / f"gateway-{count}.db")
                if store == "sqlite"
                else postgres.create_database(f"bench_{count}")
            )
            load = _load_one_setup(
                scratch, location, count, munge_socket, args.processes, threads, seconds
            )
            results.append({"store": store, "replicas": count, **load})
            print(_line(results[-1]), file=sys.stderr)
    print(_table(results, args.processes, threads, seconds))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "load": os.getloadavg()}, indent=1))
    return 0


def _missing_prerequisite() -> str:
    from qrmi.testing.munge import munge_available
    from qrmi.testing.postgres import postgres_bindir

    if os.geteuid() != 0:
        return "job starts need root (a MUNGE credential of uid 0)"
    if not munge_available():
        return "munged is not installed (apt install munge)"
    if postgres_bindir() is None:
        return "PostgreSQL is not installed (apt install postgresql)"
    return ""


@contextmanager
def _services(scratch: Path) -> Iterator[tuple[str, Any]]:
    from qrmi.backends.local_emulator.worker import stop_worker
    from qrmi.testing.munge import MungeDaemon
    from qrmi.testing.postgres import PostgresServer

    with MungeDaemon() as munge, PostgresServer(fsync=True) as postgres:
        try:
            yield munge.socket, postgres
        finally:
            stop_worker(scratch / "emulator")


def _config(scratch: Path) -> Path:
    path = scratch / "qrmi_config.json"
    emulator = {
        "QRMI_LOCAL_STATE_DIR": str(scratch / "emulator"),
        "QRMI_LOCAL_LANES": "1",
        "QRMI_LOCAL_IDLE_SECONDS": "30",
    }
    path.write_text(
        json.dumps(
            {"resources": [{"name": "emu", "type": "local-emulator", "environment": emulator}]}
        )
    )
    path.chmod(0o600)
    return path


def _load_one_setup(
    scratch: Path,
    store: str,
    replicas: int,
    munge_socket: str,
    processes: int,
    threads: int,
    seconds: float,
) -> dict[str, Any]:
    from qrmi.gateway.client import finish_job, start_job
    from qrmi.gateway.testing import GatewayProcess

    config = _config(scratch)
    with ExitStack() as stack:
        urls = []
        for index in range(replicas):
            replica = GatewayProcess(
                config,
                store=store,
                log=scratch / f"gateway-{replicas}-{index}.log",
                munge_socket=munge_socket,
                args=["--log-level", "WARNING"],
            )
            urls.append(stack.enter_context(replica).url)
        jobs = []
        for number in range(processes):
            job_id = str(8000 + number)  # each setup has a store of its own
            order = urls[number % len(urls) :] + urls[: number % len(urls)]
            _, variables = start_job(
                ",".join(order), job_id, 1000, ["emu"], 3600, munge_socket=munge_socket
            )
            jobs.append((job_id, variables))
        try:
            return _drive(jobs, threads, seconds)
        finally:
            for job_id, _ in jobs:
                finish_job(",".join(urls), job_id, munge_socket=munge_socket)


def _drive(jobs: list[tuple[str, dict[str, str]]], threads: int, seconds: float) -> dict[str, Any]:
    """Every client process at once; the calls/s and latency percentiles of all their calls."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        ready = manager.Barrier(len(jobs))
        with context.Pool(len(jobs)) as pool:
            answers = pool.map(
                _client_process, [(variables, threads, seconds, ready) for _, variables in jobs]
            )
    latencies = sorted(x for answer in answers for x in answer["latencies"])
    elapsed = max(answer["elapsed"] for answer in answers)
    errors = sum(answer["errors"] for answer in answers)
    if not latencies:
        raise RuntimeError(f"no call succeeded ({errors} errors)")
    return {
        "clients": len(jobs) * threads,
        "calls": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "calls_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _client_process(args: tuple[dict[str, str], int, float, Any]) -> dict[str, Any]:
    """``threads`` clients of one job calling ``task_status`` until the time or count is up."""
    from qrmi.models import Payload
    from qrmi.resource import QuantumResource

    variables, threads, seconds, ready = args
    first = QuantumResource("emu", "local-emulator", environ=variables)
    params = {
        "pubs": [[CIRCUIT, None, 10]],
        "version": 2,
        "options": {"emulator": {"min_duration_seconds": LONG_TASK_SECONDS}},
    }
    task = first.task_start(Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler"))
    clients = [QuantumResource("emu", "local-emulator", environ=variables) for _ in range(threads)]
    for client in clients:
        client.task_status(task)  # connections open before the clock starts
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    ready.wait()
    started = time.perf_counter()
    stop_at = started + seconds

    def loop(index: int) -> None:
        client, mine = clients[index], latencies[index]
        while len(mine) < MAX_CALLS_PER_CLIENT and time.perf_counter() < stop_at:
            before = time.perf_counter()
            try:
                client.task_status(task)
            except Exception:  # counted, not fatal: the report says how many
                errors[index] += 1
                continue
            mine.append(time.perf_counter() - before)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return {
        "latencies": [x for mine in latencies for x in mine],
        "errors": sum(errors),
        "elapsed": elapsed,
    }


def _line(result: dict[str, Any]) -> str:
    return (
        f"{result['store']} x{result['replicas']}: {result['calls_per_second']} calls/s, "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, {result['errors']} errors, "
        f"load {result['load_average']}"
    )


def _table(results: list[dict[str, Any]], processes: int, threads: int, seconds: float) -> str:
    lines = [
        f"{processes} client processes x {threads} threads = {processes * threads} clients, "
        f"{seconds:g} s per setup, task_status of a running task; CPU cores: {os.cpu_count()}",
        "",
        "| store | replicas | calls/s | p50 ms | p99 ms | errors | load average (1, 5, 15 min) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        load = ", ".join(f"{x:.2f}" for x in r["load_average"])
        lines.append(
            f"| {r['store']} | {r['replicas']} | {r['calls_per_second']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['errors']} | {load} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
