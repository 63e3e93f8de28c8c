"""Quotas: limits an administrator sets per user, account and QPU, in ``qrmi_config.json``.

The optional top-level ``"quotas"`` key lists rules::

    "quotas": [
        {"qpu": "ibm_fez", "user": "alice", "qpu_seconds": 3600, "period": "month"},
        {"qpu": "*", "account": "*", "qpu_seconds": 36000, "period": "week"},
        {"qpu": "*", "user": "*", "tasks_per_job": 500, "concurrent_tasks_per_job": 8}
    ]

A rule names one QPU (or ``"*"``: each QPU, counted separately) and one principal, a ``user``
or an ``account`` (``"*"``: each user, or each account, counted separately). Its limits:

* ``qpu_seconds`` per ``period``: the QPU seconds (the vendor's billed time where it reports
  one, else the running time) of the principal's tasks submitted since the period began. The
  periods are calendar periods in UTC: ``day`` (from 00:00), ``week`` (from Monday 00:00),
  ``month`` (from the 1st, 00:00). A principal that has used the quota or more is refused new
  tasks until the next period begins (a task's cost is known only once it ends, so the task that
  crosses the line runs to its end);
* ``tasks_per_job``: tasks one job may start on the QPU, in all;
* ``concurrent_tasks_per_job``: tasks of one job on the QPU not yet finished (queued at the
  vendor or in the gateway, or running);
* ``weight`` (not a limit): the share of the QPU's lanes the principal's jobs get when tasks
  queue in the gateway (fair sharing, :mod:`qrmi.gateway.dispatch`; default 1).

Every rule that matches a task applies; the first one exceeded refuses it with
:class:`~qrmi.errors.QuotaExceededError`. This module holds the rules, their validation and the
arithmetic; the gateway service asks the store for the usage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "PERIODS",
    "QuotaRule",
    "Refusal",
    "Usage",
    "concurrent_refusal",
    "job_weight",
    "over_quota",
    "parse_quotas",
    "period_bounds",
    "qpu_seconds_refusal",
    "tasks_refusal",
]

#: The periods a ``qpu_seconds`` quota may be counted over (calendar periods, UTC).
PERIODS = ("day", "week", "month")
ANY = "*"
_KEYS = (
    "qpu",
    "user",
    "account",
    "qpu_seconds",
    "period",
    "tasks_per_job",
    "concurrent_tasks_per_job",
    "weight",
)
_LIMITS = ("qpu_seconds", "tasks_per_job", "concurrent_tasks_per_job", "weight")
#: Slurm user and account names (the gateway accepts no others in its records).
_PRINCIPAL = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
_MAX_WEIGHT = 1000.0
_MAX_RULES = 10_000


@dataclass(frozen=True)
class QuotaRule:
    """One entry of ``"quotas"``; ``index`` is its position in the list (for messages)."""

    index: int
    qpu: str = ANY
    user: str | None = None
    account: str | None = None
    qpu_seconds: float | None = None
    period: str | None = None
    tasks_per_job: int | None = None
    concurrent_tasks_per_job: int | None = None
    weight: float | None = None

    @property
    def kind(self) -> str:
        """``user`` or ``account``: whom the rule counts."""
        return "user" if self.user is not None else "account"

    @property
    def name(self) -> str:
        """The user or account name the rule names, or ``*``."""
        return self.user if self.user is not None else str(self.account)

    def principal(self, user: str | None, account: str | None) -> str | None:
        """The name this rule counts a job of ``user`` in ``account`` under, or ``None`` when
        the rule does not apply to it."""
        value = user if self.kind == "user" else account
        if value is None or self.name not in (ANY, value):
            return None
        return value

    def applies(self, qpu: str, user: str | None, account: str | None) -> bool:
        """True when the rule covers a task of ``user`` in ``account`` on ``qpu``."""
        return self.qpu in (ANY, qpu) and self.principal(user, account) is not None

    def describe(self) -> str:
        """``quotas[2] (user alice, QPU ibm_fez)``, for messages."""
        who = f"every {self.kind}" if self.name == ANY else f"{self.kind} {self.name}"
        where = "every QPU" if self.qpu == ANY else f"QPU {self.qpu}"
        return f"quotas[{self.index}] ({who}, {where})"


@dataclass(frozen=True)
class Refusal:
    """Why a task is refused: the limit, the usage, the quota and when it resets."""

    rule: QuotaRule
    limit: str
    qpu: str
    principal: str
    used: float
    quota: float
    resets: float | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The refusal as JSON (the admin route and ``qrmi slurm sync`` read it)."""
        return {
            "qpu": self.qpu,
            "kind": self.rule.kind,
            "name": self.principal,
            "limit": self.limit,
            "used": round(self.used, 6),
            "quota": self.quota,
            "period": self.rule.period,
            "resets": self.resets,
            "rule": self.rule.index,
            "reason": self.message,
        }


