"""Conformance harness of the ``iqm-server`` backend against its fake (circuits on qiskit-aer)."""

from __future__ import annotations

import json
from pathlib import Path

from conformance.harness import BackendHarness
from qrmi.models import Payload, ResourceType
from qrmi.resource import QuantumResource
from qrmi.testing.iqm_server import IQMServerFake

#: Emulated QPU time per shot: a quick task (100 shots) takes 0.1 s, a slow one (30000) 30 s.
SECONDS_PER_SHOT = 0.001

BELL = {
    "name": "bell",
    "instructions": [
        {"name": "prx", "locus": ["QB1"], "args": {"angle_t": 0.25, "phase_t": 0.25}},
        {"name": "prx", "locus": ["QB2"], "args": {"angle_t": 0.25, "phase_t": 0.25}},
        {"name": "cz", "locus": ["QB1", "QB2"], "args": {}},
        {"name": "prx", "locus": ["QB2"], "args": {"angle_t": 0.25, "phase_t": 0.75}},
        {"name": "measure", "locus": ["QB1", "QB2"], "args": {"key": "m"}},
    ],
}


def bell_payload(shots: int) -> Payload:
    """A Bell-state circuit job in IQM's native gates."""
    request = {"circuits": [BELL], "shots": shots}
    return Payload.IQMServer(iqmjson=json.dumps(request), job_type="circuit", tag="conformance")


def check_bell(text: str) -> None:
    counts = json.loads(text)["measurement_counts"][0]["counts"]
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 100


def make_harness(workdir: Path) -> BackendHarness:
    fake = IQMServerFake(seconds_per_shot=SECONDS_PER_SHOT, seed=11).start()
    name = fake.resource_name
    return BackendHarness(
        make_resource=lambda: QuantumResource.from_config(
            name, ResourceType.IQMServer, fake.settings()
        ),
        quick_payload=lambda: bell_payload(100),
        slow_payload=lambda: bell_payload(30000),
        unsupported_payload=lambda: Payload.PasqalCloud(sequence="{}", job_runs=10),
        concurrency=1,
        timeout=60.0,
        check_result=check_bell,
        teardown=fake.stop,
    )
