"""Conformance harness of the ``local-emulator`` backend."""

from __future__ import annotations

import json
from pathlib import Path

from conformance.harness import BackendHarness
from qrmi.backends.local_emulator.worker import stop_worker
from qrmi.models import Payload, ResourceType
from qrmi.resource import QuantumResource

BELL = """OPENQASM 3.0;
include "stdgates.inc";
bit[2] c;
qubit[2] q;
h q[0];
cx q[0], q[1];
c[0] = measure q[0];
c[1] = measure q[1];
"""


def sampler_payload(*, seconds: float = 0.0, shots: int = 100) -> Payload:
    """A Bell-state sampler job, held Running for ``seconds`` of emulated QPU time."""
    params: dict[str, object] = {"pubs": [[BELL, None, shots]], "version": 2}
    if seconds:
        params["options"] = {"emulator": {"min_duration_seconds": seconds}}
    return Payload.QiskitPrimitive(input=json.dumps(params), program_id="sampler")


def _stop(state_dir: Path) -> None:
    stop_worker(state_dir)


def _check_result(text: str) -> None:
    assert json.loads(text)["__type__"] == "PrimitiveResult"


def make_harness(workdir: Path) -> BackendHarness:
    """One emulator (one lane, so a second slow task is observably Queued) per session."""
    state_dir = workdir / "local-emulator-state"
    config = {
        "QRMI_LOCAL_STATE_DIR": str(state_dir),
        "QRMI_LOCAL_LANES": "1",
        "QRMI_LOCAL_IDLE_SECONDS": "10",
    }
    return BackendHarness(
        make_resource=lambda: QuantumResource.from_config(
            "conformance-local", ResourceType.LocalEmulator, config
        ),
        quick_payload=sampler_payload,
        slow_payload=lambda: sampler_payload(seconds=30.0),
        unsupported_payload=lambda: Payload.PasqalCloud(sequence="{}", job_runs=10),
        concurrency=1,
        timeout=60.0,
        check_result=_check_result,
        teardown=lambda: _stop(state_dir),
    )
