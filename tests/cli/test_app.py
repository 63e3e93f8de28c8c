"""The command tree: help is fast and light, --version, lazy groups, ``python -m qrmi.cli``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import qrmi
from qrmi.cli import app

runner = CliRunner()
HEAVY = ("qiskit", "qiskit_aer", "qiskit_ibm_runtime", "httpx", "boto3", "pulser", "uvicorn")
SLURM_CLI = Path(qrmi.__file__).parent / "slurm"


@pytest.mark.parametrize(
    "args", [["--help"], ["run", "--help"], ["resources", "--help"], ["task", "--help"]]
)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    code = (
        "import sys\n"
        "from qrmi.cli import main\n"
        f"sys.argv = ['qrmi', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print('HEAVY:', ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "HEAVY: \n" in done.stdout, done.stdout
    assert "Usage: qrmi" in done.stdout


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "qrmi.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    for command in ("resources", "run", "task", "config", "fake"):
        assert command in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert not {m for m in imported if m.split(".")[0] in HEAVY}


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"qrmi (pyqrmi) {qrmi.__version__}"


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output


def test_unknown_command_is_a_usage_error() -> None:
    result = runner.invoke(app, ["launch"])
    assert result.exit_code == 2


def test_slurm_group_is_shown_only_when_the_slurm_cli_exists() -> None:
    result = runner.invoke(app, ["--help"])
    has_cli = (SLURM_CLI / "cli.py").is_file() or (SLURM_CLI / "cli" / "__init__.py").is_file()
    assert ("slurm" in result.stdout) == has_cli
    if has_cli:
        sub = runner.invoke(app, ["slurm", "--help"])
        assert sub.exit_code == 0, sub.output
        assert "Usage" in sub.output
