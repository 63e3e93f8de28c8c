"""Fair sharing of a QPU between jobs: the gateway's own queue in front of a QPU's lanes.

A QPU whose gateway config entry sets ``QRMI_GATEWAY_MAX_CONCURRENT_TASKS`` (its execution
lanes, typically) gets at most that many unfinished tasks at the vendor. A task started while
they are all taken (or while other tasks wait) is held in the store's ``task_queue`` and
answered at once with a gateway task id (``qrmi-gw-...``); its status is ``Queued`` until it
is submitted, and stopping it cancels it without the vendor. When a task at the vendor ends
(seen by a client's status or wait call, or by the dispatcher's own polling), the next waiting
task is chosen **round-robin between jobs** (stride scheduling, weighted by the quota rules'
``weight``) and submitted: a job that queued 200 tasks takes one turn in two beside a job that
queued 5, rather than making it wait for all 200. ``QRMI_GATEWAY_FAIR_SHARE=false`` keeps the
queue first-come first-served (for comparison).

Without the setting, and while the QPU has a free lane and nothing waits, a task goes straight
to the vendor as before (same latency, the vendor's task id).

The queue lives in the store: tasks waiting when the gateway stops are dispatched by the next
one. A task whose submission was cut short by a crash (claimed, never marked dispatched) is
failed rather than submitted twice: a duplicate would cost QPU time.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING

from qrmi.errors import ConfigError, QrmiError, ServiceUnavailableError
from qrmi.log import redact

if TYPE_CHECKING:
    from qrmi.config import ResourceDef
    from qrmi.gateway.service import GatewayService
    from qrmi.gateway.store import QueuedTask

__all__ = [
    "CAPACITY_KEY",
    "FAIR_SHARE_KEY",
    "GATEWAY_TASK_PREFIX",
    "Dispatcher",
    "capacity_of",
    "fair_share_of",
    "is_gateway_task",
    "new_gateway_task_id",
]

logger = logging.getLogger(__name__)

#: A QPU's gateway ``environment`` key: most unfinished tasks at the vendor at once.
CAPACITY_KEY = "QRMI_GATEWAY_MAX_CONCURRENT_TASKS"
#: ``false`` makes the gateway's queue first-come first-served instead of fair between jobs.
FAIR_SHARE_KEY = "QRMI_GATEWAY_FAIR_SHARE"
#: Task ids the gateway mints for the tasks it queues (vendor ids never start so).
GATEWAY_TASK_PREFIX = "qrmi-gw-"
#: A task claimed this long ago and never marked dispatched was cut short by a crash.
STALE_CLAIM_SECONDS = 120.0
_MIN_POLL = 0.02
_MAX_POLL = 0.5
_IDLE_WAIT = 5.0


def capacity_of(rdef: ResourceDef) -> int | None:
    """The QPU's ``QRMI_GATEWAY_MAX_CONCURRENT_TASKS``, or ``None`` (no gateway queue).

    Raises:
        ConfigError: not a whole number >= 1.
    """
    raw = rdef.environment.get(CAPACITY_KEY, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(
            f"{CAPACITY_KEY}={raw!r} of QPU {rdef.name!r} in qrmi_config.json must be a whole "
            "number >= 1 (the QPU's execution lanes, typically)"
        )
    return int(raw)


def fair_share_of(rdef: ResourceDef) -> bool:
    """False when the QPU's ``QRMI_GATEWAY_FAIR_SHARE`` is ``false`` (first come, first served)."""
    return rdef.environment.get(FAIR_SHARE_KEY, "true").strip().lower() not in ("0", "false", "no")


def new_gateway_task_id() -> str:
    """A fresh id for a task the gateway holds."""
    return GATEWAY_TASK_PREFIX + uuid.uuid4().hex


def is_gateway_task(task_id: str) -> bool:
    """True for the ids :func:`new_gateway_task_id` makes."""
    return task_id.startswith(GATEWAY_TASK_PREFIX)


