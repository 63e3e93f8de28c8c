"""Adaptive polling sees a short task end soon after it does (issue 14: time to result)."""

from __future__ import annotations

import itertools

import pytest

from qrmi.backends.base import FIRST_POLL_SECONDS, poll_intervals


def poll_times(horizon: float) -> list[float]:
    """When the polls happen (seconds after the first one), up to ``horizon``."""
    times = [0.0]
    for delay in itertools.islice(poll_intervals(), 200):
        times.append(times[-1] + delay)
        if times[-1] > horizon:
            break
    return times


@pytest.mark.parametrize("ends_at", [0.01, 0.03, 0.07, 0.15, 0.4, 0.9])
def test_a_task_is_seen_final_at_most_a_quarter_of_its_run_time_late(ends_at: float) -> None:
    seen_at = next(t for t in poll_times(10.0) if t >= ends_at)
    assert seen_at <= ends_at * 1.25 + FIRST_POLL_SECONDS


def test_polls_still_slow_down_to_once_a_second() -> None:
    delays = list(itertools.islice(poll_intervals(), 60))
    assert delays[-1] == 1.0
    assert sum(1 for t in poll_times(1.0) if t <= 1.0) < 30


@pytest.mark.parametrize("ends_at", [0.001, 0.012, 0.033, 0.039])
def test_a_task_shorter_than_the_steady_polls_is_seen_within_one_first_delay(
    ends_at: float,
) -> None:
    seen_at = next(t for t in poll_times(1.0) if t >= ends_at)
    assert seen_at <= ends_at + FIRST_POLL_SECONDS
