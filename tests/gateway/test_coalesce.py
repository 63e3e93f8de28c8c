"""Identical concurrent vendor calls share one execution; nothing is cached afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from qrmi.errors import ServiceError
from qrmi.gateway.coalesce import Coalescer


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_concurrent_identical_calls_run_once_and_all_get_the_answer() -> None:
    coalescer = Coalescer()
    calls = 0
    inside, release = threading.Event(), threading.Event()

    def slow() -> str:
        nonlocal calls
        calls += 1
        inside.set()
        release.wait(10)
        return "Running"

    with ThreadPoolExecutor(9) as pool:
        leader = pool.submit(coalescer.run, "task-1", slow)
        assert inside.wait(10)
        followers = [pool.submit(coalescer.run, "task-1", slow) for _ in range(7)]
        other = pool.submit(coalescer.run, "task-2", lambda: "Completed")
        assert other.result(10) == "Completed"  # another key does not wait
        wait_until(lambda: coalescer.joined("task-1") == 7)
        release.set()
        answers = [leader.result(10)] + [f.result(10) for f in followers]

    assert answers == ["Running"] * 8
    assert calls == 1
    assert coalescer.run("task-1", lambda: "Completed") == "Completed"  # nothing cached


def test_the_calls_error_reaches_every_waiting_caller() -> None:
    coalescer = Coalescer()
    inside, release = threading.Event(), threading.Event()

    def failing() -> str:
        inside.set()
        release.wait(10)
        raise ServiceError("vendor answered 500")

    with ThreadPoolExecutor(4) as pool:
        leader = pool.submit(coalescer.run, "k", failing)
        assert inside.wait(10)
        follower = pool.submit(coalescer.run, "k", failing)
        wait_until(lambda: coalescer.joined("k") == 1)
        release.set()
        for future in (leader, follower):
            with pytest.raises(ServiceError, match="vendor answered 500"):
                future.result(10)
