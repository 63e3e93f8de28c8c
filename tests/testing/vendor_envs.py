"""Virtual environments holding vendors' own client libraries, made once per machine.

Each vendor client lives in its own venv (iqm-client and qiskit-ibm-runtime cannot share one),
under :data:`CACHE` in a directory named after the pinned requirement, so that it is created once
per machine and reused by every test session. A venv is built in a scratch directory and renamed
into place when complete, so an interrupted install is never mistaken for a finished one. When
the registry is unreachable, the caller skips with the installer's reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("QRMI_VENDOR_VENVS", "/tmp/qrmi-vendor-venvs"))
INSTALL_TIMEOUT = 900


class VendorEnvUnavailable(RuntimeError):
    """The venv could not be made (registry unreachable, package gone); the message says why."""


def vendor_python(requirement: str) -> Path:
    """The interpreter of the venv holding ``requirement`` (``name==version``); made if needed.

    Raises:
        VendorEnvUnavailable: the install failed; the message has the installer's last line.
    """
    home = CACHE / requirement.replace("==", "-").replace("[", "_").replace("]", "")
    python = home / "bin" / "python"
    if python.exists():
        return python
    CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{home.name}-", dir=CACHE))
    try:
        _create(scratch, requirement)
        scratch.rename(home)  # atomic: a concurrent session may have won; then use its venv
    except OSError:
        if not python.exists():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return python


def _create(where: Path, requirement: str) -> None:
    base = getattr(sys, "_base_executable", sys.executable)
    uv = REPO / ".venv" / "bin" / "uv"
    commands = (
        [
            [str(uv), "venv", "-q", "--python", base, str(where)],
            [
                str(uv),
                "pip",
                "install",
                "-q",
                "--python",
                str(where / "bin" / "python"),
                requirement,
            ],
        ]
        if uv.exists()
        else [
            [base, "-m", "venv", str(where)],
            [str(where / "bin" / "python"), "-m", "pip", "install", "-q", requirement],
        ]
    )
    for command in commands:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
        )
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise VendorEnvUnavailable(
                f"could not install {requirement} (is PyPI reachable?): "
                f"{lines[-1] if lines else done.returncode}"
            )


def run(python: Path, script: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``script`` with ``python``; its stdout (the test fails with stderr if it fails)."""
    done = subprocess.run(
        [str(python), str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, f"{script.name} failed:\n{done.stderr[-3000:]}"
    return done.stdout
