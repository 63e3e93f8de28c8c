"""What a backend provides to run the conformance suite (see README.md in this folder)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from qrmi.errors import QrmiError
from qrmi.models import Payload, TaskStatus
from qrmi.protocol import QuantumResourceProtocol


def _nothing() -> None:
    return None


@dataclass
class BackendHarness:
    """Everything the suite needs to drive one backend.

    Attributes:
        make_resource: a fresh ``QuantumResource`` for the backend (called once per test).
        quick_payload: a payload the backend completes within ``timeout`` seconds.
        slow_payload: a payload that stays non-final for several seconds (long enough to
            observe it and cancel it), and stops promptly when cancelled.
        unsupported_payload: a payload of a variant the backend does not take.
        concurrency: how many slow tasks run at once before the next one is ``Queued``;
            None when the backend cannot show a queued state (the queued-cancel test is
            skipped).
        timeout: deadline of every wait, in seconds.
        check_result: optional extra check of a completed quick task's result text.
        teardown: called once after the suite ran for this backend.
    """

    make_resource: Callable[[], QuantumResourceProtocol]
    quick_payload: Callable[[], Payload]
    slow_payload: Callable[[], Payload]
    unsupported_payload: Callable[[], Payload]
    concurrency: int | None = None
    timeout: float = 60.0
    check_result: Callable[[str], None] | None = None
    teardown: Callable[[], None] = field(default=_nothing)


def wait_for_status(
    resource: QuantumResourceProtocol,
    task_id: str,
    wanted: Callable[[TaskStatus], bool],
    timeout: float,
) -> TaskStatus:
    """Poll ``task_status`` until ``wanted(status)``; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        status = resource.task_status(task_id)
        if wanted(status):
            return status
        if time.monotonic() >= deadline:
            raise AssertionError(f"task {task_id} still {status.name} after {timeout} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


class Tasks:
    """Starts tasks on a resource and stops every unfinished one when the test ends."""

    def __init__(self, resource: QuantumResourceProtocol) -> None:
        self.resource = resource
        self.started: list[str] = []

    def start(self, payload: Payload) -> str:
        task_id = self.resource.task_start(payload)
        self.started.append(task_id)
        return task_id

    def stop_all(self) -> None:
        for task_id in self.started:
            with contextlib.suppress(QrmiError):
                self.resource.task_stop(task_id)
