"""The CLI against a vendor fake (IBM Quantum System): real HTTP, credentials kept out of sight."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from qrmi.cli import app

pytest.importorskip("uvicorn")
pytest.importorskip("qiskit_aer")
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "inputs"
runner = CliRunner()


@pytest.fixture(scope="module")
def fake() -> Iterator[Any]:
    from qrmi.testing.ibm_quantum_system import serve

    with serve() as server:
        yield server


@pytest.fixture
def config(fake: Any, tmp_path: Path) -> Path:
    good = fake.resource_config()
    bad = {**good, "name": "ibm_wrong_key"}
    bad["environment"] = {**good["environment"], "QRMI_IBM_QS_IAM_APIKEY": "not-the-key-777"}
    path = tmp_path / "qrmi_config.json"
    path.write_text(json.dumps({"resources": [good, bad]}))
    return path


def test_resources_show_status_and_auth_errors_without_credentials(fake: Any, config: Path) -> None:
    result = runner.invoke(app, ["resources", "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)["resources"]}
    name = fake.resource_config()["name"]
    assert rows[name]["status"] == "online"
    assert rows["ibm_wrong_key"]["status"] is None
    assert rows["ibm_wrong_key"]["error"]
    for secret in (fake.settings["QRMI_IBM_QS_IAM_APIKEY"], "not-the-key-777"):
        assert secret not in result.output


def test_run_the_example_on_the_fake(fake: Any, config: Path) -> None:
    name = fake.resource_config()["name"]
    result = runner.invoke(
        app, ["run", name, str(EXAMPLES / "bell_sampler.json"), "-c", str(config), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "Completed"
    assert summary["result"]["__type__"] == "PrimitiveResult"
    status = runner.invoke(app, ["task", "status", name, summary["task_id"], "-c", str(config)])
    assert status.stdout.strip() == "Completed"
