"""Conformance harness of the ``alice-bob-felis`` backend against its fake (QIR on qiskit-aer)."""

from __future__ import annotations

import json
from pathlib import Path

from conformance.harness import BackendHarness
from qrmi.models import Payload, ResourceType
from qrmi.resource import QuantumResource
from qrmi.testing.alice_bob_felis import FelisFake

#: Emulated QPU time per shot: a quick task (100 shots) takes 0.1 s, a slow one (30000) 30 s.
SECONDS_PER_SHOT = 0.001

FLIP_AND_MEASURE = """\
%Qubit = type opaque
%Result = type opaque

define void @main() #0 {
entry:
  call void @__quantum__qis__x__body(%Qubit* null)
  call void @__quantum__qis__mz__body(%Qubit* null, %Result* null)
  call void @__quantum__rt__result_record_output(%Result* null, i8* null)
  ret void
}

attributes #0 = { "entry_point" "required_num_qubits"="1" "required_num_results"="1" }
"""


def qir_payload(shots: int) -> Payload:
    """Flip one cat qubit and measure it, ``shots`` times."""
    params = json.dumps({"nbShots": shots, "averageNbPhotons": 4})
    return Payload.AliceBobFelis(human_qir=FLIP_AND_MEASURE, input_params=params)


def check_histogram(text: str) -> None:
    assert text.strip() == "1,100"


def make_harness(workdir: Path) -> BackendHarness:
    fake = FelisFake(seconds_per_shot=SECONDS_PER_SHOT, seed=5).start()
    return BackendHarness(
        make_resource=lambda: QuantumResource.from_config(
            "ab_emu_1q_lescanne_2020", ResourceType.AliceBobFelis, fake.settings()
        ),
        quick_payload=lambda: qir_payload(100),
        slow_payload=lambda: qir_payload(30000),
        unsupported_payload=lambda: Payload.PasqalCloud(sequence="{}", job_runs=10),
        concurrency=1,
        timeout=60.0,
        check_result=check_histogram,
        teardown=fake.stop,
    )
