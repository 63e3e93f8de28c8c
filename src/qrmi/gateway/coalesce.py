"""One vendor call for many identical concurrent requests.

Jobs polling the same task, or asking a QPU's status at the same moment, would each cost a vendor
request; through the gateway they share one: a call that finds the same call already in flight
waits for its answer instead of sending its own. The answer is never older than the request that
joined it by more than one vendor round trip, and nothing is cached after the call returns.
This keeps the gateway's load on a vendor (and on its rate limits) proportional to distinct
questions rather than to the number of pollers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")


class _Flight(Generic[T]):
    __slots__ = ("done", "error", "joined", "value")

    def __init__(self) -> None:
        self.joined = 0
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class Coalescer:
    """Runs ``call`` once for all the threads asking the same ``key`` at the same time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight[Any]] = {}

    def joined(self, key: Hashable) -> int:
        """How many callers wait for the call running for ``key`` (0 when none runs)."""
        with self._lock:
            flight = self._flights.get(key)
            return 0 if flight is None else flight.joined

    def run(self, key: Hashable, call: Callable[[], T]) -> T:
        """``call()``, or the result (or exception) of the identical call already running."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            else:
                flight.joined += 1
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            value: T = flight.value
            return value
        try:
            flight.value = call()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()
        result: T = flight.value
        return result
