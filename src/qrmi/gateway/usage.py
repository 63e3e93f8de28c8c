"""Accounting facts the gateway records about each task: what was submitted and what it cost.

The gateway writes a :class:`~qrmi.gateway.store.UsageRecord` when a task starts (so a killed
job loses nothing) and completes it when the task is seen final: by a status call, a wait, the
job's end, or the reaper's sweep over tasks that outlived their job.

The reports of ``qrmi accounting`` are computed here from those records: totals per user,
account, partition or QPU (:func:`usage_totals`) and QPU seconds per account over time
(:func:`usage_series`, drawn by :func:`plot_usage`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from qrmi.errors import ConfigError, InvalidInputError
from qrmi.models import Payload, TaskUsage

if TYPE_CHECKING:
    from qrmi.gateway.store import UsageRecord

__all__ = [
    "GROUP_FIELDS",
    "PLOT_FORMATS",
    "PayloadFacts",
    "UsageSeries",
    "UsageTotal",
    "payload_facts",
    "plot_usage",
    "task_cost",
    "usage_series",
    "usage_totals",
]

#: What totals can be grouped by, and the usage record field each name reads.
GROUP_FIELDS = {"user": "user_name", "account": "account", "partition": "partition", "qpu": "qpu"}

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


# ----- reports -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageTotal:
    """The tasks of one group (``key``: one value per grouping field, ``None`` when unknown).

    ``qpu_seconds`` sums the costs that are known; ``unpriced`` counts the tasks whose cost is
    not (still running, or ended before they ran); ``shots`` sums the shots the payloads state.
    """

    key: tuple[str | None, ...]
    tasks: int
    qpu_seconds: float
    unpriced: int
    shots: int
    input_bytes: int
    result_bytes: int


def usage_totals(records: Iterable[UsageRecord], by: Sequence[str]) -> list[UsageTotal]:
    """Totals of ``records`` per distinct value of the ``by`` fields (names of
    :data:`GROUP_FIELDS`), sorted by key with unknown values last."""
    for name in by:
        if name not in GROUP_FIELDS:
            raise InvalidInputError(
                f"cannot group by {name!r}; choose among {', '.join(GROUP_FIELDS)}"
            )
    groups: dict[tuple[str | None, ...], list[UsageRecord]] = {}
    for record in records:
        key = tuple(getattr(record, GROUP_FIELDS[name]) for name in by)
        groups.setdefault(key, []).append(record)
    totals = [_total(key, members) for key, members in groups.items()]
    return sorted(totals, key=lambda total: [(value is None, value or "") for value in total.key])


def _total(key: tuple[str | None, ...], records: list[UsageRecord]) -> UsageTotal:
    return UsageTotal(
        key=key,
        tasks=len(records),
        qpu_seconds=math.fsum(r.quantum_seconds for r in records if r.quantum_seconds is not None),
        unpriced=sum(1 for r in records if r.quantum_seconds is None),
        shots=sum(r.shots or 0 for r in records),
        input_bytes=sum(r.input_bytes for r in records),
        result_bytes=sum(r.result_bytes or 0 for r in records),
    )


@dataclass(frozen=True)
class UsageSeries:
    """QPU seconds per account in consecutive buckets of ``bucket_seconds`` from ``start``."""

    start: float
    bucket_seconds: float
    buckets: int
    seconds: dict[str, list[float]]


def usage_series(
    records: Iterable[UsageRecord], start: float, end: float, *, max_buckets: int = 60
) -> UsageSeries:
    """QPU seconds per account over ``[start, end)``: a day per bucket, or an hour when the
    window is two days or less (at most ``max_buckets`` buckets: longer ones beyond that).

    A task counts in the bucket where it started (submitted, if it never ran); tasks of no
    account are under ``"(none)"``.
    """
    span = max(end - start, 1.0)
    bucket = 3600.0 if span <= 2 * 86400 else 86400.0
    bucket = max(bucket, math.ceil(span / max_buckets / bucket) * bucket)
    count = max(1, math.ceil(span / bucket))
    seconds: dict[str, list[float]] = {}
    for record in records:
        if record.quantum_seconds is None:
            continue
        moment = record.started if record.started is not None else record.submitted
        index = int((moment - start) // bucket)
        if 0 <= index < count:
            row = seconds.setdefault(record.account or "(none)", [0.0] * count)
            row[index] += record.quantum_seconds
    return UsageSeries(start, bucket, count, dict(sorted(seconds.items())))


#: Image formats :func:`plot_usage` writes, by file suffix.
PLOT_FORMATS = {".png": "png", ".svg": "svg"}


def plot_usage(series: UsageSeries, path: str | Path, *, title: str = "") -> Path:
    """Draw ``series`` as stacked bars (QPU seconds per account over time) into ``path``,
    a ``.png`` or ``.svg`` file; returns the path.

    Raises:
        InvalidInputError: the file's suffix is neither ``.png`` nor ``.svg``.
        ConfigError: matplotlib is not installed (``pip install 'pyqrmi[accounting]'``).
    """
    target = Path(path)
    image_format = PLOT_FORMATS.get(target.suffix.lower())
    if image_format is None:
        raise InvalidInputError(
            f"cannot draw a plot into {str(target)!r}: name a .png or .svg file"
        )
    figure = _figure()
    axes = figure.subplots()
    _draw(axes, series)
    axes.set_title(title or "QPU seconds per account")
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(target, format=image_format)
    return target


def _draw(axes: Any, series: UsageSeries) -> None:
    from datetime import datetime

    lefts = [
        datetime.fromtimestamp(series.start + i * series.bucket_seconds)
        for i in range(series.buckets)
    ]
    width = series.bucket_seconds / 86400 * 0.9  # matplotlib dates count in days
    bottoms = [0.0] * series.buckets
    for account, values in series.seconds.items():
        axes.bar(lefts, values, width=width, bottom=bottoms, align="edge", label=account)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    axes.set_ylabel("QPU seconds")
    axes.set_xlabel("day" if series.bucket_seconds >= 86400 else "hour")
    if series.seconds:
        axes.legend(title="account")
    else:
        axes.text(0.5, 0.5, "no QPU time in this window", transform=axes.transAxes, ha="center")


def _figure() -> Any:
    """A matplotlib figure drawn off-screen (no pyplot: no global state, safe in threads)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(
            "drawing a plot needs matplotlib: pip install 'pyqrmi[accounting]'"
        ) from None
    return Figure(figsize=(10, 5))
