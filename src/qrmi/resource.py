"""``QuantumResource``: the one class callers construct, whatever the vendor."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from qrmi.config import Settings
from qrmi.models import (
    Payload,
    ResourceStatus,
    ResourceType,
    Target,
    TaskResult,
    TaskStatus,
    TaskUsage,
)
from qrmi.registry import backend_class, parse_type

if TYPE_CHECKING:
    from qrmi.backends.base import Backend

__all__ = ["QuantumResource"]

logger = logging.getLogger(__name__)


def _log_task(path: str, resource_id: str, task_id: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, f"{resource_id}\t{task_id}\n".encode())
        finally:
            os.close(fd)
    except OSError as exc:  # never fail a submitted task over bookkeeping
        logger.warning("cannot log task %s to %s: %s", task_id, path, exc.strerror)


def _gateway_class(kind: ResourceType | str, settings: Settings) -> type[Backend] | None:
    """The gateway backend when the job's settings route this resource through the QRMI
    gateway (``QRMI_GATEWAY_URL`` and ``{name}_QRMI_GATEWAY_TOKEN``), whatever its type."""
    if not settings.get("QRMI_GATEWAY_TOKEN"):
        return None
    from qrmi.backends.gateway import gateway_backend_class, gateway_settings

    return gateway_backend_class(kind) if gateway_settings(settings) else None


class QuantumResource:
    """A quantum resource (QPU or emulator) reached through its vendor's backend.

    ``QuantumResource(resource_id, resource_type)`` reads the resource's settings from the
    process environment (``{resource_id}_{KEY}``), as the reference does. In a job run in
    gateway mode (``QRMI_GATEWAY_URL`` and ``{resource_id}_QRMI_GATEWAY_TOKEN`` set) every call
    goes to the QRMI gateway instead, whatever the type.
    :meth:`from_config` takes them as a dict of unprefixed keys instead, which wins over the
    environment. Construction does no network I/O.

    Backends are thread-safe: one object may be shared by threads.

    Raises:
        UnsupportedResourceTypeError: unknown type, or its backend is not installed.
        EnvVarNotSetError / ConfigError: a required setting is missing or malformed.
    """

    def __init__(
        self,
        resource_id: str,
        resource_type: ResourceType | str,
        *,
        config: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        kind = parse_type(resource_type)
        type_string = kind.type_string if isinstance(kind, ResourceType) else kind
        settings = Settings(resource_id, config, environ)
        cls = _gateway_class(kind, settings) or backend_class(type_string)
        self._backend: Backend = cls(resource_id, settings)

    @classmethod
    def from_config(
        cls,
        resource_id: str,
        resource_type: ResourceType | str,
        config: Mapping[str, str],
    ) -> QuantumResource:
        """Build a resource from explicit settings (unprefixed keys: ``QRMI_IBM_QS_ENDPOINT``)."""
        return cls(resource_id, resource_type, config=config)

    @property
    def backend(self) -> Backend:
        """The backend object (for adapter-specific extras; not part of the stable API)."""
        return self._backend

    def resource_id(self) -> str:
        """The resource's name."""
        return self._backend.resource_id

    def resource_type(self) -> ResourceType | str:
        """The resource's type."""
        return self._backend.RESOURCE_TYPE

    def is_accessible(self) -> bool:
        """True when the resource is online and can take tasks."""
        return self._backend.is_accessible()

    def status(self) -> ResourceStatus:
        """Status, capacity and queue length, as far as the vendor reports them."""
        return self._backend.status()

    def acquire(self) -> str:
        """Open a lease or session on the resource; returns the acquisition token."""
        return self._backend.acquire()

    def release(self, acquisition_token: str) -> None:
        """End the lease named by ``acquisition_token``. Releasing twice is harmless."""
        self._backend.release(acquisition_token)

    def task_start(self, payload: Payload) -> str:
        """Submit a payload and return the task id at once.

        Inside a QPU job the id is also appended to the job's task log
        (``QRMI_JOB_TASK_LOG``), so that the job's end can stop the tasks left running.
        """
        task_id = self._backend.task_start(payload)
        log = self._backend.settings.get_global("QRMI_JOB_TASK_LOG")
        if log:
            _log_task(log, self.resource_id(), task_id)
        return task_id

    def task_stop(self, task_id: str) -> None:
        """Cancel a task that has not finished. A finished task's result is kept."""
        self._backend.task_stop(task_id)

    def task_status(self, task_id: str) -> TaskStatus:
        """The task's current status."""
        return self._backend.task_status(task_id)

    def task_result(self, task_id: str) -> TaskResult:
        """The result of a completed task; raises ``TaskNotReadyError`` otherwise."""
        return self._backend.task_result(task_id)

    def task_logs(self, task_id: str) -> str:
        """The task's logs (for a failed task, the reason)."""
        return self._backend.task_logs(task_id)

    def task_usage(self, task_id: str) -> TaskUsage | None:
        """What the task cost (vendor QPU seconds or vendor-side running time), where the
        vendor reports it; ``None`` otherwise (pyqrmi extension, used for accounting)."""
        return self._backend.task_usage(task_id)

    def task_wait(self, task_id: str, timeout: float | None = None) -> TaskStatus:
        """Wait until the task is final and return its status (pyqrmi extension).

        Raises:
            TaskTimeoutError: ``timeout`` seconds passed first.
        """
        return self._backend.wait(task_id, timeout)

    def target(self) -> Target:
        """The device description as JSON text."""
        return self._backend.target()

    def metadata(self) -> dict[str, str]:
        """Static facts about the resource, such as ``backend_name``."""
        return self._backend.metadata()

    def __repr__(self) -> str:
        kind = self.resource_type()
        name = kind.type_string if isinstance(kind, ResourceType) else kind
        return f"QuantumResource({self.resource_id()!r}, {name!r})"
