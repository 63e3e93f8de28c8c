"""The backend conformance suite, run against both IBM backends and their fakes.

The suite's tests are imported here and see this module's ``harness`` fixture (one per IBM
backend, each on a fresh fake stack), so they run once per IBM backend.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from ibm_helpers import sampler

from conformance.harness import BackendHarness, Tasks
from conformance.test_conformance import *  # noqa: F403 - the suite's tests run here
from qrmi.models import Payload
from qrmi.protocol import QuantumResourceProtocol
from qrmi.resource import QuantumResource
from qrmi.testing.ibm_compute_service import ComputeServiceFake
from qrmi.testing.ibm_quantum_system import QuantumSystemFake


def _check_result(text: str) -> None:
    assert json.loads(text)["__type__"] == "PrimitiveResult"


def _unsupported() -> Payload:
    return Payload.PasqalCloud(sequence="{}", job_runs=10)


def quantum_system_harness() -> BackendHarness:
    """All jobs of the QS API are Running at once (no queued state): concurrency None."""
    fake = QuantumSystemFake().start()
    return BackendHarness(
        make_resource=lambda: QuantumResource.from_config(
            "ibm_perth", "ibm-quantum-system", fake.settings
        ),
        quick_payload=sampler,
        slow_payload=lambda: sampler(seconds=30),
        unsupported_payload=_unsupported,
        concurrency=None,
        timeout=60.0,
        check_result=_check_result,
        teardown=fake.stop,
    )


def compute_service_harness() -> BackendHarness:
    """The QCS fake runs one job at a time, so a second slow job is Queued."""
    fake = ComputeServiceFake().start()
    return BackendHarness(
        make_resource=lambda: QuantumResource.from_config(
            "ibm_perth", "ibm-quantum-compute-service", fake.settings
        ),
        quick_payload=sampler,
        slow_payload=lambda: sampler(seconds=30),
        unsupported_payload=_unsupported,
        concurrency=1,
        timeout=60.0,
        check_result=_check_result,
        teardown=fake.close,
    )


@pytest.fixture(scope="module", params=["ibm-quantum-system", "ibm-quantum-compute-service"])
def harness(request: pytest.FixtureRequest) -> Iterator[BackendHarness]:
    make = (
        quantum_system_harness if request.param == "ibm-quantum-system" else compute_service_harness
    )
    built = make()
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
