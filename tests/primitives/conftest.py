"""Fixtures: local-emulator resources with a private state directory per test module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qrmi import QuantumResource

#: The emulator's worker exits after this long idle, so tests leave no process behind for long.
IDLE_SECONDS = "5"

MakeEmulator = Callable[..., QuantumResource]


@pytest.fixture(scope="module")
def emulator_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("emulator-state")


@pytest.fixture(scope="module")
def make_emulator(emulator_state: Path) -> Iterator[MakeEmulator]:
    """Build ``local-emulator`` resources that share this module's state directory."""

    def make(name: str = "local", **settings: str) -> QuantumResource:
        config = {
            "QRMI_LOCAL_STATE_DIR": str(emulator_state / name),
            "QRMI_LOCAL_IDLE_SECONDS": IDLE_SECONDS,
            "QRMI_LOCAL_SEED": "4242",
            **settings,
        }
        return QuantumResource.from_config(name, "local-emulator", config)

    yield make


@pytest.fixture(scope="module")
def emulator(make_emulator: MakeEmulator) -> QuantumResource:
    """The default emulated device (a small one)."""
    return make_emulator()
