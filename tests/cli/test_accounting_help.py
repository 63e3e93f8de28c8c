"""``qrmi accounting`` is listed by the fast top-level help and its own help stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qrmi.cli import top_level_help

#: What the accounting commands import only when they run.
LATER = ("matplotlib", "sqlite3", "qrmi.gateway.store", "qrmi.gateway.usage", "qiskit", "httpx")


@pytest.mark.parametrize("args", [["accounting", "--help"], ["accounting", "totals", "--help"]])
def test_the_accounting_help_imports_neither_the_store_nor_matplotlib(args: list[str]) -> None:
    code = (
        "import sys\n"
        "from qrmi.cli import main\n"
        f"sys.argv = ['qrmi', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print('LOADED:', ','.join(m for m in {LATER!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    assert "LOADED: \n" in done.stdout, done.stdout
    assert "--plot" in done.stdout or "totals" in done.stdout


def test_the_top_level_help_lists_accounting() -> None:
    assert "  accounting  QPU use recorded by the gateway" in top_level_help()