@dataclass(frozen=True)
class Usage:
    """QPU seconds of one user and account on one QPU since some time."""

    qpu: str
    user: str | None
    account: str | None
    seconds: float


# ----- the config key -------------------------------------------------------------------------


def parse_quotas(data: Any, qpus: Iterable[str], problems: list[str]) -> tuple[QuotaRule, ...]:
    """The rules of the config's ``"quotas"`` value; each problem found is appended to
    ``problems`` (a message naming the entry, what is wrong and the fix)."""
    if not isinstance(data, list):
        problems.append(
            '"quotas" must be a list of rule objects like {"qpu": "*", "user": '
            '"alice", "qpu_seconds": 3600, "period": "month"}'
        )
        return ()
    if len(data) > _MAX_RULES:
        problems.append(f'"quotas" has {len(data)} rules; at most {_MAX_RULES} are accepted')
        return ()
    known = set(qpus)
    rules = []
    for index, item in enumerate(data):
        rule = _parse_rule(item, index, known, problems)
        if rule is not None:
            rules.append(rule)
    return tuple(rules)


def _parse_rule(item: Any, index: int, qpus: set[str], problems: list[str]) -> QuotaRule | None:
    where = f"quotas[{index}]"
    if not isinstance(item, dict):
        problems.append(f"{where}: must be an object with keys {', '.join(_KEYS)}")
        return None
    before = len(problems)
    for key in item:
        if key not in _KEYS:
            problems.append(f"{where}: unknown key {key!r}; valid keys are {', '.join(_KEYS)}")
    qpu = item.get("qpu", ANY)
    if not isinstance(qpu, str) or (qpu != ANY and qpu not in qpus):
        problems.append(
            f"{where}: 'qpu' {qpu!r} is not a resource of this config; name one of "
            f'{", ".join(sorted(qpus)) or "(none)"}, or "*" for each QPU'
        )
    _check_principal(item, where, problems)
    _check_limits(item, where, problems)
    if len(problems) > before:
        return None
    return QuotaRule(
        index=index,
        qpu=qpu,
        user=item.get("user"),
        account=item.get("account"),
        qpu_seconds=_number(item.get("qpu_seconds")),
        period=item.get("period"),
        tasks_per_job=item.get("tasks_per_job"),
        concurrent_tasks_per_job=item.get("concurrent_tasks_per_job"),
        weight=_number(item.get("weight")),
    )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _check_principal(item: dict[str, Any], where: str, problems: list[str]) -> None:
    named = [key for key in ("user", "account") if key in item]
    if len(named) != 1:
        problems.append(
            f'{where}: give exactly one of "user" or "account" (a name, or "*" for each user '
            "or each account counted separately)"
        )
        return
    value = item[named[0]]
    if not isinstance(value, str) or (value != ANY and not _PRINCIPAL.fullmatch(value)):
        problems.append(
            f"{where}: {named[0]} {value!r} must be a Slurm {named[0]} name (1 to 64 letters, "
            "digits, '._@+-') or \"*\""
        )


def _check_limits(item: dict[str, Any], where: str, problems: list[str]) -> None:
    if not any(key in item for key in _LIMITS):
        problems.append(f"{where}: sets no limit; give at least one of {', '.join(_LIMITS)}")
    seconds = item.get("qpu_seconds")
    if seconds is not None and not _positive_number(seconds):
        problems.append(f"{where}: 'qpu_seconds' must be a number of seconds > 0; got {seconds!r}")
    period = item.get("period")
    if ("qpu_seconds" in item) != ("period" in item):
        problems.append(
            f'{where}: "qpu_seconds" and "period" go together: "period" is one of '
            f"{', '.join(PERIODS)} (calendar periods, UTC)"
        )
    elif period is not None and period not in PERIODS:
        problems.append(f"{where}: 'period' {period!r} must be one of {', '.join(PERIODS)}")
    for key in ("tasks_per_job", "concurrent_tasks_per_job"):
        value = item.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            problems.append(f"{where}: {key!r} must be a whole number >= 1; got {value!r}")
    weight = item.get("weight")
    if weight is not None and (not _positive_number(weight) or weight > _MAX_WEIGHT):
        problems.append(f"{where}: 'weight' must be a number > 0 and <= {_MAX_WEIGHT:g}")


def _positive_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


