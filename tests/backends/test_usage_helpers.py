"""Reading vendor times and durations for ``task_usage``: odd answers give ``None``."""

from __future__ import annotations

import pytest

from qrmi.backends._usage import duration, seconds, timestamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T10:00:00Z", 1796119200.0),
        ("2026-12-01T10:00:00+00:00", 1796119200.0),
        ("2026-12-01T11:00:00+01:00", 1796119200.0),
        ("2026-12-01T10:00:00", 1796119200.0),  # no zone: UTC, as vendors write it
        ("2026-12-01T10:00:00.250000Z", 1796119200.25),
        (1796119200, 1796119200.0),
        ("yesterday", None),
        ("", None),
        (None, None),
        (True, None),
        (-5, None),
    ],
)
def test_timestamps(text: object, expected: float | None) -> None:
    assert timestamp(text) == expected


def test_durations_need_both_ends_in_order() -> None:
    assert duration("2026-12-01T10:00:00Z", "2026-12-01T10:00:02.5Z") == 2.5
    assert duration("2026-12-01T10:00:02Z", "2026-12-01T10:00:00Z") is None
    assert duration("2026-12-01T10:00:00Z", None) is None


def test_seconds_scale_and_refuse_what_is_not_a_count() -> None:
    assert seconds(4902824512, scale=1e-9) == pytest.approx(4.902824512)
    assert seconds(float("nan")) is None and seconds("3") is None and seconds(-1) is None
