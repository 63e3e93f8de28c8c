"""The adapter author's base class.

A backend writes only its vendor primitives (``submit``, ``cancel``, ``fetch_state`` ...). This
class owns everything common: payload checks, mapping vendor states to :class:`TaskStatus`
through the backend's ``STATE_MAP`` table, refusing results of unfinished tasks, idempotent
stops, and waiting with adaptive polling under a deadline. Clock and sleeper are injected so
that waits can be tested without real time passing.
"""

from __future__ import annotations

import abc
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar

from qrmi._uuid import uuid4_text
from qrmi.config import Settings
from qrmi.errors import TaskNotReadyError, TaskTimeoutError, UnsupportedPayloadError
from qrmi.models import (
    Payload,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    Target,
    TaskResult,
    TaskStatus,
    TaskUsage,
)

__all__ = ["Backend", "Clock", "Sleeper", "dump_json", "poll_intervals"]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleeper = Callable[[float], None]

#: First poll delay, growth and cap of the adaptive polling used by :meth:`Backend.wait`:
#: every ``first`` seconds for :data:`STEADY_POLLS` polls (a short task is seen final at most
#: ``first`` late), then growing by :data:`POLL_GROWTH` (at most a fifth of its run time late;
#: 1.5 would be a third) up to the cap.
FIRST_POLL_SECONDS = 0.005
STEADY_POLLS = 8
POLL_GROWTH = 1.25
MAX_POLL_SECONDS = 1.0


def poll_intervals(
    first: float = FIRST_POLL_SECONDS, cap: float = MAX_POLL_SECONDS
) -> Iterator[float]:
    """Delays between polls: ``first`` for :data:`STEADY_POLLS` polls, then growing by
    :data:`POLL_GROWTH`, never above ``cap``."""
    delay = min(first, cap)
    for _ in range(STEADY_POLLS - 1):
        yield delay
    while True:
        yield delay
        delay = min(cap, delay * POLL_GROWTH)


