"""What the gateway measures, for Prometheus (``GET /metrics``) and the admin page.

Three sources, each cheap where it is read:

* **Counted as it happens** (:class:`GatewayMetrics`, one per service): every vendor call's
  latency and errors, per QPU and QRMI operation (:class:`TimedResource` wraps each backend the
  service builds); tasks started, and ended per final state; the errors the gateway answered,
  per wire error type (:class:`ErrorCounter`, in front of the whole application, so answers of
  any route or guard are counted). A ``QuotaExceededError`` answer is also a quota refusal.
* **Read from the store at scrape time**: jobs per state and the tasks not yet final, per QPU
  and last seen state (both bounded by what is running, never by history).
* **Asked of the QPUs** (:class:`StatusBoard`): live status, lanes and the vendor's queue,
  refreshed at most every ``ttl`` seconds and answered within ``wait`` seconds even when a
  vendor hangs (its last known status is shown meanwhile).

``prometheus_client`` is imported only when a service or a scrape needs it, so the job side
(``qrmi.backends.gateway``) and ``qrmi --help`` never load it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qrmi.log import redact
from qrmi.models import ResourceStatus, ResourceType
from qrmi.resource import QuantumResource

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from qrmi.gateway.service import GatewayService

__all__ = [
    "ErrorCounter",
    "GatewayMetrics",
    "QpuState",
    "StatusBoard",
    "TimedResource",
    "exposition",
]

logger = logging.getLogger(__name__)

#: The wire error type that marks a refusal over a quota.
QUOTA_ERROR = "QuotaExceededError"
#: Latency buckets (seconds) of vendor calls: local emulators answer in milliseconds, cloud
#: APIs in tenths of seconds, a struggling vendor in tens of seconds (bounded retries).
VENDOR_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: The QRMI calls timed per QPU (``task_wait`` is not: it is a wait, not a vendor call).
TIMED_OPERATIONS = (
    "is_accessible",
    "status",
    "acquire",
    "release",
    "task_start",
    "task_stop",
    "task_status",
    "task_result",
    "task_logs",
    "task_usage",
    "target",
    "metadata",
)
#: Error types become label values: only names shaped like our error classes are kept.
_ERROR_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
#: Error answers are small JSON bodies made by the gateway; larger ones are not parsed.
_MAX_ERROR_BODY = 64 * 1024
_STATES = ("Queued", "Running")


def _error_label(name: str) -> str:
    return name if _ERROR_TYPE.fullmatch(name) else "unknown"


# ----- counted as it happens ---------------------------------------------------------------------


class GatewayMetrics:
    """The gateway's counters and histograms, in a registry of their own (a service's metrics
    start at zero, like a process's, and several gateways in one test process do not mix)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        registry = self.registry
        self.vendor_seconds = Histogram(
            "qrmi_gateway_vendor_call_seconds",
            "Time a QRMI call to the QPU's backend (the vendor) took, errors included",
            ["qpu", "operation"],
            buckets=VENDOR_BUCKETS,
            registry=registry,
        )
        self.vendor_errors = Counter(
            "qrmi_gateway_vendor_errors",
            "QRMI calls to the QPU's backend that raised, per exception type",
            ["qpu", "operation", "type"],
            registry=registry,
        )
        self.tasks_started = Counter(
            "qrmi_gateway_tasks_started",
            "Tasks the gateway started on the QPU",
            ["qpu"],
            registry=registry,
        )
        self.tasks_ended = Counter(
            "qrmi_gateway_tasks_ended",
            "Tasks seen final, per final state (Completed, Failed, Cancelled)",
            ["qpu", "state"],
            registry=registry,
        )
        self.errors = Counter(
            "qrmi_gateway_errors",
            "Error answers of the gateway, per wire error type and HTTP status",
            ["type", "status"],
            registry=registry,
        )
        self.quota_refusals = Counter(
            "qrmi_gateway_quota_refusals",
            f"Requests refused over a quota (answers of type {QUOTA_ERROR})",
            registry=registry,
        )

    @contextmanager
    def vendor_call(self, qpu: str, operation: str) -> Iterator[None]:
        """Time one backend call and count it if it raises."""
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.vendor_errors.labels(qpu, operation, _error_label(type(exc).__name__)).inc()
            raise
        finally:
            self.vendor_seconds.labels(qpu, operation).observe(time.perf_counter() - started)

    def task_ended(self, qpu: str, state: str) -> None:
        """Count a task the gateway saw final (once per task: its usage record was closed)."""
        self.tasks_ended.labels(qpu, state).inc()

    def answered_error(self, kind: str, status: int) -> None:
        """Count an error answer of wire type ``kind``."""
        self.errors.labels(_error_label(kind), str(status)).inc()
        if kind == QUOTA_ERROR:
            self.quota_refusals.inc()


