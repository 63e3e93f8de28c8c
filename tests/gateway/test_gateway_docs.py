"""docs/gateway.md: its ``bash`` blocks, in order, run as written against a gateway, inside the
environment of a job on the QPU ``emu`` in gateway mode (root, for the MUNGE examples)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.conftest import MakeGateway
from qrmi.gateway.auth import hash_token, new_token
from qrmi.testing.munge import MungeDaemon

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the job start example runs as root"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl"),
    pytest.mark.skipif(shutil.which("munge") is None, reason="needs munge (apt install munge)"),
]


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def _documented_output() -> list[str]:
    text = DOC.read_text()
    printed = text[text.index("prints\n\n```\n") + len("prints\n\n```\n") :]
    return printed[: printed.index("```")].strip().splitlines()


def test_the_curl_examples_run_as_written(
    make_gateway: MakeGateway, munge: MungeDaemon, tmp_path: Path
) -> None:
    admin_token = new_token()
    gateway = make_gateway(admin_hashes=frozenset({hash_token(admin_token)}))
    _, variables = gateway.open_job("77", qpus=["emu"])
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        **variables,
        "MUNGE_SOCKET": munge.socket,
        "ADMIN_TOKEN": admin_token,
    }
    script = "set -euo pipefail\n" + "\n".join(_blocks("bash"))

    done = subprocess.run(
        ["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.startswith('{"status":"ok","version":')
    assert "PrimitiveResult\n" in out
    assert all(f"{line}\n" in out for line in _documented_output())
    assert '"status":"Completed"' in out and '"released":["emu"]' in out
    assert '"status":"paused","status_reason":"calibration until 14:00"' in out
    assert variables["emu_QRMI_GATEWAY_TOKEN"] not in done.stderr


def test_the_admin_token_recipe_makes_the_hash_the_gateway_expects() -> None:
    recipe = next(block for block in _blocks("sh") if "sha256sum" in block)
    line = next(line for line in recipe.splitlines() if line.startswith("printf"))
    command = line.split(" >> ")[0]

    done = subprocess.run(
        ["bash", "-c", command], env={"PATH": os.environ["PATH"], "TOKEN": "t0k3n"},
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip

    assert done.stdout.strip() == hash_token("t0k3n")
