"""Conformance harness of the ``oqtopus`` backend against its fake (OpenQASM 3 on the emulator)."""

from __future__ import annotations

import json
from pathlib import Path

from conformance.harness import BackendHarness
from qrmi.models import Payload, ResourceType
from qrmi.resource import QuantumResource
from qrmi.testing.oqtopus import OqtopusFake

#: Emulated QPU time per shot: a quick task (100 shots) takes 0.1 s, a slow one (30000) 30 s.
SECONDS_PER_SHOT = 0.001

BELL = """OPENQASM 3;
include "stdgates.inc";
qubit[2] q;
bit[2] c;
h q[0];
cx q[0], q[1];
c = measure q;
"""


def bell_payload(shots: int) -> Payload:
    """A Bell-state sampling job."""
    spec = {"job_type": "sampling", "program": [BELL], "shots": shots, "name": "conformance"}
    return Payload.Oqtopus(job_spec=json.dumps(spec))


def check_bell(text: str) -> None:
    counts = json.loads(text)["sampling"]["counts"]
    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 100


def make_harness(workdir: Path) -> BackendHarness:
    fake = OqtopusFake(seconds_per_shot=SECONDS_PER_SHOT, seed=11).start()
    return BackendHarness(
        make_resource=lambda: QuantumResource.from_config(
            fake.resource_name, ResourceType.OQTOPUS, fake.settings()
        ),
        quick_payload=lambda: bell_payload(100),
        slow_payload=lambda: bell_payload(30000),
        unsupported_payload=lambda: Payload.PasqalCloud(sequence="{}", job_runs=10),
        concurrency=1,
        timeout=60.0,
        check_result=check_bell,
        teardown=fake.stop,
    )
