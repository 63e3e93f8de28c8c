"""Timing and statistics shared by every benchmark: summaries, ratios, interleaved rounds.

Samples are plain lists of floats in the unit the benchmark states (seconds for latencies,
tasks per second for throughput). A *ratio* is always ours / theirs of the medians of samples
taken in the same run, with a bootstrap 95% interval so that a reader can tell noise from a
difference.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "alternating",
    "difference",
    "percentile",
    "ratio",
    "summarize",
    "time_call",
]

BOOTSTRAP_RESAMPLES = 1000


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks."""
    if not samples:
        raise ValueError("percentile of no samples: run the benchmark at least once")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """``{n, median, p90, min, max, mean}`` of ``samples`` (same unit as the samples)."""
    return {
        "n": len(samples),
        "median": statistics.median(samples),
        "p90": percentile(samples, 90),
        "min": min(samples),
        "max": max(samples),
        "mean": statistics.fmean(samples),
    }


def ratio(ours: Sequence[float], theirs: Sequence[float], *, seed: int = 0) -> dict[str, float]:
    """Median(ours) / median(theirs), with a bootstrap 95% interval of that ratio.

    The bootstrap resamples both lists independently; it is seeded so that a report is stable
    for the same samples.
    """
    return _bootstrap(ours, theirs, lambda a, b: a / b, seed)


def difference(
    ours: Sequence[float], theirs: Sequence[float], *, seed: int = 0
) -> dict[str, float]:
    """Median(ours) - median(theirs), with a bootstrap 95% interval, as :func:`ratio`."""
    return _bootstrap(ours, theirs, lambda a, b: a - b, seed)


def _bootstrap(
    ours: Sequence[float],
    theirs: Sequence[float],
    compare: Callable[[float, float], float],
    seed: int,
) -> dict[str, float]:
    point = compare(statistics.median(ours), statistics.median(theirs))
    rng = random.Random(seed)
    draws = sorted(
        compare(
            statistics.median(rng.choices(ours, k=len(ours))),
            statistics.median(rng.choices(theirs, k=len(theirs))),
        )
        for _ in range(BOOTSTRAP_RESAMPLES)
    )
    return {"median": point, "low": percentile(draws, 2.5), "high": percentile(draws, 97.5)}


def time_call(function: Callable[[], object]) -> float:
    """Wall-clock seconds one call of ``function`` takes."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def alternating(rounds: int, names: Sequence[str]) -> list[list[str]]:
    """The order to run ``names`` in, per round: rotated each round, so that no side always
    runs first (the machine's drift and noise are shared evenly)."""
    count = len(names)
    return [[names[(start + i) % count] for i in range(count)] for start in range(rounds)]
