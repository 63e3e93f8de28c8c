"""``qrmi gateway`` as a process: JSON logs, TLS, slow clients, and ``kill -9`` mid-job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.conftest import QRMI, SECRET, GatewayProcess, bell, emulator_config, free_port
from qrmi.gateway.client import finish_job, start_job
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's")


@pytest.fixture
def config_file(tmp_path: Path, emulators: Path) -> Path:
    path = tmp_path / "qrmi_config.json"
    path.write_text(json.dumps(emulator_config(emulators)))
    path.chmod(0o600)
    return path


@pytest.fixture
def served(tmp_path: Path, config_file: Path, munge: MungeDaemon) -> Iterator[GatewayProcess]:
    port = free_port()
    args = [
        "--config", str(config_file),
        "--listen", f"127.0.0.1:{port}",
        "--store", str(tmp_path / "store" / "gateway.db"),
        "--munge-socket", munge.socket,
        "--body-timeout", "0.5",
    ]  # fmt: skip
    gateway = GatewayProcess(args, f"http://127.0.0.1:{port}", tmp_path / "gateway.log").start()
    try:
        yield gateway
    finally:
        gateway.stop(signal.SIGKILL)


def test_kill_9_and_restart_mid_job_loses_nothing(
    served: GatewayProcess, munge: MungeDaemon
) -> None:
    token, variables = start_job(served.url, "501", 1000, ["emu"], 3600, munge_socket=munge.socket)
    qpu = QuantumResource("emu", "local-emulator", environ=variables)
    task = qpu.task_start(bell(seconds=2))

    served.stop(signal.SIGKILL)
    served.start()

    assert qpu.task_wait(task, 60) == TaskStatus.Completed
    assert qpu.task_result(task).json()["__type__"] == "PrimitiveResult"
    assert finish_job(served.url, "501", munge_socket=munge.socket)["released"] == ["emu"]
    log = served.log.read_text()
    assert token not in log and SECRET not in log


def test_logs_are_json_lines_with_an_access_record(
    served: GatewayProcess, munge: MungeDaemon
) -> None:
    _, variables = start_job(served.url, "502", 1000, ["emu"], 3600, munge_socket=munge.socket)
    QuantumResource("emu", "local-emulator", environ=variables).status()

    assert served.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM once shut down
    records = [json.loads(line) for line in served.log.read_text().splitlines() if line]
    access = [r for r in records if r["logger"] == "qrmi.gateway.access"]
    assert {key: access[-1][key] for key in ("method", "path", "status", "job_id")} == {
        "method": "GET",
        "path": "/v1/qpus/emu/status",
        "status": 200,
        "job_id": "502",
    }


def test_a_client_that_stops_sending_its_body_gets_408(served: GatewayProcess) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    request = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):  # the gateway closes the connection after a 408
            answer += chunk

    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"RequestTimeout"' in answer


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_tls(tmp_path: Path, config_file: Path, munge: MungeDaemon, workers: str) -> None:
    cert, key = tmp_path / "gateway.crt", tmp_path / "gateway.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = free_port()
    args = [
        "--config", str(config_file), "--listen", f"127.0.0.1:{port}",
        "--store", str(tmp_path / "gateway.db"), "--munge-socket", munge.socket,
        "--tls-cert", str(cert), "--tls-key", str(key), "--workers", workers,
    ]  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(cert))
    gateway = GatewayProcess(args, url, tmp_path / "gateway.log", verify=context).start()
    try:
        _, variables = start_job(
            url, "503", 1000, ["emu"], 60, munge_socket=munge.socket, ca_file=str(cert)
        )
        variables["emu_QRMI_GATEWAY_CA_FILE"] = str(cert)

        assert QuantumResource("emu", "local-emulator", environ=variables).is_accessible()
    finally:
        gateway.stop(signal.SIGKILL)


def test_a_bad_config_is_refused_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "qrmi_config.json"
    bad.write_text('{"resources": [{"name": "x"}]}')

    done = subprocess.run(
        [*QRMI, "gateway", "--config", str(bad), "--store", str(tmp_path / "g.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert "required key 'type' is missing" in done.stderr


def test_stalled_clients_cannot_hold_more_than_the_concurrency_limit(
    tmp_path: Path, config_file: Path, munge: MungeDaemon
) -> None:
    port = free_port()
    args = [
        "--config", str(config_file), "--listen", f"127.0.0.1:{port}",
        "--store", str(tmp_path / "gateway.db"), "--munge-socket", munge.socket,
        "--limit-concurrency", "8",
    ]  # fmt: skip
    gateway = GatewayProcess(args, f"http://127.0.0.1:{port}", tmp_path / "gateway.log").start()
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(8)]
    try:
        for sock in stalled:
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: gw\r\n")  # headers never end

        refused = httpx.get(f"{gateway.url}/v1/health")

        assert refused.status_code == 503
    finally:
        for sock in stalled:
            sock.close()
        gateway.stop(signal.SIGKILL)
