"""``import qrmi`` loads only the package file; every public name still resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest

import qrmi


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_import_qrmi_loads_no_other_qrmi_module() -> None:
    loaded = _run("import sys, qrmi; print(sorted(m for m in sys.modules if 'qrmi' in m))")
    assert loaded.strip() == "['qrmi', 'qrmi._version']"


def test_import_qrmi_loads_neither_typing_nor_logging() -> None:
    out = _run("import sys, qrmi; print('typing' in sys.modules, 'logging' in sys.modules)")
    assert out.strip() == "False False"


@pytest.mark.parametrize("name", qrmi.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(qrmi, name) is not None
    assert name in dir(qrmi)


def test_from_import_works_in_a_fresh_interpreter() -> None:
    out = _run("from qrmi import QuantumResource, TaskStatus; print(TaskStatus.Completed.name)")
    assert out.strip() == "Completed"


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        qrmi.Nope  # noqa: B018


def test_first_use_installs_log_masking() -> None:
    out = _run("import sys, qrmi\nqrmi.TaskStatus\nprint('qrmi.log' in sys.modules)\n")
    assert out.strip() == "True"
