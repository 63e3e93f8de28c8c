"""Fixtures of the local emulator's tests: a private state directory and resources on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qrmi.backends.local_emulator.worker import stop_worker
from qrmi.models import ResourceType
from qrmi.resource import QuantumResource


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A private state directory whose worker is stopped (by pid) after the test."""
    path = tmp_path / "state"
    yield path
    stop_worker(path)


@pytest.fixture
def make_resource(state_dir: Path) -> Callable[..., QuantumResource]:
    """Build an emulator on ``state_dir``; keyword arguments are extra settings. Its tasks run
    on the worker's lanes, which these tests are about, unless ``QRMI_LOCAL_IN_PROCESS`` says
    otherwise (test_emulator_in_process.py)."""

    def make(name: str = "local", **settings: str) -> QuantumResource:
        config = {
            "QRMI_LOCAL_STATE_DIR": str(state_dir),
            "QRMI_LOCAL_IDLE_SECONDS": "5",
            "QRMI_LOCAL_IN_PROCESS": "false",
            **settings,
        }
        return QuantumResource.from_config(name, ResourceType.LocalEmulator, config)

    return make
