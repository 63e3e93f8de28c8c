"""Accounting facts the gateway records about each task: what was submitted and what it cost.

The gateway writes a :class:`~qrmi.gateway.store.UsageRecord` when a task starts (so a killed
job loses nothing) and completes it when the task is seen final: by a status call, a wait, the
job's end, or the reaper's sweep over tasks that outlived their job.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from qrmi.models import Payload, TaskUsage

__all__ = ["PayloadFacts", "payload_facts", "task_cost"]

#: Payloads larger than this are not parsed just to find their shot count.
_MAX_PARSED_BYTES = 1 << 20


class PayloadFacts(NamedTuple):
    """What a payload says about its work: variant, program, shots (when stated) and size."""

    kind: str
    program: str | None
    shots: int | None
    input_bytes: int


def payload_facts(payload: Payload) -> PayloadFacts:
    """The accounting facts of ``payload`` (shots where the payload states them)."""
    kind = str(getattr(payload, "variant", type(payload).__name__))
    if isinstance(payload, Payload.QiskitPrimitive):
        return PayloadFacts(
            kind, payload.program_id, _primitive_shots(payload.input), len(payload.input)
        )
    if isinstance(payload, Payload.PasqalCloud):
        return PayloadFacts(kind, None, payload.job_runs, len(payload.sequence))
    if isinstance(payload, Payload.IQMServer):
        shots = _int_field(_parse(payload.iqmjson), "shots")
        return PayloadFacts(kind, payload.job_type, shots, len(payload.iqmjson))
    if isinstance(payload, Payload.AliceBobFelis):
        shots = _int_field(_parse(payload.input_params), "nbShots")
        return PayloadFacts(kind, None, shots, len(payload.human_qir) + len(payload.input_params))
    if isinstance(payload, Payload.Oqtopus):
        spec = _parse(payload.job_spec)
        program = spec.get("job_type") if isinstance(spec, dict) else None
        shots = _int_field(spec, "shots")
        return PayloadFacts(
            kind, program if isinstance(program, str) else None, shots, len(payload.job_spec)
        )
    return PayloadFacts(kind, None, None, 0)


def _parse(text: str) -> Any:
    if len(text) > _MAX_PARSED_BYTES:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _int_field(data: Any, name: str) -> int | None:
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _primitive_shots(text: str) -> int | None:
    """Total shots of a sampler input: each pub's own shots, else the input's default."""
    data = _parse(text)
    if not isinstance(data, dict):
        return None
    default = _int_field(data, "shots")
    pubs = data.get("pubs")
    if not isinstance(pubs, list):
        return default
    total = 0
    for pub in pubs:
        shots = pub[2] if isinstance(pub, list) and len(pub) > 2 else None
        if isinstance(shots, int) and not isinstance(shots, bool) and shots >= 0:
            total += shots
        elif default is not None:
            total += default
        else:
            return None
    return total


def task_cost(
    reported: TaskUsage | None, started: float | None, ended: float
) -> tuple[float | None, str | None]:
    """``(seconds, source)`` of a finished task: the vendor's QPU seconds, else the vendor's
    running time, else the running time the gateway saw (from first seen running to final)."""
    if reported is not None and reported.quantum_seconds is not None:
        return reported.quantum_seconds, "vendor"
    if reported is not None and reported.running_seconds is not None:
        return reported.running_seconds, "vendor-running"
    if started is not None:
        return max(0.0, ended - started), "gateway"
    return None, None
