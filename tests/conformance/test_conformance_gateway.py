"""The conformance suite again, with every backend reached through the QRMI gateway.

Each backend's harness (``harness_*.py`` here, plus both IBM backends) is started as usual; a
gateway in this process then serves that backend's resource from a config holding its settings,
a job is opened on it, and the suite's resource is a ``QuantumResource`` of the same name and
type whose settings are only the gateway URL and the job token, as in a job run in gateway mode.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from conformance.conftest import HARNESS_NAMES
from conformance.fixtures import resource, tasks  # noqa: F401 - fixtures by name
from conformance.harness import BackendHarness
from conformance.test_conformance import *  # noqa: F403 - the suite's tests run here
from qrmi.backends.gateway import GatewayBackend
from qrmi.config import Config, ResourceDef
from qrmi.errors import QrmiError
from qrmi.gateway.testing import LocalGateway
from qrmi.models import Payload
from qrmi.resource import QuantumResource

IBM_HARNESSES = ["ibm-quantum-system", "ibm-quantum-compute-service"]
#: An ISA Bell circuit of the IBM fakes' device (fake_perth), as in tests/backends/ibm.
IBM_BELL = (
    'OPENQASM 3.0; include "stdgates.inc"; bit[2] meas; rz(pi/2) $0; sx $0; rz(pi/2) $0; '
    "cx $0, $1; meas[0] = measure $0; meas[1] = measure $1;"
)


def _ibm_sampler(seconds: float = 0.0) -> Payload:
    params: dict[str, object] = {"pubs": [[IBM_BELL, None, 64]], "version": 2}
    if seconds:
        params["options"] = {"emulator": {"min_duration_seconds": seconds}}
    return Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler")


def _ibm_harness(kind: str) -> BackendHarness:
    from qrmi.testing.ibm_compute_service import ComputeServiceFake
    from qrmi.testing.ibm_quantum_system import QuantumSystemFake

    fake = QuantumSystemFake() if kind == "ibm-quantum-system" else ComputeServiceFake()
    fake.start()
    stop = fake.stop if isinstance(fake, QuantumSystemFake) else fake.close
    return BackendHarness(
        make_resource=lambda: QuantumResource.from_config(
            "ibm_perth", fake.resource_type, fake.settings
        ),
        quick_payload=_ibm_sampler,
        slow_payload=lambda: _ibm_sampler(seconds=30.0),
        unsupported_payload=lambda: Payload.PasqalCloud(sequence="{}", job_runs=10),
        concurrency=None if kind == "ibm-quantum-system" else 1,
        timeout=60.0,
        check_result=None,
        teardown=stop,
    )


def _inner_harness(name: str, workdir: Path) -> BackendHarness:
    if name in IBM_HARNESSES:
        return _ibm_harness(name)
    module = importlib.import_module(f"conformance.harness_{name}")
    built: BackendHarness = module.make_harness(workdir)
    return built


def _definition(direct: QuantumResource) -> ResourceDef:
    """The config entry an admin would write for ``direct``: its name, type and settings."""
    settings = dict(direct.backend.settings._config)  # the test's explicit settings
    return ResourceDef(direct.resource_id(), direct.resource_type(), False, settings)


def through_gateway(inner: BackendHarness, workdir: Path) -> BackendHarness:
    """``inner`` with its resource served by a gateway and reached with a job token."""
    direct = inner.make_resource()
    assert isinstance(direct, QuantumResource)
    rdef = _definition(direct)
    config = Config(resource_map={rdef.name: rdef})
    gateway = LocalGateway(config, workdir).start()
    _, variables = gateway.open_job("4242", uid=os.getuid(), qpus=[rdef.name])

    def make_resource() -> QuantumResource:
        return QuantumResource(rdef.name, rdef.resource_type, environ=variables)

    def teardown() -> None:
        try:
            assert gateway.service is not None
            with contextlib.suppress(QrmiError):
                gateway.service.finish_job("4242")
            gateway.stop()
        finally:
            inner.teardown()

    return replace(inner, make_resource=make_resource, teardown=teardown)


@pytest.fixture(scope="module", params=[*HARNESS_NAMES, *IBM_HARNESSES])
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendHarness]:
    workdir = tmp_path_factory.mktemp(f"gateway-{request.param}")
    inner = _inner_harness(request.param, workdir)
    try:
        built = through_gateway(inner, workdir)
    except BaseException:
        inner.teardown()
        raise
    try:
        yield built
    finally:
        built.teardown()


def test_the_resource_goes_through_the_gateway(harness: BackendHarness) -> None:
    qpu = harness.make_resource()

    assert isinstance(qpu, QuantumResource)
    assert isinstance(qpu.backend, GatewayBackend)
