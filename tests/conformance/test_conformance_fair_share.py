"""The conformance suite again, through a gateway that holds every task beyond one at the vendor
in its fair-share queue (``QRMI_GATEWAY_MAX_CONCURRENT_TASKS=1``): tasks it holds report
``Queued``, stop, fail and complete like the vendor's own, under the gateway's task ids."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from conformance.conftest import HARNESS_NAMES
from conformance.fixtures import resource, tasks  # noqa: F401 - fixtures by name
from conformance.harness import BackendHarness
from conformance.test_conformance import *  # noqa: F403 - the suite's tests run here
from conformance.test_conformance_gateway import IBM_HARNESSES, _definition, _inner_harness
from qrmi.config import Config
from qrmi.errors import QrmiError
from qrmi.gateway.dispatch import CAPACITY_KEY
from qrmi.gateway.testing import LocalGateway
from qrmi.resource import QuantumResource


def through_a_queueing_gateway(inner: BackendHarness, workdir: Path) -> BackendHarness:
    """``inner`` served by a gateway that lets one task at a time reach the vendor."""
    direct = inner.make_resource()
    assert isinstance(direct, QuantumResource)
    rdef = _definition(direct)
    rdef = replace(rdef, environment={**rdef.environment, CAPACITY_KEY: "1"})
    gateway = LocalGateway(Config(resource_map={rdef.name: rdef}), workdir).start()
    _, variables = gateway.open_job("4343", uid=os.getuid(), qpus=[rdef.name])

    def make_resource() -> QuantumResource:
        return QuantumResource(rdef.name, rdef.resource_type, environ=variables)

    def teardown() -> None:
        try:
            assert gateway.service is not None
            with contextlib.suppress(QrmiError):
                gateway.service.finish_job("4343")
            gateway.stop()
        finally:
            inner.teardown()

    return replace(inner, make_resource=make_resource, teardown=teardown, concurrency=1)


@pytest.fixture(scope="module", params=[*HARNESS_NAMES, *IBM_HARNESSES])
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BackendHarness]:
    workdir = tmp_path_factory.mktemp(f"fair-{request.param}")
    inner = _inner_harness(request.param, workdir)
    try:
        built = through_a_queueing_gateway(inner, workdir)
    except BaseException:
        inner.teardown()
        raise
    try:
        yield built
    finally:
        built.teardown()
