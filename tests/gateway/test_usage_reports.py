"""The reports ``qrmi accounting`` prints: totals per group and QPU seconds over time."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from qrmi.errors import InvalidInputError
from qrmi.gateway.store import UsageRecord
from qrmi.gateway.usage import plot_usage, usage_series, usage_totals

DAY = 86400.0
T0 = 1_780_000_000.0


def record(task: str, account: str | None, seconds: float | None, **fields: object) -> UsageRecord:
    values: dict[str, object] = {
        "qpu": "emu",
        "task_id": task,
        "slurm_job_id": "1",
        "uid": 1000,
        "user_name": "alice",
        "account": account,
        "partition": None,
        "qpu_type": "local-emulator",
        "payload_kind": "QiskitPrimitive",
        "program": "sampler",
        "shots": 100,
        "input_bytes": 10,
        "submitted": T0,
        "started": T0 + 1,
        "ended": T0 + 2,
        "state": "Completed",
        "quantum_seconds": seconds,
        "usage_source": None if seconds is None else "vendor",
        "result_bytes": 20,
        **fields,
    }
    return UsageRecord(**values)  # type: ignore[arg-type]


def test_totals_group_and_sum_exactly_with_unknown_groups_last() -> None:
    records = [
        record("a", "physics", 0.1),
        record("b", None, 0.2),
        record("c", "physics", 0.2, qpu="emu2"),
        record("d", "chemistry", None, shots=None, result_bytes=None),
    ]

    totals = usage_totals(records, ["account"])

    assert [t.key for t in totals] == [("chemistry",), ("physics",), (None,)]
    physics = totals[1]
    assert physics.tasks == 2 and physics.qpu_seconds == math.fsum([0.1, 0.2])
    assert totals[0].unpriced == 1 and totals[0].shots == 0 and totals[0].result_bytes == 0
    (everything,) = usage_totals(records, [])
    assert everything.key == () and everything.tasks == 4 and everything.input_bytes == 40
    by_two = usage_totals(records, ["account", "qpu"])
    assert [t.key for t in by_two][:3] == [
        ("chemistry", "emu"),
        ("physics", "emu"),
        ("physics", "emu2"),
    ]


def test_totals_refuse_an_unknown_field() -> None:
    with pytest.raises(InvalidInputError, match="cannot group by 'colour'"):
        usage_totals([], ["colour"])


def test_a_week_is_drawn_a_day_per_bucket_and_tasks_fall_where_they_started() -> None:
    records = [
        record("a", "physics", 1.5, started=T0 + 10),
        record("b", "physics", 2.0, started=T0 + DAY + 5),
        record("c", None, 4.0, started=None, submitted=T0 + 2 * DAY),  # never ran: submitted
        record("d", "chemistry", None),  # no cost: not drawn
        record("e", "physics", 9.0, started=T0 + 7 * DAY),  # at the window's end: outside
    ]

    series = usage_series(records, T0, T0 + 7 * DAY)

    assert (series.bucket_seconds, series.buckets) == (DAY, 7)
    assert series.seconds == {
        "(none)": [0, 0, 4.0, 0, 0, 0, 0],
        "physics": [1.5, 2.0, 0, 0, 0, 0, 0],
    }


def test_two_days_or_less_are_drawn_an_hour_per_bucket_and_long_windows_merge_days() -> None:
    assert usage_series([], T0, T0 + DAY).bucket_seconds == 3600
    long = usage_series([], T0, T0 + 365 * DAY, max_buckets=60)
    assert long.bucket_seconds == 7 * DAY and long.buckets <= 60


def test_an_empty_window_still_draws_a_plot(tmp_path: Path) -> None:
    target = plot_usage(usage_series([], T0, T0 + DAY), tmp_path / "empty.svg")

    assert target.read_text().lstrip().startswith("<?xml")
