"""Fixtures of the IBM backend tests: one fake service stack per module, reset per test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrmi.testing.ibm_compute_service import ComputeServiceFake
from qrmi.testing.ibm_quantum_system import QuantumSystemFake

# The conformance suite lives in tests/conformance and is imported as package "conformance".
_TESTS = str(Path(__file__).resolve().parents[2])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


@pytest.fixture(scope="module")
def qs_stack() -> Iterator[QuantumSystemFake]:
    """IAM + Quantum System API + S3, shared by the tests of one module."""
    fake = QuantumSystemFake()
    with fake:
        yield fake


@pytest.fixture
def qs(qs_stack: QuantumSystemFake) -> Iterator[QuantumSystemFake]:
    """The module's Quantum System fake, with faults, reservations and statuses reset after."""
    yield qs_stack
    for server in (qs_stack, qs_stack.iam):
        server.faults.reset()
    for name in qs_stack.resource_names:
        qs_stack.reserve(name, False)
        qs_stack.set_status(name, "online", "available")


@pytest.fixture(scope="module")
def qcs_stack() -> Iterator[ComputeServiceFake]:
    """IAM + Quantum Compute Service API, shared by the tests of one module."""
    fake = ComputeServiceFake()
    fake.start()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def qcs(qcs_stack: ComputeServiceFake) -> Iterator[ComputeServiceFake]:
    """The module's Quantum Compute Service fake, reset after the test."""
    yield qcs_stack
    for server in (qcs_stack, qcs_stack.iam):
        server.faults.reset()
    qcs_stack.queue.resume()
    for name in qcs_stack.resource_names:
        qcs_stack.set_status(name, "online", "available")