class Backend(abc.ABC):
    """Base class of every backend; subclasses implement the abstract primitives.

    Class attributes a subclass sets:

    * ``RESOURCE_TYPE``: the :class:`ResourceType` (or third-party type string) it serves;
    * ``PAYLOADS``: the payload variants ``task_start`` accepts;
    * ``STATE_MAP``: vendor task state (as returned by :meth:`fetch_state`) to
      :class:`TaskStatus`. A state missing from the table is logged and treated as
      ``Running`` so that waits continue until their deadline instead of failing early.
    """

    RESOURCE_TYPE: ClassVar[ResourceType | str]
    PAYLOADS: ClassVar[tuple[type[Payload], ...]] = ()
    STATE_MAP: ClassVar[Mapping[str, TaskStatus]] = {}

    def __init__(
        self,
        resource_id: str,
        settings: Settings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleeper = time.sleep,
    ) -> None:
        self.resource_id = resource_id
        self.settings = settings
        self.clock = clock
        self.sleep = sleep

    # ----- primitives a backend implements -------------------------------------------------

    @abc.abstractmethod
    def fetch_status(self) -> ResourceStatus:
        """Ask the vendor whether the resource is online, busy, and how many slots it has."""

    @abc.abstractmethod
    def submit(self, payload: Payload) -> str:
        """Submit an already type-checked payload; return the task id without waiting."""

    @abc.abstractmethod
    def cancel(self, task_id: str) -> None:
        """Cancel a task that is not final. Must not delete a result."""

    @abc.abstractmethod
    def fetch_state(self, task_id: str) -> str:
        """The vendor's state string for ``task_id`` (a key of ``STATE_MAP``).

        Raises:
            TaskNotFoundError: the vendor does not know the task.
        """

    @abc.abstractmethod
    def fetch_result(self, task_id: str) -> str:
        """The serialized result of a task known to be ``Completed``."""

    @abc.abstractmethod
    def fetch_target(self) -> str:
        """The device description as JSON text."""

    def fetch_logs(self, task_id: str) -> str:
        """The vendor's logs for a task; by default there are none."""
        return "There are no logs for this task."

    def acquire(self) -> str:
        """Open a lease or session and return its token.

        The default, for vendors without leases, returns a fresh UUID.
        """
        logger.debug("%s has no leases; issuing a local acquisition token", self.resource_id)
        return uuid4_text()

    def release(self, token: str) -> None:
        """End the lease named by ``token``. Must be idempotent. The default does nothing."""
        return None

    def metadata(self) -> dict[str, str]:
        """Static facts about the resource; must not fail."""
        return {"backend_name": self.resource_id}

    # ----- behaviour owned by the base ------------------------------------------------------

    def status(self) -> ResourceStatus:
        """The resource's status (see :meth:`fetch_status`)."""
        return self.fetch_status()

    def is_accessible(self) -> bool:
        """True when the resource is online."""
        return self.status().status == ResourceStatusCode.Online

    def task_start(self, payload: Payload) -> str:
        """Check the payload variant, then submit it.

        Raises:
            UnsupportedPayloadError: the backend does not take this variant.
        """
        if not isinstance(payload, self.PAYLOADS):
            accepted = ", ".join(
                f"Payload.{p.__name__.removesuffix('Payload')}" for p in self.PAYLOADS
            )
            got = type(payload).__name__.removesuffix("Payload")
            raise UnsupportedPayloadError(
                f"payload type is not supported: resource {self.resource_id!r} "
                f"({_type_name(self.RESOURCE_TYPE)}) takes {accepted or 'no payloads'}, "
                f"got {got}"
            )
        task_id = self.submit(payload)
        logger.info("task %s started on %s", task_id, self.resource_id)
        return task_id

    def task_status(self, task_id: str) -> TaskStatus:
        """Map the vendor state of ``task_id`` to a :class:`TaskStatus`."""
        state = self.fetch_state(task_id)
        status = self.STATE_MAP.get(state)
        if status is None:
            logger.warning(
                "%s reported unknown state %r for task %s; treating it as Running",
                self.resource_id,
                state,
                task_id,
            )
            return TaskStatus.Running
        return status

    def task_result(self, task_id: str) -> TaskResult:
        """The result of a completed task.

        Raises:
            TaskNotReadyError: the task is not ``Completed``.
        """
        status = self.task_status(task_id)
        if status != TaskStatus.Completed:
            raise TaskNotReadyError(_not_ready_message(task_id, status))
        return TaskResult(self.fetch_result(task_id))

    def task_stop(self, task_id: str) -> None:
        """Cancel ``task_id`` unless it is already final. Never deletes a result."""
        if self.task_status(task_id).is_final:
            return
        self.cancel(task_id)
        logger.info("task %s on %s cancelled", task_id, self.resource_id)

    def task_logs(self, task_id: str) -> str:
        """The vendor's logs for ``task_id``."""
        return self.fetch_logs(task_id)

    def task_usage(self, task_id: str) -> TaskUsage | None:
        """What ``task_id`` cost, where the vendor reports it; ``None`` when it reports nothing
        (the default: a backend whose API reports usage overrides this)."""
        return None

    def target(self) -> Target:
        """The device description."""
        return Target(self.fetch_target())

    def wait(self, task_id: str, timeout: float | None = None) -> TaskStatus:
        """Poll until ``task_id`` is final, first after a few milliseconds, then backing off to
        about once a second.

        Raises:
            TaskTimeoutError: ``timeout`` seconds passed first (the task keeps running).
        """
        return self.poll_until_final(task_id, timeout, self.sleep)

    def poll_until_final(
        self,
        task_id: str,
        timeout: float | None,
        pause: Callable[[float], object],
        first: float = FIRST_POLL_SECONDS,
    ) -> TaskStatus:
        """:meth:`wait`'s loop: poll the task's status, ``pause(delay)`` between polls (a
        subclass may pause on something that ends early, such as a notification).

        Raises:
            TaskTimeoutError: ``timeout`` seconds passed first (the task keeps running).
        """
        deadline = None if timeout is None else self.clock() + timeout
        for delay in poll_intervals(first):
            status = self.task_status(task_id)
            if status.is_final:
                return status
            if deadline is not None:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    raise TaskTimeoutError(
                        f"task {task_id} on {self.resource_id} is still {status.name} after "
                        f"{timeout:g} s; it keeps running: wait longer or stop it"
                    )
                delay = min(delay, remaining)
            pause(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _type_name(resource_type: ResourceType | str) -> str:
    return resource_type.type_string if isinstance(resource_type, ResourceType) else resource_type


def _not_ready_message(task_id: str, status: TaskStatus) -> str:
    if status == TaskStatus.Failed:
        why = "the task failed; read task_logs for the reason"
    elif status == TaskStatus.Cancelled:
        why = "the task was cancelled"
    else:
        why = f"the task is {status.name}; wait until it is Completed"
    return f"unable to retrieve result for task {task_id}: {why}"


def dump_json(value: object) -> str:
    """Compact JSON text, the form every backend returns for targets and results."""
    return json.dumps(value, separators=(",", ":"))