def _timed(operation: str) -> Callable[..., Any]:
    method = getattr(QuantumResource, operation)

    @functools.wraps(method)
    def timed(self: TimedResource, *args: Any) -> Any:
        with self.metrics.vendor_call(self.qpu, operation):
            answer = method(self, *args)
        if operation == "task_start":
            self.metrics.tasks_started.labels(self.qpu).inc()
        return answer

    return timed


class TimedResource(QuantumResource):
    """A :class:`~qrmi.QuantumResource` whose QRMI calls are timed into ``metrics``."""

    def __init__(
        self,
        resource_id: str,
        resource_type: ResourceType | str,
        *,
        config: Mapping[str, str],
        metrics: GatewayMetrics,
    ) -> None:
        super().__init__(resource_id, resource_type, config=config, environ={})
        self.qpu = resource_id
        self.metrics = metrics


for _operation in TIMED_OPERATIONS:
    setattr(TimedResource, _operation, _timed(_operation))


# ----- error answers -----------------------------------------------------------------------------

Scope = Any
Receive = Callable[[], Any]
Send = Callable[[Any], Any]


class ErrorCounter:
    """ASGI wrapper counting every error answer (status >= 400) by its ``error.type``.

    It reads the type from the answer's JSON body (``{"error": {"type": ...}}``), so answers
    made by any exception handler or by the request guard are counted alike.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Any], metrics: GatewayMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        counted = False

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal status, counted
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and status >= 400 and not counted:
                counted = True
                self.metrics.answered_error(_error_type(message.get("body", b"")), status)
            await send(message)

        await self.app(scope, receive, counting_send)


def _error_type(body: bytes) -> str:
    if len(body) > _MAX_ERROR_BODY:
        return "unknown"
    try:
        kind = json.loads(body)["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return "unknown"
    return kind if isinstance(kind, str) else "unknown"


# ----- live QPU status ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QpuState:
    """What the gateway knows of a QPU now. ``status`` is ``None`` until a status call answered
    (``error`` then says why); ``paused`` is the admin's reason while paused here."""

    name: str
    type: str
    status: ResourceStatus | None
    error: str | None
    paused: str | None
    checked: float | None

    @property
    def word(self) -> str:
        """``online``, ``offline``, ``paused`` or ``unknown``."""
        if self.paused is not None:
            return "paused"
        return "unknown" if self.status is None else self.status.status.name.lower()


class StatusBoard:
    """The live status of every QPU of ``service``: asked of the backend at most every
    ``ttl`` seconds, and :meth:`snapshot` answers within ``wait`` seconds whatever the
    vendors do (a call still running keeps the last known answer)."""

    def __init__(self, service: GatewayService, *, ttl: float = 15.0, wait: float = 5.0):
        self.service = service
        self.ttl = ttl
        self.wait = wait
        self._lock = threading.Lock()
        self._known: dict[str, tuple[ResourceStatus | None, str | None, float]] = {}
        self._asking: dict[str, threading.Event] = {}

    def snapshot(self) -> list[QpuState]:
        """Every configured QPU's state, in name order."""
        names = sorted(self.service.config.resource_map)
        pending = [self._ask(name) for name in names]
        deadline = time.monotonic() + self.wait
        for event in pending:
            if event is not None:
                event.wait(max(0.0, deadline - time.monotonic()))
        return [self._state(name) for name in names]

    def _ask(self, qpu: str) -> threading.Event | None:
        with self._lock:
            known = self._known.get(qpu)
            if known is not None and time.monotonic() - known[2] < self.ttl:
                return None
            event = self._asking.get(qpu)
            if event is None:
                event = self._asking[qpu] = threading.Event()
                threading.Thread(
                    target=self._fetch, args=(qpu, event), name=f"status-{qpu}", daemon=True
                ).start()
            return event

    def _fetch(self, qpu: str, event: threading.Event) -> None:
        status: ResourceStatus | None = None
        error: str | None = None
        try:
            status = self.service.shared(qpu).status()
        except Exception as exc:  # any failure is shown, never raised into a scrape or a page
            error = f"{type(exc).__name__}: {redact(str(exc))[:300]}"
            logger.info("status of %s failed: %s", qpu, error)
        with self._lock:
            self._known[qpu] = (status, error, time.monotonic())
            del self._asking[qpu]
        event.set()

    def _state(self, qpu: str) -> QpuState:
        with self._lock:
            known = self._known.get(qpu)
        status, error, _ = known if known is not None else (None, "no answer yet", 0.0)
        checked = None if known is None else time.time() - (time.monotonic() - known[2])
        return QpuState(
            name=qpu,
            type=self.service.type_string(qpu),
            status=status,
            error=error,
            paused=self.service.store.paused(qpu),
            checked=checked,
        )


