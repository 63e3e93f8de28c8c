"""A small job queue the vendor fakes share: submitted work runs on a background thread.

Jobs move ``queued`` -> ``running`` -> ``done`` | ``failed``, or to ``cancelled`` when cancelled
before they finish (a result computed after a cancel request is dropped, as on real services).
``delay`` keeps every job queued for that many seconds first, and :meth:`JobQueue.hold`
keeps them queued until :meth:`JobQueue.resume`, so tests can cancel a job that has not run.
``duration(job)`` emulates QPU time: the job stays running that many seconds before it is
executed (a cancel ends the wait at once), so that a long job can be watched and cancelled.
Each fake maps these generic states to its vendor's words.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeJob", "JobQueue"]

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINAL = frozenset({DONE, FAILED, CANCELLED})


@dataclass
class FakeJob:
    """One job: ``work`` is what was submitted, ``result`` what ``execute`` returned."""

    id: str
    work: Any
    state: str = QUEUED
    result: Any = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False

    @property
    def final(self) -> bool:
        """Whether the job can no longer change state."""
        return self.state in FINAL


class JobQueue:
    """Runs ``execute(job)`` for each submitted job, one at a time, on a daemon thread.

    An exception from ``execute`` fails the job with the exception's message. Thread-safe.
    """

    def __init__(
        self,
        execute: Callable[[FakeJob], Any],
        *,
        delay: float = 0.0,
        duration: Callable[[FakeJob], float] | None = None,
    ) -> None:
        self._execute = execute
        self.delay = delay
        self._duration = duration
        self._jobs: dict[str, FakeJob] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: queue.Queue[str | None] = queue.Queue()
        self._held = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="fake-jobs", daemon=True)
        self._thread.start()

    def submit(self, work: Any, *, job_id: str | None = None, **data: Any) -> FakeJob:
        """Queue ``work``; return the new job (its id is a UUID unless ``job_id`` is given)."""
        job = FakeJob(job_id or str(uuid.uuid4()), work, data=dict(data))
        with self._lock:
            self._jobs[job.id] = job
        self._pending.put(job.id)
        return job

    def get(self, job_id: str) -> FakeJob | None:
        """The job, or ``None`` if unknown."""
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[FakeJob]:
        """Every job, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def cancel(self, job_id: str) -> FakeJob | None:
        """Cancel a job that is not final; a queued one is cancelled at once."""
        with self._changed:
            job = self._jobs.get(job_id)
            if job is None or job.final:
                return job
            job.cancel_requested = True
            if job.state == QUEUED:
                self._finish(job, CANCELLED)
            self._changed.notify_all()
            return job

    def fail(self, job_id: str, error: str) -> None:
        """Force a job into ``failed`` (tests of failure paths)."""
        with self._changed:
            job = self._jobs.get(job_id)
            if job is not None and not job.final:
                job.error = error
                self._finish(job, FAILED)
            self._changed.notify_all()

    def hold(self) -> None:
        """Keep new and queued jobs queued until :meth:`resume`."""
        with self._changed:
            self._held = True

    def resume(self) -> None:
        """Let held jobs run."""
        with self._changed:
            self._held = False
            self._changed.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every job is final; ``False`` if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while any(not job.final for job in self._jobs.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.1))
        return True

    def close(self) -> None:
        """Stop the worker thread (queued jobs stay queued)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._pending.put(None)
        self._thread.join(5.0)

    def _run(self) -> None:
        while True:
            job_id = self._pending.get()
            if job_id is None:
                return
            job = self._start(job_id)
            if job is None:
                continue
            self._execute_one(job)

    def _start(self, job_id: str) -> FakeJob | None:
        """Wait out the delay and any hold; mark the job running unless it was cancelled."""
        with self._changed:
            job = self._jobs[job_id]
            ready_at = job.created_at + self.delay
            while not self._closed and not job.final:
                remaining = ready_at - time.time()
                if remaining <= 0 and not self._held:
                    break
                self._changed.wait(remaining if remaining > 0 else 0.1)
            if self._closed or job.final:
                return None
            job.state = RUNNING
            job.started_at = time.time()
            self._changed.notify_all()
            return job

    def _emulate_qpu_time(self, job: FakeJob) -> None:
        try:
            seconds = self._duration(job) if self._duration is not None else 0.0
        except Exception:  # a payload the duration rule cannot read runs at once
            seconds = 0.0
        deadline = time.monotonic() + seconds
        with self._changed:
            while not (self._closed or job.cancel_requested or job.final):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._changed.wait(remaining)

    def _execute_one(self, job: FakeJob) -> None:
        self._emulate_qpu_time(job)
        with self._changed:
            if job.cancel_requested and not job.final:
                self._finish(job, CANCELLED)
                self._changed.notify_all()
            if job.final or self._closed:
                return
        try:
            result, error = self._execute(job), None
        except Exception as exc:  # a failing payload fails its job, never the fake
            result, error = None, f"{type(exc).__name__}: {exc}"
        with self._changed:
            if job.final:
                return
            if job.cancel_requested:
                self._finish(job, CANCELLED)
            elif error is not None:
                job.error = error
                self._finish(job, FAILED)
            else:
                job.result = result
                self._finish(job, DONE)
            self._changed.notify_all()

    @staticmethod
    def _finish(job: FakeJob, state: str) -> None:
        job.state = state
        job.finished_at = time.time()