class Dispatcher:
    """The queue's admission (:meth:`admit`) and the thread that submits waiting tasks."""

    def __init__(self, service: GatewayService) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._starting: dict[str, int] = defaultdict(int)
        self._thread: threading.Thread | None = None
        self._stop = False
        self._poll = _MIN_POLL

    # ----- admission, on the task_start path -----------------------------------------------------

    def admit(self, qpu: str) -> bool:
        """True when a task may go straight to the vendor (then call :meth:`started`): the QPU
        has no gateway capacity, or a lane is free and nothing waits."""
        capacity = capacity_of(self.service.definition(qpu))
        if capacity is None:
            return True
        with self._lock:
            at_vendor, waiting = self.service.store.queue_load(qpu)
            if waiting or at_vendor + self._starting[qpu] >= capacity:
                return False
            self._starting[qpu] += 1
            return True

    def started(self, qpu: str) -> None:
        """A task admitted by :meth:`admit` is recorded (or failed): its slot is in the store."""
        with self._lock:
            if self._starting.get(qpu, 0) > 0:
                self._starting[qpu] -= 1

    # ----- the thread ----------------------------------------------------------------------------

    def start(self) -> None:
        """Run the dispatcher thread (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="qrmi-dispatch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread (tasks keep waiting in the store)."""
        with self._lock:
            self._stop = True
            thread, self._thread = self._thread, None
            self._wakeup.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def wake(self) -> None:
        """Look at the queues now (a task was queued, or one at the vendor ended)."""
        with self._lock:
            self._poll = _MIN_POLL
            self._wakeup.notify_all()

    def _run(self) -> None:
        while True:
            try:
                busy = self.run_once()
            except Exception as exc:  # a store or vendor hiccup must not end the dispatcher
                logger.warning("dispatch pass failed: %s", redact(str(exc)))
                busy = True
            with self._lock:
                if self._stop:
                    return
                wait = self._poll if busy else _IDLE_WAIT
                self._poll = min(_MAX_POLL, self._poll * 2)
                self._wakeup.wait(wait)
                if self._stop:
                    return

    def run_once(self) -> bool:
        """One pass over every QPU with waiting tasks; True while tasks still wait."""
        busy = False
        for qpu in self.service.store.backlogged_qpus():
            if qpu not in self.service.config.resource_map:
                continue  # the QPU left the config: its tasks wait until the job ends
            if self.dispatch(qpu):
                with self._lock:
                    self._poll = _MIN_POLL
            busy = True
        return busy

    # ----- one QPU -------------------------------------------------------------------------------

    def dispatch(self, qpu: str) -> int:
        """Submit as many waiting tasks of ``qpu`` as it has free lanes; return how many."""
        rdef = self.service.definition(qpu)
        capacity = capacity_of(rdef)
        self._fail_stale(qpu)
        at_vendor = self._refresh(qpu) if capacity is not None else 0
        sent = 0
        while capacity is None or at_vendor + sent + self._starting_now(qpu) < capacity:
            entry = self.service.store.claim_next(qpu, fair=fair_share_of(rdef))
            if entry is None:
                break
            if self._submit(entry):
                sent += 1
        return sent

    def _starting_now(self, qpu: str) -> int:
        with self._lock:
            return self._starting.get(qpu, 0)

    def _refresh(self, qpu: str) -> int:
        """Ask the vendor about the QPU's unfinished tasks (so ended ones free their lane);
        return how many are still unfinished."""
        unfinished = 0
        for task in self.service.store.open_tasks(qpu):
            if task.at_vendor and not self.service.refresh(qpu, task):
                unfinished += 1
        return unfinished

    def _submit(self, entry: QueuedTask) -> bool:
        service = self.service
        job = service.store.job(entry.job_id)
        if job is None or job.state != "active" or entry.payload is None:
            service.end_held(entry.qpu, entry.task_id, "cancelled", "the job ended first")
            return False
        from qrmi.gateway.wire import payload_from_json

        try:
            resource = service.job_resource(job, entry.qpu)
            vendor_id = resource.task_start(payload_from_json(json.loads(entry.payload)))
        except ServiceUnavailableError as exc:
            logger.info("task %s: vendor busy, retried later: %s", entry.task_id, exc)
            service.store.mark_requeued(entry.qpu, entry.task_id)
            return False
        except (QrmiError, ValueError) as exc:
            reason = redact(f"{type(exc).__name__}: {exc}")
            logger.warning("task %s could not be submitted: %s", entry.task_id, reason)
            service.end_held(entry.qpu, entry.task_id, "failed", reason)
            return False
        if not service.store.mark_dispatched(entry.qpu, entry.task_id, vendor_id):
            logger.info("task %s was cancelled while being submitted: stopped", entry.task_id)
            service.stop_quietly(resource, entry.qpu, vendor_id)
            return False
        logger.info("task %s dispatched to %s as %s", entry.task_id, entry.qpu, vendor_id)
        after = service.store.job(entry.job_id)
        if after is None or after.state != "active":  # the job ended while we submitted
            service.stop_quietly(resource, entry.qpu, vendor_id)
        return True

    def _fail_stale(self, qpu: str) -> None:
        before = self.service.clock() - STALE_CLAIM_SECONDS
        for task_id in self.service.store.stale_dispatches(qpu, before):
            logger.warning("task %s was being submitted when a gateway stopped: failed", task_id)
            self.service.end_held(
                qpu,
                task_id,
                "failed",
                "the gateway stopped while submitting this task; it was not submitted twice "
                "(it may or may not have run): start it again",
            )
