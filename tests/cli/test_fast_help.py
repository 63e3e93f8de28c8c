"""``qrmi``, ``qrmi --help`` and ``qrmi --version`` answer without Typer, as Typer would."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
import typer

import qrmi
from qrmi.cli import COMMANDS, OPTIONAL_COMMANDS, SUMMARY, app, top_level_help


def _typer_commands() -> list[tuple[str, str]]:
    group = typer.main.get_command(app)
    ctx = click.Context(group)
    listed = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        listed.append((name, command.get_short_help_str(limit=1000)))
    return listed


def test_fast_help_lists_the_commands_typer_has_with_their_help() -> None:
    fast = [*COMMANDS, *[(name, text) for name, text, _ in OPTIONAL_COMMANDS]]
    assert _typer_commands() == fast
    assert app.info.help == SUMMARY


@pytest.mark.parametrize("args", [[], ["-h"], ["--help"]])
def test_help_is_printed_without_typer_or_rich(args: list[str]) -> None:
    code = (
        "import sys\n"
        "from qrmi.cli import main\n"
        f"sys.argv = ['qrmi', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('LOADED:', ','.join(m for m in ('typer', 'rich', 'click') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.startswith(top_level_help())
    assert "LOADED: \n" in done.stdout
    for name, text in COMMANDS:
        assert f"  {name}" in done.stdout and text in done.stdout


def test_version_is_printed_without_typer() -> None:
    code = (
        "import sys\nfrom qrmi.cli import main\nsys.argv = ['qrmi', '--version']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code\n"
        "print('typer' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == f"qrmi (pyqrmi) {qrmi.__version__}\nFalse\n"


def test_other_command_lines_go_to_typer() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qrmi.cli", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "Usage: " in done.stdout and "RESOURCE" in done.stdout


def test_app_attribute_is_the_typer_application_even_after_importing_its_module() -> None:
    import qrmi.cli
    import qrmi.cli.app  # binds the submodule name; the package keeps the application

    assert isinstance(qrmi.cli.app, typer.Typer)
