"""The fakes against the vendors' own client libraries and the reference wheel.

Each client runs in its own virtual environment (made once per machine, see
``vendor_envs``); a test skips with the installer's reason when PyPI is unreachable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from vendor_envs import REPO, VendorEnvUnavailable, run, vendor_python

_TESTS = str(REPO / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

HERE = Path(__file__).resolve().parent
IBM_CLOUD_SDK_CORE = "ibm-cloud-sdk-core==3.28.0"
IQM_CLIENT = "iqm-client==36.0.0"


def _venv(requirement: str) -> Path:
    try:
        return vendor_python(requirement)
    except VendorEnvUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def sdk_core_python() -> Path:
    return _venv(IBM_CLOUD_SDK_CORE)


@pytest.fixture(scope="session")
def iqm_client_python() -> Path:
    return _venv(IQM_CLIENT)


@pytest.fixture(scope="session")
def reference_python() -> Path:
    """The reference wheel's interpreter (``benchmarks/.venv-ref``, made if missing)."""
    benchmarks = str(REPO / "benchmarks")
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)
    from _common import setup_reference

    reference = setup_reference(lambda message: None)
    if reference.python is None:
        pytest.skip(reference.reason)
    return reference.python


# ----- ibm-cloud-sdk-core ------------------------------------------------------------------


def test_ibm_cloud_sdk_core_authenticates_at_the_iam_fake(sdk_core_python: Path) -> None:
    from qrmi.testing.ibm_quantum_system import QuantumSystemFake

    with QuantumSystemFake(devices={"ibm_perth": "fake_perth"}) as fake:
        seen = json.loads(
            run(sdk_core_python, HERE / "iam_client.py", fake.iam.url, fake.apikey, "wrong-key")
        )
        backends = httpx.get(
            f"{fake.url}/v1/backends",
            headers={"Authorization": seen["authorization"], "Service-CRN": fake.crn},
        )

    assert seen["authorization"].startswith("Bearer ey") and seen["cached"] is True
    assert seen["refused"]["code"] == 400
    assert "API key could not be found" in seen["refused"]["message"]
    assert backends.status_code == 200


# ----- iqm-client --------------------------------------------------------------------------


def test_iqm_client_runs_its_normal_flow_on_the_iqm_fake(iqm_client_python: Path) -> None:
    from qrmi.testing.iqm_server import IQMServerFake

    with IQMServerFake(seed=3) as fake:
        seen = json.loads(
            run(iqm_client_python, HERE / "iqm_client_flow.py", fake.url, fake.alias, fake.token)
        )

    assert seen["healthy"] is True
    assert seen["qubits"] == seen["static_qubits"] == ["QB1", "QB2", "QB3", "QB4", "QB5"]
    assert seen["calibration_observations"] > 0 and seen["metric_observations"] > 0
    assert seen["status"].endswith("completed") and seen["tracker"] == "CircuitJobTracker"
    assert seen["keys"] == ["m"] and set(seen["counts"]) <= {"00", "11"}
    assert sum(seen["counts"].values()) == seen["shots_measured"] == 200
    assert seen["cancelled"].rsplit(".", 1)[-1] in ("cancelled", "processing", "completed")


# ----- the reference wheel as a client of every fake it has a backend for -----------------


def _ibm_quantum_system() -> tuple[Any, str, str, dict[str, Any], dict[str, str]]:
    from qrmi.testing.ibm_quantum_system import QuantumSystemFake

    fake = QuantumSystemFake(devices={"ibm_perth": "fake_perth"}).start()
    example = json.loads((REPO / "examples" / "inputs" / "bell_sampler.json").read_text())
    args = {"input": json.dumps(example["parameters"]), "program_id": "sampler"}
    return (
        fake,
        "ibm_perth",
        "IBMQuantumSystem",
        {"kind": "QiskitPrimitive", "args": args},
        (fake.settings),
    )


def _ibm_compute_service() -> tuple[Any, str, str, dict[str, Any], dict[str, str]]:
    from qrmi.testing.ibm_compute_service import ComputeServiceFake

    fake = ComputeServiceFake().start()
    example = json.loads((REPO / "examples" / "inputs" / "bell_sampler.json").read_text())
    args = {"input": json.dumps(example["parameters"]), "program_id": "sampler"}
    payload = {"kind": "QiskitPrimitive", "args": args}
    return fake, "ibm_perth", "IBMQuantumComputeService", payload, fake.settings


def _pasqal_cloud() -> tuple[Any, str, str, dict[str, Any], dict[str, str]]:
    from conformance.harness_pasqal_cloud import pulser_sequence
    from qrmi.testing.pasqal_cloud import PasqalCloudFake

    fake = PasqalCloudFake(seed=7).start()
    payload = {"kind": "PasqalCloud", "args": {"sequence": pulser_sequence(), "job_runs": 20}}
    return fake, "EMU_FREE", "PasqalCloud", payload, fake.settings()


def _iqm_server() -> tuple[Any, str, str, dict[str, Any], dict[str, str]]:
    from conformance.harness_iqm_server import BELL
    from qrmi.testing.iqm_server import IQMServerFake

    fake = IQMServerFake(seed=11).start()
    request = json.dumps({"circuits": [BELL], "shots": 100})
    payload = {
        "kind": "IQMServer",
        "args": {"iqmjson": request, "job_type": "circuit", "use_timeslot": False, "tag": "ref"},
    }
    return fake, fake.resource_name, "IQMServer", payload, fake.settings()


def _alice_bob_felis() -> tuple[Any, str, str, dict[str, Any], dict[str, str]]:
    from conformance.harness_alice_bob_felis import FLIP_AND_MEASURE
    from qrmi.testing.alice_bob_felis import FelisFake

    fake = FelisFake(seed=5).start()
    params = json.dumps({"nbShots": 100, "averageNbPhotons": 4})
    payload = {
        "kind": "AliceBobFelis",
        "args": {"human_qir": FLIP_AND_MEASURE, "input_params": params},
    }
    return fake, "ab_emu_1q_lescanne_2020", "AliceBobFelis", payload, fake.settings()


FAKES: dict[str, Callable[[], tuple[Any, str, str, dict[str, Any], dict[str, str]]]] = {
    "ibm-quantum-system": _ibm_quantum_system,
    "ibm-quantum-compute-service": _ibm_compute_service,
    "pasqal-cloud": _pasqal_cloud,
    "iqm-server": _iqm_server,
    "alice-bob-felis": _alice_bob_felis,
}


@pytest.fixture(params=sorted(FAKES))
def reference_target(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, dict[str, Any], dict[str, str]]]:
    fake, name, resource_type, payload, settings = FAKES[request.param]()
    env = {(f"{name}_{k}" if k.startswith("QRMI_") else k): v for k, v in settings.items()}
    env["HOME"] = str(tmp_path)
    spec = {"name": name, "type": resource_type, "payload": payload, "timeout": 60}
    try:
        yield request.param, spec, env
    finally:
        stop = getattr(fake, "close", None) or fake.stop
        stop()


def test_the_reference_client_runs_a_task_on_the_fake(
    reference_python: Path, reference_target: tuple[str, dict[str, Any], dict[str, str]]
) -> None:
    kind, spec, env = reference_target

    report = json.loads(
        run(reference_python, HERE / "reference_client.py", json.dumps(spec), env=env)
    )

    assert "failed" not in report, f"{kind}: {report.get('failed')}: {report.get('error')}"
    assert report["accessible"] is True and report["target_chars"] > 2
    assert report["status"] == "Completed", report
    assert report["result"]
