"""The ``qrmi`` command: list resources, validate configs, run and inspect tasks, serve fakes.

Importing this package is cheap: every command imports what it needs (backends, qiskit, httpx)
when it runs. ``qrmi``, ``qrmi -h``/``--help`` and ``qrmi --version`` are answered here without
importing Typer or Rich at all (together they take longer to import than the 100 ms a help
screen may take); every other command line goes to the Typer application in
:mod:`qrmi.cli.app`, whose command list :data:`COMMANDS` mirrors (a test keeps them equal).
"""

from __future__ import annotations

import os.path
import sys
import types

TYPE_CHECKING = False  # not typing's: importing typing would cost more than this module
if TYPE_CHECKING:
    from typing import Any

__all__ = ["COMMANDS", "app", "main", "top_level_help"]

SUMMARY = "QRMI: run tasks on quantum resources and manage their configuration."

#: The top-level commands in the order the Typer app lists them, with their one-line help.
COMMANDS = (
    ("resources", "List the configured resources with their type and live status."),
    ("run", "Run one task on RESOURCE and write its result."),
    (
        "gateway",
        "Serve QRMI over HTTP/JSON to jobs holding a job token (API at /docs, /openapi.json).",
    ),
    ("task", "Inspect or cancel one task: status, result, logs, cancel."),
    ("config", "Check QRMI configuration files."),
    ("fake", "Local fakes of the vendor services, for demos and tests."),
    (
        "accounting",
        "QPU use recorded by the gateway: a job's tasks, totals per user, account and QPU.",
    ),
)
#: Command groups of other packages, listed when installed (see ``app._LAZY_GROUPS``).
OPTIONAL_COMMANDS = (
    ("slurm", "Slurm integration: administration of QPU jobs and licenses.", "slurm"),
)

_OPTIONS = (
    ("--version", "Print the version and exit."),
    ("--install-completion", "Install completion for the current shell."),
    (
        "--show-completion",
        "Show completion for the current shell, to copy it or customize the installation.",
    ),
    ("-h, --help", "Show this message and exit."),
)


def top_level_help() -> str:
    """The text of ``qrmi --help``."""
    commands = list(COMMANDS) + [
        (name, text) for name, text, package in OPTIONAL_COMMANDS if _has_package(package)
    ]
    lines = ["Usage: qrmi [OPTIONS] COMMAND [ARGS]...", "", f"  {SUMMARY}", "", "Options:"]
    width = max(len(name) for name, _ in _OPTIONS)
    lines += [f"  {name.ljust(width)}  {text}" for name, text in _OPTIONS]
    lines += ["", "Commands:"]
    width = max(len(name) for name, _ in commands)
    lines += [f"  {name.ljust(width)}  {text}" for name, text in commands]
    return "\n".join(lines) + "\n"


def _has_package(name: str) -> bool:
    """Whether ``qrmi.<name>`` is installed, found without importing it."""
    base = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), name)
    return os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py"))


def main() -> None:
    """Entry point of the ``qrmi`` console script."""
    args = sys.argv[1:]
    if args in ([], ["-h"], ["--help"]):
        sys.stdout.write(top_level_help())
        sys.exit(0)
    if args == ["--version"]:
        from qrmi._version import __version__

        sys.stdout.write(f"qrmi (pyqrmi) {__version__}\n")
        sys.exit(0)
    from qrmi.cli.app import app

    app(prog_name="qrmi")


class _CliPackage(types.ModuleType):
    """``qrmi.cli.app`` is the Typer application, imported on first use.

    A property, not a module ``__getattr__``: importing the submodule :mod:`qrmi.cli.app` makes
    the import system bind the *module* to this name, which would hide the application; the
    setter ignores that binding.
    """

    @property
    def app(self) -> Any:
        from qrmi.cli.app import app

        return app

    @app.setter
    def app(self, value: Any) -> None:
        """Ignore the import system binding the submodule (see the class docstring)."""


sys.modules[__name__].__class__ = _CliPackage
