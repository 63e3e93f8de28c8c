"""The ``qrmi`` Typer application: command tree, ``--version`` and the lazy ``slurm`` group."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from qrmi._version import __version__
from qrmi.cli._common import fail
from qrmi.cli.accounting import accounting_app
from qrmi.cli.config_cmd import config_app
from qrmi.cli.fake import fake_app
from qrmi.cli.gateway import gateway
from qrmi.cli.resources import resources
from qrmi.cli.run import run, task_app
from qrmi.tools.runner import EXIT_FAILED

__all__ = ["app"]

# Command groups that live in other packages, imported only when used: name -> (module, help).
_LAZY_GROUPS = {
    "slurm": ("qrmi.slurm.cli", "Slurm integration: administration of QPU jobs and licenses."),
}


class _LazyGroup(TyperGroup):
    """A placeholder listed in help; running it builds the real command from a Typer ``app``.

    Signatures use ``Any``: Typer's click types are private to it.
    """

    def __init__(self, name: str, module: str, help_text: str) -> None:
        super().__init__(name=name, help=help_text)
        self._module = module

    def _load(self) -> Any:
        module = importlib.import_module(self._module)
        sub_app = getattr(module, "app", None)
        if not isinstance(sub_app, typer.Typer):
            raise fail(f"{self._module} does not provide a Typer 'app'", EXIT_FAILED)
        # Mounted under a throw-away parent so that it becomes a subgroup (no completion options).
        parent = typer.Typer(add_completion=False)
        parent.add_typer(sub_app, name=self.name)
        return typer.main.get_command(parent).get_command(None, self.name)  # type: ignore[attr-defined]

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        return self._load().make_context(info_name, args, parent=parent, **extra)


class _QrmiGroup(TyperGroup):
    """The top-level group, plus the lazy groups whose module is installed."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *[n for n in _LAZY_GROUPS if _installed(n)]]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in _LAZY_GROUPS and _installed(cmd_name):
            module, help_text = _LAZY_GROUPS[cmd_name]
            return _LazyGroup(cmd_name, module, help_text)
        return super().get_command(ctx, cmd_name)


def _installed(group: str) -> bool:
    """Whether the group's module exists, found without importing it (``--help`` stays fast)."""
    parts = _LAZY_GROUPS[group][0].split(".")
    base = Path(__file__).resolve().parents[1].joinpath(*parts[1:])
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


app = typer.Typer(
    cls=_QrmiGroup,
    name="qrmi",
    help="QRMI: run tasks on quantum resources and manage their configuration.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold credentials
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"qrmi (pyqrmi) {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """QRMI: run tasks on quantum resources and manage their configuration.

    Exit codes: 0 success, 1 task failed or resource error, 2 bad input or configuration,
    3 task cancelled, 4 task not finished (timeout), 130/143 interrupted.
    """


app.command("resources")(resources)
app.command("run")(run)
app.add_typer(task_app, name="task")
app.add_typer(config_app, name="config")
app.add_typer(fake_app, name="fake")
app.command("gateway")(gateway)
app.add_typer(accounting_app, name="accounting")