# ----- periods --------------------------------------------------------------------------------


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """``(start, end)`` as Unix times of the calendar ``period`` (UTC) that holds ``now``."""
    moment = datetime.fromtimestamp(now, UTC)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = midnight, midnight + timedelta(days=1)
    elif period == "week":
        start = midnight - timedelta(days=midnight.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = midnight.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")
    return start.timestamp(), end.timestamp()


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


# ----- refusals -------------------------------------------------------------------------------

#: ``used(qpu, kind, name, since)``: QPU seconds of the user or account on the QPU since then.
SecondsUsed = Callable[[str, str, str, float], float]


def qpu_seconds_refusal(
    rules: Sequence[QuotaRule],
    qpu: str,
    user: str | None,
    account: str | None,
    now: float,
    used: SecondsUsed,
) -> Refusal | None:
    """The first ``qpu_seconds`` rule the principal has used up on ``qpu``, or ``None``."""
    for rule in rules:
        if rule.qpu_seconds is None or rule.period is None or not rule.applies(qpu, user, account):
            continue
        name = rule.principal(user, account)
        assert name is not None
        start, end = period_bounds(rule.period, now)
        spent = used(qpu, rule.kind, name, start)
        if spent >= rule.qpu_seconds:
            return _seconds_refusal(rule, qpu, name, spent, end)
    return None


def _seconds_refusal(rule: QuotaRule, qpu: str, name: str, spent: float, end: float) -> Refusal:
    assert rule.qpu_seconds is not None
    message = (
        f"QPU-seconds quota exceeded: {rule.kind} {name} has used {spent:.1f} s of the "
        f"{rule.qpu_seconds:g} s per {rule.period} allowed on QPU {qpu} (qrmi_config.json "
        f"{rule.describe()}); it resets at {_when(end)}"
    )
    return Refusal(rule, "qpu_seconds", qpu, name, spent, rule.qpu_seconds, end, message)


def tasks_refusal(
    rules: Sequence[QuotaRule],
    qpu: str,
    user: str | None,
    account: str | None,
    job_id: str,
    started: int,
) -> Refusal | None:
    """The first ``tasks_per_job`` rule a job that started ``started`` tasks on ``qpu`` has
    reached, or ``None``."""
    for rule in rules:
        limit = rule.tasks_per_job
        if limit is None or started < limit or not rule.applies(qpu, user, account):
            continue
        name = rule.principal(user, account) or ""
        message = (
            f"tasks-per-job quota exceeded: job {job_id} has started {started} task(s) on QPU "
            f"{qpu}, the most allowed per job (qrmi_config.json {rule.describe()}); the limit "
            "holds for the whole job: a new job starts with a fresh count"
        )
        return Refusal(rule, "tasks_per_job", qpu, name, started, limit, None, message)
    return None


def concurrent_refusal(
    rules: Sequence[QuotaRule],
    qpu: str,
    user: str | None,
    account: str | None,
    job_id: str,
    unfinished: int,
) -> Refusal | None:
    """The first ``concurrent_tasks_per_job`` rule a job with ``unfinished`` tasks on ``qpu``
    has reached, or ``None``."""
    for rule in rules:
        limit = rule.concurrent_tasks_per_job
        if limit is None or unfinished < limit or not rule.applies(qpu, user, account):
            continue
        name = rule.principal(user, account) or ""
        message = (
            f"concurrent-tasks quota exceeded: job {job_id} has {unfinished} unfinished task(s) "
            f"on QPU {qpu}, the most allowed at once (qrmi_config.json {rule.describe()}); it "
            "frees up as soon as one of them ends: wait for a task, then start the next"
        )
        return Refusal(
            rule, "concurrent_tasks_per_job", qpu, name, unfinished, limit, None, message
        )
    return None


def over_quota(
    rules: Sequence[QuotaRule],
    qpus: Iterable[str],
    now: float,
    usage_since: Callable[[float], Sequence[Usage]],
) -> list[Refusal]:
    """Every user and account that has used up a ``qpu_seconds`` quota on a QPU now.

    ``usage_since(start)`` gives the QPU seconds per QPU, user and account of the tasks
    submitted since ``start`` (asked once per period)."""
    configured = set(qpus)
    by_period: dict[str, Sequence[Usage]] = {}
    found: dict[tuple[str, str, str], Refusal] = {}
    for rule in rules:
        if rule.qpu_seconds is None or rule.period is None:
            continue
        start, end = period_bounds(rule.period, now)
        if rule.period not in by_period:
            by_period[rule.period] = usage_since(start)
        totals: dict[tuple[str, str], float] = {}
        for row in by_period[rule.period]:
            name = rule.principal(row.user, row.account)
            if name is not None and rule.qpu in (ANY, row.qpu) and row.qpu in configured:
                totals[(row.qpu, name)] = totals.get((row.qpu, name), 0.0) + row.seconds
        for (qpu, name), spent in sorted(totals.items()):
            key = (qpu, rule.kind, name)
            if spent >= rule.qpu_seconds and key not in found:
                found[key] = _seconds_refusal(rule, qpu, name, spent, end)
    return list(found.values())


def job_weight(
    rules: Sequence[QuotaRule], qpu: str, user: str | None, account: str | None
) -> float:
    """The fair-share weight of a job's tasks on ``qpu``: the largest ``weight`` of the rules
    that match it, 1 when none sets one."""
    weights = [
        rule.weight
        for rule in rules
        if rule.weight is not None and rule.applies(qpu, user, account)
    ]
    return max(weights, default=1.0)
