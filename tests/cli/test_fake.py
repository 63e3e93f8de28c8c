"""``qrmi fake serve``: serve a registered fake until Ctrl-C, refuse unknown kinds."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qrmi.cli import app
from tools.conftest import clean_env

pytest.importorskip("uvicorn")

runner = CliRunner()
SCRIPT = Path(__file__).with_name("fake_vendor_app.py")


def test_unknown_kind_lists_the_available_ones() -> None:
    import qrmi.testing

    result = runner.invoke(app, ["fake", "serve", "no-such-vendor"])
    assert result.exit_code == 2
    assert "unknown fake server kind 'no-such-vendor'; available kinds:" in result.stderr
    for kind in qrmi.testing.FAKE_SERVERS:
        assert kind in result.stderr


def test_serve_prints_the_config_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "fake", "serve", "cli-test"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    assert proc.stdout is not None
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("press Ctrl-C"):
                break
        text = "".join(lines)
        url = lines[0].split(" serving at ")[1].strip()
        with urllib.request.urlopen(url + "/anything", timeout=10) as answer:
            assert answer.read() == b"ok"
        config = json.loads(text[text.index("{") : text.rindex("}") + 1])
        resource = config["resources"][0]
        assert resource["environment"]["QRMI_CLI_TEST_ENDPOINT"] == url
        assert resource["type"] == "local-emulator"
        assert f"export cli_test_QRMI_CLI_TEST_ENDPOINT={url}" in text
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert "stopped" in err
