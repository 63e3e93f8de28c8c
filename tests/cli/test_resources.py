"""``qrmi resources``: every resource with its live status; a broken one does not hide others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qrmi.cli import app
from tools import filevendor
from tools.conftest import SECRET

runner = CliRunner()


def test_table_lists_every_resource_and_the_error_of_the_broken_one(config_file: Path) -> None:
    result = runner.invoke(app, ["resources", "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "fv" in text
    assert "online" in text
    assert "broken: ServiceError: the vendor answered 500" in " ".join(text.split())
    assert SECRET not in result.output


def test_json_output(config_file: Path) -> None:
    result = runner.invoke(app, ["resources", "-c", str(config_file), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    rows = {row["name"]: row for row in data["resources"]}
    assert data["config"] == str(config_file)
    assert data["job_resources"] is None
    assert rows["fv"]["status"] == "online"
    assert rows["fv"]["capacity"] == {"available_slots": 4, "max_slots": 4}
    assert rows["fv"]["type"] == filevendor.TYPE
    assert rows["broken"]["status"] is None
    assert "500" in rows["broken"]["error"]
    assert SECRET not in result.stdout


def test_missing_setting_is_shown_in_its_row(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(
        json.dumps(
            {
                "resources": [
                    {"name": "nokey", "type": filevendor.TYPE, "environment": {}},
                    {
                        "name": "prov",
                        "type": "ibm-quantum-compute-service",
                        "is_dynamic": True,
                        "environment": {},
                    },
                ]
            }
        )
    )
    result = runner.invoke(app, ["resources", "-c", str(config), "--json"])
    rows = {row["name"]: row for row in json.loads(result.stdout)["resources"]}
    assert "nokey_QRMI_TEST_STATE_DIR" in rows["nokey"]["error"]
    assert rows["prov"]["dynamic"] is True
    assert rows["prov"]["error"] is None


def test_inside_a_job_the_held_resources_are_marked(
    config_file: Path, vendor_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QRMI_JOB_QPU_RESOURCES", "fv,extra")
    monkeypatch.setenv("QRMI_JOB_QPU_TYPES", f"{filevendor.TYPE},{filevendor.TYPE}")
    monkeypatch.setenv("extra_QRMI_TEST_STATE_DIR", str(vendor_dir))
    result = runner.invoke(app, ["resources", "-c", str(config_file), "--json"])
    data = json.loads(result.stdout)
    assert data["job_resources"] == ["fv", "extra"]
    rows = {row["name"]: row for row in data["resources"]}
    assert rows["extra"]["status"] == "online", "a job resource outside the config is listed"
    assert not rows["broken"]["in_job"]

    table = runner.invoke(app, ["resources", "-c", str(config_file)])
    assert "This job holds: fv, extra" in table.stdout


def test_without_any_config_the_local_emulator_is_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QRMI_CONFIG_FILE", raising=False)
    monkeypatch.setenv("local_QRMI_LOCAL_STATE_DIR", str(tmp_path / "state"))
    if any(
        p.is_file()
        for p in (Path("/etc/slurm/qrmi_config.json"), Path("/etc/qrmi/qrmi_config.json"))
    ):
        pytest.skip("a system-wide QRMI config exists on this machine")
    result = runner.invoke(app, ["resources", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["resources"]
    assert [(r["name"], r["type"]) for r in rows] == [("local", "local-emulator")]


def test_invalid_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"resources": [{"name": "x"}]}')
    result = runner.invoke(app, ["resources", "-c", str(config)])
    assert result.exit_code == 2
    assert "required key 'type' is missing" in result.stderr
