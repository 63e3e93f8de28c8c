"""A failed IBM job's reason reads like the reference's: a missing field is empty, not None."""

from __future__ import annotations

from qrmi.backends._ibm_common import failure_reason


def test_missing_solution_prints_nothing() -> None:
    job = {"state": {"status": "Failed", "reason": "bad circuit", "reason_code": 1517}}
    assert failure_reason(job) == "code: 1517, message: bad circuit, solution: "


def test_every_field_present() -> None:
    job = {"status": "Failed", "reason_code": 1, "reason_message": "m", "reason_solution": "s"}
    assert failure_reason(job) == "code: 1, message: m, solution: s"
