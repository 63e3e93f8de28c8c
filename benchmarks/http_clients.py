"""Which HTTP client for ``qrmi.http``: the same GET with httpx, urllib3, ``http.client`` and
``qrmi._http_wire``, side by side, interleaved, against the IBM Quantum System fake.

The fake runs in a child process, so that this process's CPU time is the client's alone. Each
round runs ``BATCH`` back-to-back ``GET /v1/backends/ibm_perth`` (the request behind
``is_accessible()``) per client, rotating the order; the table gives the median wall time and
client CPU time per request, and the ratio of each to the wire's. Prints Markdown.

    .venv/bin/python benchmarks/http_clients.py [--rounds N]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from _stats import alternating

BATCH = 50

_SERVE = """
import json, sys
from qrmi.testing.ibm_quantum_system import QuantumSystemFake
fake = QuantumSystemFake(devices={"ibm_perth": "fake_perth"}, s3_own_process=True).start()
print(json.dumps(fake.settings), flush=True)
sys.stdin.read()
fake.stop()
"""


def clients(settings: dict[str, str]) -> dict[str, Callable[[], object]]:
    """One GET of the backend's status per client, each with its own kept-alive connection."""
    import httpx
    import urllib3

    from qrmi._http_wire import Wire
    from qrmi.backends._ibm_common import IamToken

    token = IamToken(
        settings["QRMI_IBM_QS_IAM_ENDPOINT"], settings["QRMI_IBM_QS_IAM_APIKEY"]
    ).token()
    base = settings["QRMI_IBM_QS_ENDPOINT"].rstrip("/")
    url = base + "/v1/backends/ibm_perth"
    headers = {
        "Accept": "application/json",
        "Service-CRN": settings["QRMI_IBM_QS_SERVICE_CRN"],
        "Authorization": f"Bearer {token}",
    }
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with_httpx = httpx.Client(headers=headers)
    pool = urllib3.HTTPConnectionPool(host, port, maxsize=1)
    connection = http.client.HTTPConnection(host, port)
    wire = Wire()

    def by_http_client() -> object:
        connection.request("GET", parts.path, headers=headers)
        return json.loads(connection.getresponse().read())

    return {
        "httpx 0.28 (Client.get)": lambda: with_httpx.get(url).json(),
        "urllib3 (HTTPConnectionPool)": lambda: json.loads(
            pool.request("GET", parts.path, headers=headers).data
        ),
        "http.client (one connection)": by_http_client,
        "qrmi._http_wire (chosen)": lambda: wire.send("GET", url, headers, None, 30.0).json(),
    }


def measure(todo: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict[str, float]]:
    wall: dict[str, list[float]] = {name: [] for name in todo}
    cpu: dict[str, list[float]] = {name: [] for name in todo}
    for call in todo.values():  # warm-up: connections, caches
        for _ in range(20):
            call()
    for order in alternating(rounds, list(todo)):
        for name in order:
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(BATCH):
                todo[name]()
            wall[name].append((time.perf_counter() - started) / BATCH)
            cpu[name].append((time.process_time() - cpu_started) / BATCH)
    return {
        name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name])}
        for name in todo
    }


def table(found: dict[str, dict[str, float]]) -> str:
    chosen = found["qrmi._http_wire (chosen)"]
    lines = [
        "| client | wall per GET | client CPU per GET | CPU vs the wire |",
        "| --- | --- | --- | --- |",
    ]
    for name, value in found.items():
        lines.append(
            f"| {name} | {value['wall'] * 1000:.3f} ms | {value['cpu'] * 1000:.3f} ms | "
            f"{value['cpu'] / chosen['cpu']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        settings = json.loads(server.stdout.readline())
        load = os.getloadavg()[0]
        found = measure(clients(settings), args.rounds)
        print(table(found))
        print(
            f"\n{args.rounds} rounds of {BATCH} GETs per client, order rotated each round; "
            f"load average (1 min) {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, "
            f"{os.cpu_count()} cores."
        )
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
