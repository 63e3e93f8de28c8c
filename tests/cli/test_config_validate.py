"""``qrmi config validate``: every problem at once, and warnings about likely mistakes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from qrmi.cli import app

runner = CliRunner()


def write(tmp_path: Path, data: object, mode: int = 0o600) -> Path:
    path = tmp_path / "qrmi_config.json"
    path.write_text(json.dumps(data))
    path.chmod(mode)
    return path


def test_valid_config_is_summarised(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "resources": [
                {
                    "name": "local",
                    "type": "local-emulator",
                    "environment": {"QRMI_LOCAL_LANES": "2"},
                },
                {
                    "name": "prov",
                    "type": "ibm-quantum-system",
                    "is_dynamic": True,
                    "environment": {},
                },
            ]
        },
    )
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path}: valid, 2 resources" in result.stdout
    assert "local: local-emulator resource, 1 setting" in result.stdout
    assert "prov: ibm-quantum-system provider, 0 settings" in result.stdout
    assert result.stderr == ""


def test_every_problem_is_listed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "resources": [
                {"name": "a", "type": "no-such-type", "environment": {}},
                {"name": "b b", "type": "local-emulator", "environment": {"N": 3}},
                {"type": "local-emulator"},
            ]
        },
    )
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 1
    err = " ".join(result.stderr.split())
    assert "unknown resource type 'no-such-type'" in err
    assert "resource name 'b b'" in err
    assert "quote numbers" in err
    assert "required key 'name' is missing" in err
    assert "required key 'environment' is missing" in err


def test_unreadable_or_non_json_file(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["config", "validate", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1
    assert "cannot read QRMI config file" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    result = runner.invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 1
    assert "is not valid JSON" in result.stderr


def test_warnings_do_not_fail(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "resources": [
                {
                    "name": "fez",
                    "type": "ibm-quantum-system",
                    "environment": {
                        "QRMI_IBM_QS_ENDPOINT": "http://x",
                        "QRMI_IBM_QCS_SERVICE_CRN": "crn:1",
                        "QRMI_IBM_QS_IAM_APIKEY": "k-123",
                    },
                },
                {
                    "name": "garnet",
                    "type": "iqm-server",
                    "environment": {"QRMI_IBM_ISA_TOKEN": "t"},
                },
            ]
        },
        mode=0o644,
    )
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 0, result.output
    err = " ".join(result.stderr.split())
    assert "fez: QRMI_IBM_QCS_SERVICE_CRN is a setting of ibm-quantum-compute-service" in err
    assert "garnet: no backend reads QRMI_IBM_ISA_TOKEN; did you mean QRMI_IQM_ISA_TOKEN?" in err
    assert "other users can read it" in err
    assert "k-123" not in result.output


def test_a_fifo_or_a_non_utf8_file_is_refused_with_a_message(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    result = runner.invoke(app, ["config", "validate", str(fifo)])
    assert result.exit_code != 0
    assert "is a FIFO (named pipe)" in result.output
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"resources": [], "x": "\xe9"}')
    result = runner.invoke(app, ["config", "validate", str(latin)])
    assert result.exit_code != 0
    assert "is not UTF-8 text" in " ".join(result.output.split())
    assert "Traceback" not in result.output
