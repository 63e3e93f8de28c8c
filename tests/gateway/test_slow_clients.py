"""``qrmi gateway`` closes connections whose request headers do not arrive in time
(``--header-timeout``), and leaves requests whose headers arrived, and idle kept-alive
connections, alone. Raw sockets on 127.0.0.1 play the slow clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.conftest import GatewayProcess, bell, emulator_config, free_port
from qrmi.gateway.client import start_job
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's")

HEALTH = b"GET /v1/health HTTP/1.1\r\nHost: gw\r\n\r\n"


@pytest.fixture
def gateway(tmp_path: Path, emulators: Path, munge: MungeDaemon) -> Iterator[GatewayProcess]:
    config_file = tmp_path / "qrmi_config.json"
    config_file.write_text(json.dumps(emulator_config(emulators)))
    port = free_port()
    args = [
        "--config", str(config_file), "--listen", f"127.0.0.1:{port}",
        "--store", str(tmp_path / "gateway.db"), "--munge-socket", munge.socket,
        "--header-timeout", "1",
    ]  # fmt: skip
    served = GatewayProcess(args, f"http://127.0.0.1:{port}", tmp_path / "gateway.log").start()
    try:
        yield served
    finally:
        served.stop(signal.SIGKILL)


def _connect(gateway: GatewayProcess) -> socket.socket:
    port = int(gateway.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the gateway closed the connection (waits up to 0.1 s for it to say so)."""
    sock.settimeout(0.1)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer (head and Content-Length bytes of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or pytest.fail(f"the connection closed after {data!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536) or pytest.fail("the connection closed mid-answer")
    return head + b"\r\n\r\n" + body


def test_a_client_trickling_its_headers_is_cut_off(gateway: GatewayProcess) -> None:
    headers = b"GET /v1/health HTTP/1.1\r\nHost: gw\r\n" + b"X-Pad: slow\r\n" * 50
    sent = 0
    with _connect(gateway) as sock:
        for byte in headers:  # at most 600 bytes, ~0.1 s apart: the loop ends in ~60 s
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            if _closed_by_peer(sock):
                break

    assert sent < len(headers), "the gateway waited for every header byte of a slow client"


def test_a_client_that_connects_and_sends_nothing_is_cut_off(gateway: GatewayProcess) -> None:
    with _connect(gateway) as sock:
        sock.settimeout(30)  # the loop's bound: far above --header-timeout

        assert sock.recv(65536) == b""


def test_a_kept_alive_connection_idle_past_the_header_timeout_still_serves(
    gateway: GatewayProcess,
) -> None:
    with _connect(gateway) as sock:
        for _ in range(2):
            sock.sendall(HEALTH)
            sock.settimeout(30)
            answer = _read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            time.sleep(1.5)  # longer than --header-timeout, shorter than the keep-alive timeout


def test_a_long_poll_longer_than_the_header_timeout_is_answered(
    gateway: GatewayProcess, munge: MungeDaemon
) -> None:
    token, variables = start_job(gateway.url, "601", 1000, ["emu"], 600, munge_socket=munge.socket)
    task = QuantumResource("emu", "local-emulator", environ=variables).task_start(bell(seconds=5))

    answer = httpx.get(
        f"{gateway.url}/v1/qpus/emu/tasks/{task}/wait",
        params={"timeout": "2.5"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )

    assert answer.status_code == 200 and answer.json()["final"] is False
