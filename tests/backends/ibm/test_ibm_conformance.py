"""The backend conformance suite, run against both IBM backends and their fakes.

The suite's tests are imported here and see this module's ``harness`` fixture (one per IBM
backend, each on a fresh fake stack), so they run once per IBM backend.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from ibm_helpers import sampler

from conformance.fixtures import in_use, resource, tasks  # noqa: F401 - fixtures by name
from conformance.harness import BackendHarness
from conformance.test_conformance import *  # noqa: F403 - the suite's tests run here
from qrmi.models import Payload
from qrmi.resource import QuantumResource
from qrmi.testing.ibm_compute_service import ComputeServiceFake
from qrmi.testing.ibm_quantum_system import QuantumSystemFake


def _check_result(text: str) -> None:
    assert json.loads(text)["__type__"] == "PrimitiveResult"


def _unsupported() -> Payload:
    return Payload.PasqalCloud(sequence="{}", job_runs=10)


def _harness(
    fake: QuantumSystemFake | ComputeServiceFake,
    *,
    concurrency: int | None,
    teardown: Callable[[], None],
) -> BackendHarness:
    """A harness for an IBM fake, started here; it is ``teardown`` that stops it."""
    fake.start()
    return BackendHarness(
        make_resource=lambda: QuantumResource.from_config(
            "ibm_perth", fake.resource_type, fake.settings
        ),
        quick_payload=sampler,
        slow_payload=lambda: sampler(seconds=30),
        unsupported_payload=_unsupported,
        concurrency=concurrency,
        timeout=60.0,
        check_result=_check_result,
        teardown=teardown,
    )


def quantum_system_harness() -> BackendHarness:
    """All jobs of the QS API are Running at once (no queued state): concurrency None."""
    fake = QuantumSystemFake()
    return _harness(fake, concurrency=None, teardown=fake.stop)


def compute_service_harness() -> BackendHarness:
    """The QCS fake runs one job at a time, so a second slow job is Queued."""
    fake = ComputeServiceFake()
    return _harness(fake, concurrency=1, teardown=fake.close)


@pytest.fixture(scope="module", params=["ibm-quantum-system", "ibm-quantum-compute-service"])
def harness(request: pytest.FixtureRequest) -> Iterator[BackendHarness]:
    make = (
        quantum_system_harness if request.param == "ibm-quantum-system" else compute_service_harness
    )
    yield from in_use(make())
