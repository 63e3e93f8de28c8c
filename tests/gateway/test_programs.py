"""Programs written for direct mode run unchanged in gateway mode: the job's environment holds
only the gateway URL, the job token and the reference's non-secret variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qrmi.backends.gateway import GatewayBackend
from qrmi.config import Config, ResourceDef
from qrmi.gateway.testing import LocalGateway
from qrmi.job import QRMIService
from qrmi.models import ResourceType
from qrmi.registry import BUILTIN_BACKENDS
from qrmi.resource import QuantumResource
from qrmi.testing.ibm_quantum_system import QuantumSystemFake

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("type_string", sorted(BUILTIN_BACKENDS))
def test_every_type_routes_through_the_gateway(type_string: str) -> None:
    environ = {"QRMI_GATEWAY_URL": "http://127.0.0.1:9", "qpu_QRMI_GATEWAY_TOKEN": "t"}

    qpu = QuantumResource("qpu", type_string, environ=environ)

    assert isinstance(qpu.backend, GatewayBackend)
    assert qpu.resource_type() == ResourceType.from_string(type_string)


def test_without_a_token_the_vendor_backend_is_used() -> None:
    qpu = QuantumResource("qpu", "local-emulator", environ={"QRMI_GATEWAY_URL": "http://h:1"})

    assert not isinstance(qpu.backend, GatewayBackend)


@pytest.fixture(scope="module")
def ibm_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A job on an IBM Quantum System (fake) in gateway mode: its environment variables."""
    fake = QuantumSystemFake().start()
    rdef = ResourceDef("ibm_perth", fake.resource_type, False, dict(fake.settings))
    directory = tmp_path_factory.mktemp("gateway")
    with LocalGateway(Config(resource_map={"ibm_perth": rdef}), directory) as gateway:
        _, variables = gateway.open_job("601", qpus=["ibm_perth"])
        secrets = [v for k, v in fake.settings.items() if "KEY" in k or "SECRET" in k]
        assert secrets and not any(s in v for s in secrets for v in variables.values())
        yield variables
    fake.stop()


def _job_env(variables: dict[str, str], tmp_path: Path) -> dict[str, str]:
    keep = ("PATH", "PYTHONDONTWRITEBYTECODE", "LANG")
    env = {k: v for k, v in os.environ.items() if k in keep}
    # No config file reachable: everything the program knows comes from the job's variables.
    return {**env, "HOME": str(tmp_path), "QRMI_CONFIG_FILE": str(tmp_path / "none"), **variables}


def _run(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_bell_example_runs_unchanged(ibm_job: dict[str, str], tmp_path: Path) -> None:
    done = _run(
        [sys.executable, str(EXAMPLES / "bell_sampler.py")], _job_env(ibm_job, tmp_path), tmp_path
    )

    assert done.returncode == 0, done.stderr
    assert "resource: ibm_perth (ibm-quantum-system)" in done.stdout
    assert "counts:" in done.stdout


@pytest.mark.parametrize("command", ["qrmi run", "task_runner"])
def test_the_command_line_tools_run_unchanged(
    ibm_job: dict[str, str], tmp_path: Path, command: str
) -> None:
    program = [str(Path(sys.executable).parent / command.split()[0]), *command.split()[1:]]
    done = _run(
        [*program, "ibm_perth", str(EXAMPLES / "inputs" / "bell_sampler.json")],
        _job_env(ibm_job, tmp_path),
        tmp_path,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["__type__"] == "PrimitiveResult"


def test_qrmi_service_lists_the_jobs_resources(ibm_job: dict[str, str]) -> None:
    resources = QRMIService(environ=ibm_job).resources()

    assert [r.resource_id() for r in resources] == ["ibm_perth"]
    assert isinstance(resources[0].backend, GatewayBackend)


def test_the_pulser_connection_runs_through_the_gateway(tmp_path: Path) -> None:
    pytest.importorskip("pulser")
    from pulser.backend.qpu import QPUBackend
    from pulser.devices import AnalogDevice
    from pulser.pulse import Pulse
    from pulser.sequence import Sequence

    from qrmi.pulser import PulserQRMIConnection
    from qrmi.testing.pasqal_cloud import PasqalCloudFake

    register = AnalogDevice.pre_calibrated_layouts[0].define_register(0, 1)
    sequence: Sequence[Any] = Sequence(register, AnalogDevice)
    sequence.declare_channel("rydberg", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(200, 2.0, 0.0, 0.0), "rydberg")
    with PasqalCloudFake(seed=1) as fake:
        rdef = ResourceDef("EMU_FREE", "pasqal-cloud", False, fake.settings(HOME=str(tmp_path)))
        config = Config(resource_map={"EMU_FREE": rdef})
        with LocalGateway(config, tmp_path / "gw") as gateway:
            _, variables = gateway.open_job("602", qpus=["EMU_FREE"])
            qpu = QuantumResource("EMU_FREE", "pasqal-cloud", environ=variables)
            connection = PulserQRMIConnection(qpu, timeout=60)

            results = QPUBackend(sequence, connection=connection).run(
                job_params=[{"runs": 30}], wait=True
            )

            assert sum(results.results[0].final_bitstrings.values()) == 30
