"""Fixtures: the file-backed test vendor, config files and input files in a temporary dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tools import filevendor

SECRET = "sk-VERY-SECRET-4242"
SCRIPT = Path(filevendor.__file__)

WriteInput = Callable[..., Path]
RunScript = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(autouse=True)
def _vendor_registered() -> None:
    filevendor.install()


@pytest.fixture
def vendor_dir(tmp_path: Path) -> Path:
    return tmp_path / "vendor-state"


@pytest.fixture
def config_file(tmp_path: Path, vendor_dir: Path) -> Path:
    """A config with a working resource ``fv`` and a ``broken`` one whose status call fails."""
    resources = [
        {
            "name": "fv",
            "type": filevendor.TYPE,
            "environment": {"QRMI_TEST_STATE_DIR": str(vendor_dir), "QRMI_TEST_API_KEY": SECRET},
        },
        {
            "name": "broken",
            "type": filevendor.TYPE,
            "environment": {
                "QRMI_TEST_STATE_DIR": str(vendor_dir),
                "QRMI_TEST_API_KEY": SECRET,
                "QRMI_TEST_STATUS": "broken",
            },
        },
    ]
    path = tmp_path / "qrmi_config.json"
    path.write_text(json.dumps({"resources": resources}))
    return path


@pytest.fixture
def write_input(tmp_path: Path) -> WriteInput:
    """Write a task input file scripting the vendor: behaviour and duration."""

    def write(behaviour: str = "complete", seconds: float = 0.0, name: str = "in.json") -> Path:
        path = tmp_path / name
        parameters = {"behaviour": behaviour, "seconds": seconds}
        path.write_text(json.dumps({"program_id": "sampler", "parameters": parameters}))
        return path

    return write


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without job or config variables, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QRMI_", "SLURM_JOB_QPU")) and k != "SRUN_DEBUG"
    }
    env.update(extra)
    return env


@pytest.fixture
def run_script() -> RunScript:
    """Run ``qrmi`` or ``task_runner`` (with the test vendor installed) in a subprocess."""

    def run(
        command: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(SCRIPT), command, *args],
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else clean_env(),
            timeout=timeout,
        )

    return run


def read_json(text: str) -> Any:
    return json.loads(text)