# ----- the scrape --------------------------------------------------------------------------------


class _StateCollector:
    """Gauges read at scrape time: jobs, tasks not final, QPU status, lanes and queues."""

    def __init__(self, service: GatewayService, board: StatusBoard) -> None:
        self.service = service
        self.board = board

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration; collect() asks the store and QPUs

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        jobs = GaugeMetricFamily("qrmi_gateway_jobs", "Jobs the gateway serves", labels=["state"])
        for state in ("active", "finishing"):
            jobs.add_metric([state], len(self.service.store.jobs(state=state)))
        yield jobs
        qpus = sorted(self.service.config.resource_map)
        open_tasks = {(qpu, state): 0 for qpu in qpus for state in _STATES}
        for record in self.service.store.usage(open_only=True):
            key = (record.qpu, record.state if record.state in _STATES else "Queued")
            open_tasks[key] = open_tasks.get(key, 0) + 1
        tasks = GaugeMetricFamily(
            "qrmi_gateway_tasks",
            "The gateway's tasks not yet seen final, per QPU and last seen state",
            labels=["qpu", "state"],
        )
        for (qpu, state), count in sorted(open_tasks.items()):
            tasks.add_metric([qpu, state], count)
        yield tasks
        yield from self._qpu_gauges(self.board.snapshot(), open_tasks)

    def _qpu_gauges(
        self, states: list[QpuState], open_tasks: dict[tuple[str, str], int]
    ) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        status = GaugeMetricFamily(
            "qrmi_gateway_qpu_status",
            "1 for the QPU's current status (online, offline, paused, unknown: no answer)",
            labels=["qpu", "type", "status"],
        )
        lanes = GaugeMetricFamily(
            "qrmi_gateway_qpu_lanes", "Execution lanes of the QPU", labels=["qpu"]
        )
        busy = GaugeMetricFamily(
            "qrmi_gateway_qpu_lanes_busy", "Lanes running a task now", labels=["qpu"]
        )
        queue = GaugeMetricFamily(
            "qrmi_gateway_qpu_queue_depth",
            "Tasks waiting: source=vendor is the QPU's own queue (all its users, when the vendor "
            "reports it); source=gateway is this gateway's tasks not final",
            labels=["qpu", "source"],
        )
        for state in states:
            for word in ("online", "offline", "paused", "unknown"):
                status.add_metric([state.name, state.type, word], float(state.word == word))
            mine = sum(open_tasks.get((state.name, s), 0) for s in _STATES)
            queue.add_metric([state.name, "gateway"], mine)
            known = state.status
            if known is not None and known.pending_job_count is not None:
                queue.add_metric([state.name, "vendor"], known.pending_job_count)
            if known is not None and known.capacity is not None:
                lanes.add_metric([state.name], known.capacity.max_slots)
                used = known.capacity.max_slots - known.capacity.available_slots
                busy.add_metric([state.name], max(0, used))
        yield from (status, lanes, busy, queue)


def exposition(service: GatewayService, board: StatusBoard) -> tuple[bytes, str]:
    """The Prometheus text of the service's counters and its current state, and its
    content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    state = CollectorRegistry(auto_describe=False)
    state.register(_StateCollector(service, board))
    current = generate_latest(state)  # first: its status calls are counted below
    return generate_latest(_counted(service)) + current, CONTENT_TYPE_LATEST


def _counted(service: GatewayService) -> CollectorRegistry:
    """The counters and histograms: this process's, or with worker processes (``qrmi gateway
    --workers``, which sets ``PROMETHEUS_MULTIPROC_DIR``) the sums of all of them."""
    from prometheus_client import CollectorRegistry, multiprocess

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return service.metrics.registry
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry
