"""The suite's fixtures besides ``harness``: every module that runs the suite imports them
(``conftest.py`` here, and a backend's own run of it, as ``tests/backends/ibm`` does)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conformance.harness import BackendHarness, Tasks
from qrmi.protocol import QuantumResourceProtocol

__all__ = ["in_use", "resource", "tasks"]


def in_use(built: BackendHarness) -> Iterator[BackendHarness]:
    """The body of a ``harness`` fixture: yield ``built``, then tear it down."""
    try:
        yield built
    finally:
        built.teardown()


@pytest.fixture
def resource(harness: BackendHarness) -> QuantumResourceProtocol:
    return harness.make_resource()


@pytest.fixture
def tasks(resource: QuantumResourceProtocol) -> Iterator[Tasks]:
    tracker = Tasks(resource)
    try:
        yield tracker
    finally:
        tracker.stop_all()
