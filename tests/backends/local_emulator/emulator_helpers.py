"""Payloads shared by the local emulator's tests."""

from __future__ import annotations

import json
from typing import Any

from qrmi.models import Payload

BELL = """OPENQASM 3.0;
include "stdgates.inc";
bit[2] c;
qubit[2] q;
h q[0];
cx q[0], q[1];
c[0] = measure q[0];
c[1] = measure q[1];
"""

BELL_STATE = """OPENQASM 3.0;
include "stdgates.inc";
qubit[2] q;
h q[0];
cx q[0], q[1];
"""


def primitive(program_id: str, pubs: list[Any], **extra: Any) -> Payload:
    """A ``QiskitPrimitive`` payload of primitive V2 input."""
    params = {"pubs": pubs, "version": 2, "support_qiskit": True, **extra}
    return Payload.QiskitPrimitive(input=json.dumps(params), program_id=program_id)


def bell_sampler(*, shots: int = 200, seconds: float = 0.0) -> Payload:
    """Bell-state sampler job, held Running for ``seconds`` of emulated QPU time."""
    options = {"emulator": {"min_duration_seconds": seconds}} if seconds else {}
    return primitive("sampler", [[BELL, None, shots]], options=options)
