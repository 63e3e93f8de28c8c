"""``local-emulator``: a QPU stand-in on qiskit-aer, the default resource when none is configured.

It takes the same payloads as the IBM backends (``Payload.QiskitPrimitive`` with program id
``sampler`` or ``estimator`` and primitive V2 JSON input) and returns the same result encoding.
Tasks live in a SQLite store under a state directory and are executed by a background worker
daemon (see :mod:`~qrmi.backends.local_emulator.worker`), so any process using the same state
directory can poll, cancel and read them; a task Aer runs in a few milliseconds is simulated
in the submitting process instead (see :mod:`~qrmi.backends.local_emulator._in_process`). This
module never imports qiskit itself: status, acquire and release only talk to SQLite.

Settings (``config`` dict key, or environment variable ``{name}_{KEY}``):

* ``QRMI_LOCAL_STATE_DIR``: task store and worker files (default below).
* ``QRMI_LOCAL_LANES``: tasks executed at the same time, the execution lanes (default 2).
* ``QRMI_LOCAL_DEVICE``: device snapshot emulated, e.g. ``fake_sherbrooke`` (default
  ``fake_perth``; see :mod:`~qrmi.backends.local_emulator.devices`). The unprefixed variable
  ``QRMI_LOCAL_DEVICE`` applies to every emulator resource that sets none of its own.
* ``QRMI_LOCAL_NOISE``: apply the device's noise model, true/false (default false).
* ``QRMI_LOCAL_SEED``: simulator seed for reproducible results (default: random).
* ``QRMI_LOCAL_IDLE_SECONDS``: the worker exits after this long with nothing to do (default 60).
* ``QRMI_LOCAL_MPS_MAX_BOND_DIMENSION``: bond dimension cap of the approximate matrix product
  state used when an exact simulation does not fit (default 16).
* ``QRMI_LOCAL_TASK_TIMEOUT_SECONDS``: wall-clock budget of one task's simulation (default 300).
* ``QRMI_LOCAL_TASK_MEMORY_MB``: memory budget of one task's simulation, MiB (default 4096).
* ``QRMI_LOCAL_MAX_INPUT_BYTES``: largest payload input (default 16 MiB).
* ``QRMI_LOCAL_MAX_CLBITS``: most classical bits a circuit may declare (default 4096).
* ``QRMI_LOCAL_MAX_LOOP_ITERATIONS``: most iterations of nested ``for`` loops (default 100000).
* ``QRMI_LOCAL_RETENTION_DAYS``: finished tasks are deleted this long after they ended
  (default 7; fractions allowed).
* ``QRMI_LOCAL_IN_PROCESS``: run tasks that Aer simulates in a few milliseconds in the
  submitting process rather than on the worker's lanes, true/false (default true; see
  :mod:`~qrmi.backends.local_emulator._in_process`; the gateway never does).

The default state directory is ``$XDG_STATE_HOME/qrmi/local-emulator/<name>``, or
``~/.local/state/qrmi/local-emulator/<name>`` when ``XDG_STATE_HOME`` is unset. Device, noise and
seed, and the limits and budgets are captured per task at ``task_start``; lanes, idle time and
retention are written to the store and apply to the shared worker (the last ``task_start`` wins).

Emulated QPU time: a payload whose input has ``"options": {"emulator": {"min_duration_seconds":
S}}`` stays ``Running`` for at least ``S`` seconds (at most one hour; a ``task_stop`` ends the wait
at once). Benchmarks, demos and tests use it to hold a lane; it is a pyqrmi extension that IBM
services do not accept.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from qrmi.backends.base import Backend, Clock, Sleeper, dump_json
from qrmi.backends.local_emulator.devices import (
    DEFAULT_DEVICE,
    canonical_device_name,
    device_qubits,
    device_snapshot,
)
from qrmi.backends.local_emulator.inputs import (
    Limits,
    check_input_size,
    check_limits,
    check_params,
    parse_input,
)
from qrmi.backends.local_emulator.store import (
    CANCELLED,
    COMPLETED,
    FAILED,
    QUEUED,
    RUNNING,
    TaskStore,
)
from qrmi.config import Settings
from qrmi.errors import ConfigError, TaskNotReadyError
from qrmi.models import (
    Payload,
    QiskitPrimitivePayload,
    ResourceCapacity,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    TaskStatus,
    TaskUsage,
)

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["LocalEmulatorBackend", "default_state_dir"]

DEFAULT_LANES = 2
DEFAULT_IDLE_SECONDS = 60.0
DEFAULT_RETENTION_DAYS = 7.0
#: How long a queued task may wait with no live worker before the client starts another one.
_WORKER_CHECK_SECONDS = 1.0
#: First look at the store of a wait that gets notified of the task's end: the looks only
#: catch an end nobody notified (a worker killed outright) and keep the worker alive.
_NOTIFIED_FIRST_POLL_SECONDS = 0.05


def _worker() -> ModuleType:
    """The worker module, imported on first use: it pulls in multiprocessing, ctypes and
    sockets, which status, acquire and release (the Slurm helper's path) never need."""
    from qrmi.backends.local_emulator import worker

    return worker


def default_state_dir(name: str, environ: os._Environ[str] | dict[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/qrmi/local-emulator/<name>`` (``~/.local/state`` without XDG)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME", "").strip()
    root = Path(base) if base else Path.home() / ".local" / "state"
    return root / "qrmi" / "local-emulator" / name


class LocalEmulatorBackend(Backend):
    """The local emulator (type string ``local-emulator``); settings in the module docstring."""

    RESOURCE_TYPE = ResourceType.LocalEmulator
    PAYLOADS: ClassVar[tuple[type[Payload], ...]] = (QiskitPrimitivePayload,)
    STATE_MAP: ClassVar[dict[str, TaskStatus]] = {
        QUEUED: TaskStatus.Queued,
        RUNNING: TaskStatus.Running,
        COMPLETED: TaskStatus.Completed,
        FAILED: TaskStatus.Failed,
        CANCELLED: TaskStatus.Cancelled,
    }

    def __init__(
        self,
        resource_id: str,
        settings: Settings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleeper = time.sleep,
    ) -> None:
        super().__init__(resource_id, settings, clock=clock, sleep=sleep)
        state_dir = settings.get("QRMI_LOCAL_STATE_DIR")
        self.state_dir = (
            Path(state_dir).expanduser() if state_dir else default_state_dir(resource_id)
        )
        self.lanes = settings.get_int("QRMI_LOCAL_LANES", DEFAULT_LANES, minimum=1) or 1
        self.device_setting = (
            settings.get("QRMI_LOCAL_DEVICE")
            or settings.get_global("QRMI_LOCAL_DEVICE")
            or DEFAULT_DEVICE
        )
        self.noise = settings.get_bool("QRMI_LOCAL_NOISE", False)
        self.seed = settings.get_int("QRMI_LOCAL_SEED", None)
        self.idle_seconds = settings.get_float("QRMI_LOCAL_IDLE_SECONDS", DEFAULT_IDLE_SECONDS)
        self.limits = _limits(settings)
        retention_days = _positive(settings, "QRMI_LOCAL_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)
        self.retention_seconds = retention_days * 86400.0
        self.in_process = settings.get_bool("QRMI_LOCAL_IN_PROCESS", True)
        self.store = TaskStore(self.state_dir)
        self._worker_checked_at = float("-inf")
        self._purged_at = float("-inf")

    @functools.cached_property
    def device(self) -> str:
        """The canonical device name (raises InvalidInputError for an unknown one)."""
        return canonical_device_name(self.device_setting)

    # ----- resource ---------------------------------------------------------------------------

    def fetch_status(self) -> ResourceStatus:
        counts = self.store.counts()
        running = counts.get(RUNNING, 0)
        available = max(0, self.lanes - running)
        return ResourceStatus(
            status=ResourceStatusCode.Online,
            healthy=True,
            busy=available == 0,
            capacity=ResourceCapacity(available_slots=available, max_slots=self.lanes),
            pending_job_count=counts.get(QUEUED, 0),
        )

    def acquire(self) -> str:
        """Record a lease in the store and return its token."""
        return self.store.acquire_lease()

    def release(self, token: str) -> None:
        """Count a release of ``token``; releasing twice (or an unknown token) is harmless."""
        self.store.release_lease(token)

    def fetch_target(self) -> str:
        configuration, properties = device_snapshot(self.device)
        return dump_json({"configuration": configuration, "properties": properties})

    def metadata(self) -> dict[str, str]:
        device = self.device_setting
        with contextlib.suppress(Exception):  # metadata must not fail; target() reports it
            device = self.device
        return {
            "backend_name": self.resource_id,
            "device": device,
            "lanes": str(self.lanes),
            "noise": "true" if self.noise else "false",
            "state_dir": str(self.state_dir),
        }

    # ----- tasks ------------------------------------------------------------------------------

    def submit(self, payload: Payload) -> str:
        assert isinstance(payload, QiskitPrimitivePayload)
        check_input_size(payload.input, self.limits)
        params = parse_input(payload.input)
        check_params(payload.program_id, params)
        device = self.device
        check_limits(params, self.limits, device=device, device_qubits=device_qubits(device))
        if self._may_run_here(payload, params):
            task_id = self._run_here(payload, params, device)
            if task_id is not None:
                return task_id
        task_id = self.store.add_task(**self._task_fields(payload, device))
        _worker().wake(self.state_dir)
        _worker().ensure_worker(self.state_dir)
        self._worker_checked_at = self.clock()
        return task_id

    def _task_fields(self, payload: QiskitPrimitivePayload, device: str) -> dict[str, Any]:
        """A new task's record, and the worker's settings written with it."""
        return {
            "program_id": payload.program_id,
            "input_text": payload.input,
            "device": device,
            "noise": self.noise,
            "seed": self.seed,
            "limits": self.limits.to_json(),
            "meta": {
                "lanes": str(self.lanes),
                "idle_seconds": str(self.idle_seconds),
                "retention_seconds": str(self.retention_seconds),
            },
        }

    def _may_run_here(self, payload: QiskitPrimitivePayload, params: dict[str, Any]) -> bool:
        """Cheap checks before a task may run in this process (see ``_in_process``)."""
        from qrmi.backends.local_emulator import _in_process, engine

        return (
            self.in_process
            and not self.noise
            and len(payload.input) <= _in_process.MAX_INPUT_CHARS
            and "min_duration_seconds" not in payload.input
            and _in_process.within_budgets(self.limits)
            and _in_process.may_be_small(params)
            and (engine.loaded() or not _worker().worker_running(self.state_dir))
        )

    def _run_here(
        self, payload: QiskitPrimitivePayload, params: dict[str, Any], device: str
    ) -> str | None:
        """Simulate a small task here and record it; None when it is not small."""
        from qrmi.backends.local_emulator import _in_process

        job = _in_process.SmallJob(
            payload.program_id, params, device, self.noise, self.seed, self.limits
        )
        ran = _in_process.run_small(job)
        if ran is None:
            return None
        took = ran.ended_at - ran.started_at
        opening = (
            f"ran in the submitting process {os.getpid()} (device {device}, noise off, "
            f"seed {self.seed})"
        )
        ending = f"failed: {ran.error}" if ran.error else f"completed in {took:.3f} s"
        task_id = self.store.add_finished(
            **self._task_fields(payload, device),
            status=FAILED if ran.error else COMPLETED,
            started_at=ran.started_at,
            ended_at=ran.ended_at,
            result=ran.result,
            reason=ran.error,
            log=[opening, *ran.notes, ending],
        )
        self._purge_now_and_then()
        return task_id

    def _purge_now_and_then(self) -> None:
        """Delete tasks past their retention hourly, as the worker does (it may never run)."""
        now = self.clock()
        if now - self._purged_at >= _worker().PURGE_EVERY_SECONDS:
            self._purged_at = now
            self.store.purge(self.retention_seconds)

    def cancel(self, task_id: str) -> None:
        if self.store.cancel(task_id):
            from qrmi.backends.local_emulator import _notify

            _notify.notify(self.state_dir, task_id)

    def wait(self, task_id: str, timeout: float | None = None) -> TaskStatus:
        """Wait until ``task_id`` is final: blocked on a notification from whoever ends it
        (see :mod:`~qrmi.backends.local_emulator._notify`), looking at the store now and then
        as :meth:`Backend.wait` does, which alone is used where notifications cannot be.

        Raises:
            TaskTimeoutError: ``timeout`` seconds passed first (the task keeps running).
        """
        from qrmi.backends.local_emulator import _notify

        status = self.task_status(task_id)
        if status.is_final:  # e.g. a task simulated in this process: no waiter to set up
            return status
        waiter = _notify.Waiter.open(self.state_dir, task_id)
        if waiter is None:
            return super().wait(task_id, timeout)
        with waiter:
            return self.poll_until_final(
                task_id, timeout, waiter.wait, first=_NOTIFIED_FIRST_POLL_SECONDS
            )

    def fetch_state(self, task_id: str) -> str:
        task = self.store.get(task_id)
        if task.status == RUNNING:
            reason = _worker().worker_is_dead(self.store, task)
            if reason is not None and self.store.finish(
                task_id, FAILED, reason=reason, log=f"failed: {reason}"
            ):
                return FAILED
            return self.store.status(task_id)
        if task.status == QUEUED:
            self._keep_worker_alive()
        return task.status

    def _keep_worker_alive(self) -> None:
        """Restart the worker if it is gone while tasks wait (checked at most once a second).

        Before starting one, a write to the store proves the state directory writable, so a
        full or read-only directory raises StateDirectoryError here instead of leaving the
        task Queued behind a worker that keeps failing to start.
        """
        now = self.clock()
        if now - self._worker_checked_at < _WORKER_CHECK_SECONDS:
            return
        self._worker_checked_at = now
        if not _worker().worker_running(self.state_dir):
            self.store.set_meta("checked_writable_at", str(time.time()))
        _worker().ensure_worker(self.state_dir)

    def fetch_result(self, task_id: str) -> str:
        task = self.store.get(task_id)
        if task.result is None:  # pragma: no cover - Completed always has a result
            raise TaskNotReadyError(f"unable to retrieve result for task {task_id}: no result")
        return task.result

    def task_usage(self, task_id: str) -> TaskUsage | None:
        """The time the task held its execution lane: the task store's ``started_at`` to
        ``ended_at`` (``None`` while it has not ended, or if it ended before it ran)."""
        task = self.store.get(task_id)
        if task.started_at is None or task.ended_at is None:
            return None
        return TaskUsage(running_seconds=max(0.0, task.ended_at - task.started_at))

    def fetch_logs(self, task_id: str) -> str:
        task = self.store.get(task_id)
        logs = task.logs
        if task.status == QUEUED and not logs:
            return "queued; waiting for a free execution lane\n"
        return logs


def _limits(settings: Settings) -> Limits:
    """The task limits and budgets from the settings (defaults: :class:`Limits`)."""
    defaults = Limits()
    return Limits(
        max_input_bytes=_at_least_one(settings, "QRMI_LOCAL_MAX_INPUT_BYTES", defaults),
        max_clbits=_at_least_one(settings, "QRMI_LOCAL_MAX_CLBITS", defaults),
        max_loop_iterations=_at_least_one(settings, "QRMI_LOCAL_MAX_LOOP_ITERATIONS", defaults),
        timeout_seconds=_positive(
            settings, "QRMI_LOCAL_TASK_TIMEOUT_SECONDS", defaults.timeout_seconds
        ),
        memory_mb=_at_least_one(settings, "QRMI_LOCAL_TASK_MEMORY_MB", defaults, field="memory_mb"),
        mps_max_bond_dimension=_at_least_one(
            settings, "QRMI_LOCAL_MPS_MAX_BOND_DIMENSION", defaults, field="mps_max_bond_dimension"
        ),
    )


def _at_least_one(settings: Settings, key: str, defaults: Limits, *, field: str = "") -> int:
    name = field or key.removeprefix("QRMI_LOCAL_").lower()
    value = settings.get_int(key, getattr(defaults, name), minimum=1)
    assert value is not None
    return value


def _positive(settings: Settings, key: str, default: float) -> float:
    value = settings.get_float(key, default)
    assert value is not None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{settings.env_name(key)}={value:g} must be a positive number")
    return value
