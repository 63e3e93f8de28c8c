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
    """Build an emulator on ``state_dir``; keyword arguments are extra settings."""

    def make(name: str = "local", **settings: str) -> QuantumResource:
        config = {
            "QRMI_LOCAL_STATE_DIR": str(state_dir),
            "QRMI_LOCAL_IDLE_SECONDS": "5",
            **settings,
        }
        return QuantumResource.from_config(name, ResourceType.LocalEmulator, config)

    return make
