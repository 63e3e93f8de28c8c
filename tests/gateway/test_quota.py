"""Quotas: the config's rules, their arithmetic, and the gateway refusing tasks over them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.conftest import bell, emulator_config
from qrmi.backends.local_emulator.store import TaskStore
from qrmi.backends.local_emulator.worker import stop_worker
from qrmi.config import Config
from qrmi.errors import ConfigError, QuotaExceededError
from qrmi.gateway import quota
from qrmi.gateway.auth import hash_token
from qrmi.gateway.client import admin_request, start_job
from qrmi.gateway.quota import QuotaRule, Usage, period_bounds
from qrmi.gateway.store import Store, UsageRecord
from qrmi.gateway.testing import LocalGateway
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's")


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# ----- the arithmetic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("day", "2026-12-01T07:30:00", "2026-12-01T00:00:00", "2026-12-02T00:00:00"),
        ("week", "2026-12-03T23:59:59", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),
        ("month", "2026-12-31T12:00:00", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("month", "2027-02-01T00:00:00", "2027-02-01T00:00:00", "2027-03-01T00:00:00"),
    ],
)
def test_periods_are_calendar_periods_in_utc(period: str, now: str, start: str, end: str) -> None:
    assert period_bounds(period, _utc(now)) == (_utc(start), _utc(end))


def test_a_rule_for_each_user_counts_each_user_separately() -> None:
    rules = [QuotaRule(0, qpu="*", user="*", qpu_seconds=100.0, period="day")]
    spent = {("fez", "alice"): 150.0, ("fez", "bob"): 50.0, ("torino", "alice"): 10.0}

    def used(qpu: str, kind: str, name: str, since: float) -> float:
        assert kind == "user"
        return spent.get((qpu, name), 0.0)

    now = _utc("2026-12-01T10:00:00")
    refusal = quota.qpu_seconds_refusal(rules, "fez", "alice", "physics", now, used)
    assert refusal is not None
    assert (refusal.used, refusal.quota, refusal.resets) == (150.0, 100.0, _utc("2026-12-02"))
    assert "user alice has used 150.0 s of the 100 s per day allowed on QPU fez" in refusal.message
    assert "resets at 2026-12-02 00:00 UTC" in refusal.message
    assert quota.qpu_seconds_refusal(rules, "fez", "bob", None, now, used) is None
    assert quota.qpu_seconds_refusal(rules, "torino", "alice", None, now, used) is None
    assert quota.qpu_seconds_refusal(rules, "fez", None, "physics", now, used) is None


def test_per_job_limits_are_reached_at_the_limit_not_before() -> None:
    rules = [QuotaRule(3, qpu="fez", account="physics", tasks_per_job=5)]
    assert quota.tasks_refusal(rules, "fez", "alice", "physics", "12", 4) is None
    refusal = quota.tasks_refusal(rules, "fez", "alice", "physics", "12", 5)
    assert refusal is not None and "job 12 has started 5 task(s) on QPU fez" in refusal.message
    assert "quotas[3] (account physics, QPU fez)" in refusal.message
    assert quota.tasks_refusal(rules, "fez", "alice", "chemistry", "12", 50) is None
    concurrent = [QuotaRule(0, user="alice", concurrent_tasks_per_job=2)]
    assert quota.concurrent_refusal(concurrent, "fez", "alice", None, "12", 1) is None
    assert quota.concurrent_refusal(concurrent, "fez", "alice", None, "12", 2) is not None


def test_over_quota_lists_each_principal_and_qpu_once() -> None:
    rules = [
        QuotaRule(0, user="*", qpu_seconds=100.0, period="month"),
        QuotaRule(1, account="physics", qpu_seconds=60.0, period="day"),
    ]
    rows = [
        Usage("fez", "alice", "physics", 70.0),
        Usage("fez", "alice", "chemistry", 40.0),
        Usage("fez", "bob", "physics", 10.0),
        Usage("gone", "carol", "x", 500.0),  # a QPU no longer configured
    ]
    asked: list[float] = []

    def usage_since(start: float) -> list[Usage]:
        asked.append(start)
        return rows

    over = quota.over_quota(rules, ["fez"], _utc("2026-12-09T08:00:00"), usage_since)

    assert [(r.qpu, r.rule.kind, r.principal, r.used) for r in over] == [
        ("fez", "user", "alice", 110.0),
        ("fez", "account", "physics", 80.0),
    ]
    assert asked == [_utc("2026-12-01"), _utc("2026-12-09")]  # once per period


def test_a_jobs_weight_is_the_largest_of_its_rules() -> None:
    rules = [QuotaRule(0, user="*", weight=2.0), QuotaRule(1, account="vip", weight=5.0)]
    assert quota.job_weight(rules, "fez", "alice", "vip") == 5.0
    assert quota.job_weight(rules, "fez", "alice", "physics") == 2.0
    assert quota.job_weight([], "fez", "alice", "vip") == 1.0


# ----- the config key --------------------------------------------------------------------------

RESOURCES = [{"name": "fez", "type": "local-emulator", "environment": {}}]


def _config(quotas: Any) -> Config:
    return Config.from_dict({"resources": RESOURCES, "quotas": quotas})


def test_the_config_reads_quota_rules() -> None:
    config = _config(
        [
            {"qpu": "fez", "user": "alice", "qpu_seconds": 3600, "period": "month"},
            {"account": "*", "tasks_per_job": 500, "concurrent_tasks_per_job": 8},
        ]
    )
    assert config.quotas == (
        QuotaRule(0, qpu="fez", user="alice", qpu_seconds=3600.0, period="month"),
        QuotaRule(1, account="*", tasks_per_job=500, concurrent_tasks_per_job=8),
    )
    assert Config.from_dict({"resources": RESOURCES}).quotas == ()


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"user": "a", "qpu_seconds": 1, "period": "year"}, "'period' 'year' must be one of"),
        ({"user": "a", "qpu_seconds": 10}, '"qpu_seconds" and "period" go together'),
        ({"user": "a", "account": "b", "tasks_per_job": 1}, 'exactly one of "user" or "account"'),
        ({"tasks_per_job": 1}, 'exactly one of "user" or "account"'),
        ({"user": "a"}, "sets no limit"),
        ({"user": "a", "qpu": "nope", "tasks_per_job": 1}, "'qpu' 'nope' is not a resource"),
        ({"user": "a;b", "tasks_per_job": 1}, "must be a Slurm user name"),
        ({"user": "a", "tasks_per_job": 0}, "'tasks_per_job' must be a whole number >= 1"),
        ({"user": "a", "concurrent_tasks_per_job": True}, "must be a whole number >= 1"),
        ({"user": "a", "qpu_seconds": -5, "period": "day"}, "'qpu_seconds' must be a number"),
        ({"user": "a", "weight": 0}, "'weight' must be a number > 0"),
        ({"user": "a", "tasks_per_job": 1, "limit": 2}, "unknown key 'limit'"),
        ("alice", "quotas[0]: must be an object"),
    ],
)
def test_malformed_quota_rules_are_refused_with_the_fix(rule: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config([rule])
    assert message in str(caught.value)
    assert "quotas[0]" in str(caught.value)


def test_quotas_must_be_a_list_and_other_top_level_keys_stay_refused() -> None:
    with pytest.raises(ConfigError, match='"quotas" must be a list'):
        _config({"user": "a"})
    with pytest.raises(ConfigError, match="'quota': unknown key; the top-level keys are"):
        Config.from_dict({"resources": RESOURCES, "quota": []})


# ----- the gateway -----------------------------------------------------------------------------

ALICE = {"user": "alice", "account": "physics", "partition": "qpu"}
BOB = {"user": "bob", "account": "chemistry", "partition": "qpu"}


@pytest.fixture
def quota_gateway(tmp_path: Path, munge: MungeDaemon) -> Iterator[Any]:
    """Gateways with these quotas over emulators of their own (4 lanes: tasks do not wait for
    each other at the emulator)."""
    started: list[LocalGateway] = []

    def make(quotas: list[dict[str, Any]], **options: Any) -> LocalGateway:
        config = {**emulator_config(tmp_path / "emulators", lanes=4), "quotas": quotas}
        gateway = LocalGateway(
            config, tmp_path / f"gw{len(started)}", munge_socket=munge.socket, **options
        )
        started.append(gateway.start())
        return gateway

    try:
        yield make
    finally:
        for gateway in started:
            gateway.stop()
        for name in ("emu", "emu2"):
            stop_worker(tmp_path / "emulators" / name)


def _job(
    gateway: LocalGateway, munge: MungeDaemon, job_id: str, who: dict[str, str]
) -> QuantumResource:
    _, variables = start_job(
        gateway.url, job_id, 1000, ["emu"], 3600, munge_socket=munge.socket, accounting=who
    )
    return QuantumResource("emu", "local-emulator", environ=variables)


def _spent(store: Store, task_id: str, who: dict[str, str], seconds: float, when: float) -> None:
    """A finished task of ``who`` on emu that cost ``seconds``, submitted at ``when``."""
    store.add_usage(
        UsageRecord(
            qpu="emu",
            task_id=task_id,
            slurm_job_id="1",
            uid=1000,
            user_name=who["user"],
            account=who["account"],
            partition="qpu",
            qpu_type="local-emulator",
            payload_kind="QiskitPrimitive",
            program="sampler",
            shots=100,
            input_bytes=10,
            submitted=when,
        )
    )
    store.end_usage(
        "emu",
        task_id,
        state="Completed",
        ended=when + 1,
        quantum_seconds=seconds,
        usage_source="vendor",
    )


@root_only
def test_a_user_over_a_qpu_seconds_quota_is_refused_until_the_period_resets(
    quota_gateway: Any, munge: MungeDaemon
) -> None:
    rule = {"qpu": "emu", "user": "*", "qpu_seconds": 3600, "period": "month"}
    gateway = quota_gateway([rule])
    assert gateway.service is not None
    store = gateway.service.store
    this_month, _ = period_bounds("month", store.clock())
    _spent(store, "old", ALICE, 9000.0, this_month - 10)  # last month: does not count
    _spent(store, "a1", ALICE, 3000.0, this_month + 1)
    alice = _job(gateway, munge, "401", ALICE)
    task = alice.task_start(bell())  # 3000 s of 3600: still allowed
    assert alice.task_wait(task, 60) == TaskStatus.Completed

    _spent(store, "a2", ALICE, 700.0, this_month + 2)
    with pytest.raises(QuotaExceededError) as refused:
        alice.task_start(bell())

    message = str(refused.value)
    resets = datetime.fromtimestamp(period_bounds("month", store.clock())[1], UTC)
    (ran,) = store.usage(slurm_job_id="401")
    spent = 3700.0 + (ran.quantum_seconds or 0.0)
    assert (
        f"user alice has used {spent:.1f} s of the 3600 s per month allowed on QPU emu" in message
    )
    assert f"resets at {resets:%Y-%m-%d} 00:00 UTC" in message
    bob = _job(gateway, munge, "402", BOB)
    assert bob.task_wait(bob.task_start(bell()), 60) == TaskStatus.Completed
    assert [r.task_id for r in store.usage(slurm_job_id="401")] == [task]  # refused: no record


@root_only
def test_an_account_quota_counts_every_user_of_the_account(
    quota_gateway: Any, munge: MungeDaemon
) -> None:
    gateway = quota_gateway([{"account": "physics", "qpu_seconds": 60, "period": "day"}])
    assert gateway.service is not None
    _spent(gateway.service.store, "b1", {**BOB, "account": "physics"}, 61.0, time.time())
    alice = _job(gateway, munge, "403", ALICE)
    with pytest.raises(QuotaExceededError, match="account physics has used 61.0 s of the 60 s"):
        alice.task_start(bell())


@root_only
def test_a_job_may_start_only_tasks_per_job_tasks(quota_gateway: Any, munge: MungeDaemon) -> None:
    gateway = quota_gateway([{"user": "alice", "tasks_per_job": 2}])
    alice = _job(gateway, munge, "404", ALICE)
    for _ in range(2):
        alice.task_wait(alice.task_start(bell()), 60)
    with pytest.raises(QuotaExceededError, match="job 404 has started 2 task"):
        alice.task_start(bell())
    again = _job(gateway, munge, "405", ALICE)  # a new job counts afresh
    assert again.task_wait(again.task_start(bell()), 60) == TaskStatus.Completed


@root_only
def test_unfinished_tasks_per_job_are_limited_and_free_up_when_one_ends(
    quota_gateway: Any, munge: MungeDaemon, tmp_path: Path
) -> None:
    gateway = quota_gateway([{"user": "*", "concurrent_tasks_per_job": 2}])
    alice = _job(gateway, munge, "406", ALICE)
    long_one = alice.task_start(bell(seconds=60))
    short_one = alice.task_start(bell())
    bob = _job(gateway, munge, "407", BOB)
    bob_task = bob.task_start(bell())  # another job: its own count

    # The short task ends unseen by the gateway: it asks the vendor before refusing.
    assert bob.task_wait(bob_task, 60) == TaskStatus.Completed
    emulator = TaskStore(tmp_path / "emulators" / "emu")
    deadline = time.monotonic() + 60
    while emulator.status(short_one) != "Completed":
        assert time.monotonic() < deadline, emulator.status(short_one)
        time.sleep(0.05)
    third = alice.task_start(bell(seconds=60))  # one of two has ended
    with pytest.raises(QuotaExceededError) as refused:
        alice.task_start(bell())
    assert "job 406 has 2 unfinished task(s) on QPU emu" in str(refused.value)
    alice.task_stop(long_one)
    alice.task_stop(third)
    assert alice.task_wait(alice.task_start(bell()), 60) == TaskStatus.Completed


@root_only
def test_the_admin_route_lists_who_is_over_quota(quota_gateway: Any, munge: MungeDaemon) -> None:
    token = "admin-token-for-quota-tests"
    gateway = quota_gateway(
        [{"qpu": "*", "user": "*", "qpu_seconds": 100, "period": "week"}],
        admin_hashes=frozenset({hash_token(token)}),
    )
    assert gateway.service is not None
    _spent(gateway.service.store, "c1", ALICE, 150.0, time.time())
    _spent(gateway.service.store, "c2", BOB, 20.0, time.time())

    answer = admin_request("GET", gateway.url, "/v1/admin/quota", munge_socket=munge.socket)
    with_token = admin_request("GET", gateway.url, "/v1/admin/quota", admin_token=token)

    assert answer == with_token
    (entry,) = answer["over"]
    assert (entry["qpu"], entry["kind"], entry["name"], entry["used"]) == (
        "emu",
        "user",
        "alice",
        150.0,
    )
    assert entry["limit"] == "qpu_seconds" and "150.0 s of the 100 s per week" in entry["reason"]
    assert httpx.get(f"{gateway.url}/v1/admin/quota").status_code in (401, 403)
