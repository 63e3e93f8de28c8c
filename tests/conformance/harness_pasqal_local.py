"""Conformance harness of the ``pasqal-local`` backend against its fake Warden (real MUNGE)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.harness import BackendHarness
from conformance.harness_pasqal_cloud import check_counter, pulser_sequence
from qrmi.models import Payload, ResourceType
from qrmi.resource import QuantumResource
from qrmi.testing.munge import munge_available
from qrmi.testing.pasqal_warden import PasqalWardenFake

SECONDS_PER_RUN = 0.005


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

    return BackendHarness(
        make_resource=lambda: QuantumResource.from_config(
            "fresnel_onprem", ResourceType.PasqalLocal, settings
        ),
        quick_payload=lambda: Payload.PasqalCloud(sequence=pulser_sequence(), job_runs=20),
        slow_payload=lambda: Payload.PasqalCloud(sequence=pulser_sequence(), job_runs=6000),
        unsupported_payload=lambda: Payload.QiskitPrimitive(input="{}", program_id="sampler"),
        concurrency=1,
        timeout=60.0,
        check_result=check_counter,
        teardown=teardown,
    )
