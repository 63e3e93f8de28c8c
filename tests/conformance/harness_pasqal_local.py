"""Conformance harness of the ``pasqal-local`` backend against its fake Warden (real MUNGE)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.harness import BackendHarness
from conformance.harness_pasqal_cloud import SECONDS_PER_RUN, pulser_harness
from qrmi.models import ResourceType
from qrmi.resource import QuantumResource
from qrmi.testing.munge import munge_available
from qrmi.testing.pasqal_warden import PasqalWardenFake


def make_harness(workdir: Path) -> BackendHarness:
    if not munge_available():
        pytest.skip("munged is not installed")
    fake = PasqalWardenFake(seconds_per_run=SECONDS_PER_RUN, seed=7).start()
    settings = fake.settings()
    session = QuantumResource.from_config("fresnel_onprem", ResourceType.PasqalLocal, settings)
    token = session.acquire()
    settings["QRMI_JOB_ACQUISITION_TOKEN"] = token

    def teardown() -> None:
        session.release(token)
        fake.stop()

    return pulser_harness(
        lambda: QuantumResource.from_config("fresnel_onprem", ResourceType.PasqalLocal, settings),
        teardown=teardown,
    )
