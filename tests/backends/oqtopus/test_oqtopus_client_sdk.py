"""The vendor's own SDK (``oqtopus-client`` from PyPI) accepts the OQTOPUS fake.

The SDK runs in a separate virtual environment under /tmp (made on first use, reused after);
the test is skipped, with the reason, when that environment cannot be made (no network).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrmi.models import Payload, ResourceType, TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.oqtopus import OqtopusFake

pytestmark = pytest.mark.slow

SDK_REQUIREMENT = "oqtopus-client>=1.3"
VENV = Path(os.environ.get("QRMI_TEST_OQTOPUS_SDK_VENV", "/tmp/pyqrmi-oqtopus-client-venv"))
BELL = 'OPENQASM 3;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\nh q[0];\ncx q[0], q[1];\n'
BELL += "c = measure q;\n"

SDK_SCRIPT = """
import json, sys
from oqtopus_client import OqtopusClient, OqtopusConfig, OqtopusJobSpec

url, token, bell, theirs = sys.argv[1:5]
client = OqtopusClient(OqtopusConfig(url=url, api_token=token))
out = {"devices": [d.device_id for d in client.list_devices()]}
device = client.get_device("anemone")
out["device"] = [device.status, device.n_qubits, (device.device_info or {}).get("n_qubits")]
spec = OqtopusJobSpec.sampling(device_id="anemone", program=bell, shots=300)
result = client.run_sampling(spec, timeout=120)
out["sampling"] = [result.job_id, str(result.status.value), result.get_counts()]
spec = OqtopusJobSpec.estimation(
    device_id="anemone", program=bell, operator=[{"pauli": "Z 0 Z 1", "coeff": 2.0}]
)
out["estimation"] = client.run_estimation(spec, timeout=120).get_exp_value()
out["theirs"] = client.get_job(theirs).get_counts()
errors = {}
for name, call in (("cancel", lambda: client.cancel_job(result.job_id)),
                   ("unknown", lambda: client.get_job("no-such-job"))):
    try:
        call()
    except Exception as exc:
        body = getattr(exc, "payload", None)
        errors[name] = [getattr(exc, "status_code", None), getattr(body, "message", None)]
out["errors"] = errors
out["delete"] = client.delete_job(result.job_id).message
print(json.dumps(out))
"""


def _sdk_python() -> Path:
    python = VENV / "bin" / "python"
    if _imports_sdk(python):
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", SDK_REQUIREMENT],
            check=True,
            timeout=600,
            capture_output=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot make a venv with {SDK_REQUIREMENT} at {VENV}: {exc}")
    if not _imports_sdk(python):
        pytest.skip(f"{SDK_REQUIREMENT} installed at {VENV} but does not import")
    return python


def _imports_sdk(python: Path) -> bool:
    if not python.exists():
        return False
    probe = [str(python), "-c", "import oqtopus_client"]
    return subprocess.run(probe, capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def fake() -> Iterator[OqtopusFake]:
    with OqtopusFake(seed=8) as server:
        yield server


def test_the_sdk_runs_jobs_on_the_fake_and_reads_ours(fake: OqtopusFake, tmp_path: Path) -> None:
    python = _sdk_python()
    ours = QuantumResource("anemone", ResourceType.OQTOPUS, config=fake.settings(), environ={})
    our_job = ours.task_start(Payload.Oqtopus(job_spec=json.dumps({"program": BELL})))
    assert ours.task_wait(our_job, 60) == TaskStatus.Completed
    script = tmp_path / "sdk_flow.py"
    script.write_text(SDK_SCRIPT)

    completed = subprocess.run(
        [str(python), str(script), fake.url, fake.token, BELL, our_job],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    assert out["devices"] == ["anemone", "qulacs"]
    assert out["device"] == ["available", 64, 64]
    sdk_job, status, counts = out["sampling"]
    assert status == "succeeded"
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 300
    assert out["estimation"] == pytest.approx(2.0)
    assert out["theirs"] == ours.task_result(our_job).json()["sampling"]["counts"]
    assert out["errors"]["cancel"][0] == 400
    assert "not in valid status for cancellation" in out["errors"]["cancel"][1]
    assert out["errors"]["unknown"] == [404, "job not found with the given id"]
    assert out["delete"] == "job deleted"
    assert sdk_job not in {job["job_id"] for job in _listed(fake)}


def _listed(fake: OqtopusFake) -> list[dict[str, object]]:
    import httpx

    response = httpx.get(fake.url + "/jobs", headers={"q-api-token": fake.token})
    jobs: list[dict[str, object]] = response.json()
    return jobs
