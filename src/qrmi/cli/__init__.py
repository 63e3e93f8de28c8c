"""The ``qrmi`` command: list resources, validate configs, run and inspect tasks, serve fakes.

Importing this package is cheap: every command imports what it needs (backends, qiskit, httpx)
when it runs, so ``qrmi --help`` starts fast.
"""

from __future__ import annotations

from qrmi.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``qrmi`` console script."""
    app(prog_name="qrmi")
