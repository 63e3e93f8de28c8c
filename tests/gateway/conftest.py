"""Fixtures of the gateway tests: a private munged, a private PostgreSQL, and gateways over the
local emulator."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qrmi.backends.local_emulator.worker import stop_worker
from qrmi.gateway.testing import LocalGateway
from qrmi.models import Payload
from qrmi.testing.ibm_compute_service import ComputeServiceFake
from qrmi.testing.munge import MungeDaemon, MungeUnavailableError, munge_available
from qrmi.testing.postgres import PostgresServer, postgres_bindir

#: A value planted in the config as a vendor secret: it must never leave the gateway.
SECRET = "s3cr3t-APIKEY-do-not-leak-7f3a"

BELL = """OPENQASM 3.0;
include "stdgates.inc";
bit[2] c;
qubit[2] q;
h q[0];
cx q[0], q[1];
c[0] = measure q[0];
c[1] = measure q[1];
"""


def bell(seconds: float = 0.0, shots: int = 100) -> Payload:
    """A Bell sampler job for the emulator, held Running ``seconds`` of emulated QPU time."""
    params: dict[str, Any] = {"pubs": [[BELL, None, shots]], "version": 2}
    if seconds:
        params["options"] = {"emulator": {"min_duration_seconds": seconds}}
    return Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler")


def emulator_config(state_dir: Path, *, lanes: int = 1) -> dict[str, Any]:
    """Two QPUs (emulators) whose config also holds a secret-looking setting."""
    return {
        "resources": [
            {
                "name": name,
                "type": "local-emulator",
                "environment": {
                    "QRMI_LOCAL_STATE_DIR": str(state_dir / name),
                    "QRMI_LOCAL_LANES": str(lanes),
                    "QRMI_LOCAL_IDLE_SECONDS": "10",
                    "QRMI_IBM_QS_IAM_APIKEY": SECRET,
                },
            }
            for name in ("emu", "emu2")
        ]
    }


QRMI = [sys.executable, "-m", "qrmi.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GatewayProcess:
    """A ``qrmi gateway`` process (``args``); :meth:`start` waits until /v1/health answers."""

    def __init__(
        self, args: list[str], url: str, log: Path, verify: ssl.SSLContext | bool = True
    ) -> None:
        self.args, self.url, self.log, self.verify = args, url, log, verify
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*QRMI, "gateway", *self.args], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/v1/health", verify=self.verify).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"the gateway did not start: {self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(30)


@pytest.fixture(scope="session")
def munge() -> Iterator[MungeDaemon]:
    if not munge_available():
        pytest.skip("munged is not installed (apt install munge)")
    try:
        daemon = MungeDaemon().start()
    except MungeUnavailableError as exc:
        pytest.skip(f"munged cannot start: {exc}")
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL on a free port of 127.0.0.1 (skipped only when not installed)."""
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed (scripts/install-system-deps installs it as root)")
    server = PostgresServer(fsync=False).start()
    try:
        yield server
    finally:
        server.stop()


_databases = itertools.count()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A new, empty database on the session's PostgreSQL."""
    return postgres.create_database(f"gateway_{next(_databases)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a store lives, once for each database: a SQLite path, a PostgreSQL URL."""
    if request.param == "sqlite":
        return tmp_path / "gateway.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The emulators' state directory, shared by the session; their workers stop at the end."""
    state = tmp_path_factory.mktemp("emulators")
    try:
        yield state
    finally:
        for name in ("emu", "emu2"):
            stop_worker(state / name)


MakeGateway = Callable[..., LocalGateway]


@pytest.fixture
def gateway_store() -> str:
    """The store of the gateways :func:`make_gateway` makes: ``sqlite`` (a file of their own)
    here; a test module that redefines this fixture with both params runs on both stores."""
    return "sqlite"


@pytest.fixture
def make_gateway(
    tmp_path: Path,
    emulators: Path,
    munge: MungeDaemon,
    gateway_store: str,
    request: pytest.FixtureRequest,
) -> Iterator[MakeGateway]:
    started: list[LocalGateway] = []

    def make(**options: Any) -> LocalGateway:
        directory = tmp_path / f"gateway{len(started)}"
        if gateway_store == "postgresql":
            options.setdefault("store", request.getfixturevalue("postgres_url"))
        gateway = LocalGateway(
            emulator_config(emulators), directory, munge_socket=munge.socket, **options
        )
        started.append(gateway.start())
        return gateway

    try:
        yield make
    finally:
        for gateway in started:
            gateway.stop()


@pytest.fixture
def gateway(make_gateway: MakeGateway) -> LocalGateway:
    return make_gateway()


#: The IBM Quantum Compute Service QPU of :func:`qcs_gateway`.
QCS_QPU, QCS_TYPE = "ibm_perth", "ibm-quantum-compute-service"


@pytest.fixture
def qcs_gateway(
    tmp_path: Path, munge: MungeDaemon
) -> Iterator[tuple[LocalGateway, ComputeServiceFake]]:
    """A gateway serving one QPU of the IBM Quantum Compute Service fake (batch sessions by
    config; the fake takes non-ISA circuits such as :data:`BELL`)."""
    fake = ComputeServiceFake(check_isa=False).start()
    settings = {**fake.settings, "QRMI_IBM_QCS_SESSION_MODE": "batch"}
    config = {"resources": [{"name": QCS_QPU, "type": QCS_TYPE, "environment": settings}]}
    gateway = LocalGateway(config, tmp_path / "qcs-gateway", munge_socket=munge.socket).start()
    try:
        yield gateway, fake
    finally:
        gateway.stop()
        fake.close()
