"""A fake QPU backend for the Slurm tests: it counts acquisitions and releases in a ledger.

Registered through the ``qrmi.backends`` entry point as type ``test-ledger`` (the cluster puts
this directory on its Python path). Settings: ``QRMI_LEDGER_DIR`` (where ``<name>.log`` lines
``acquire TOKEN`` / ``release TOKEN`` go) and ``QRMI_LEDGER_MODE``: ``online`` (default),
``offline`` (status Offline), ``hang`` (acquire never returns), ``fail`` (acquire raises),
``unreachable`` (status raises as an unreachable server does), ``hang-cancel`` (cancelling a
task never returns).
Its tasks run until cancelled (``start ID`` / ``cancel ID`` lines), so tests can see which
tasks the job's end stopped.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from qrmi.backends.base import Backend
from qrmi.errors import (
    ServiceError,
    ServiceUnavailableError,
    TaskNotFoundError,
    UnsupportedFunctionError,
)
from qrmi.models import Payload, ResourceStatus, ResourceStatusCode, TaskStatus


class LedgerBackend(Backend):
    RESOURCE_TYPE = "test-ledger"
    PAYLOADS = (Payload.QiskitPrimitive,)
    STATE_MAP = {"Running": TaskStatus.Running, "Cancelled": TaskStatus.Cancelled}

    def _task(self, task_id: str) -> Path:
        return Path(self.settings.require("QRMI_LEDGER_DIR")) / f"{self.resource_id}.task.{task_id}"

    def _record(self, event: str, token: str) -> None:
        ledger = Path(self.settings.require("QRMI_LEDGER_DIR")) / f"{self.resource_id}.log"
        job = self.settings.get_global("QRMI_JOB_ID", "?")
        fd = os.open(ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{event} {token} job={job}\n".encode())
        finally:
            os.close(fd)

    def fetch_status(self) -> ResourceStatus:
        if self.settings.get("QRMI_LEDGER_MODE") == "unreachable":
            raise ServiceUnavailableError("cannot connect to https://127.0.0.1:9/ (refused)")
        if self.settings.get("QRMI_LEDGER_MODE") == "offline":
            return ResourceStatus(ResourceStatusCode.Offline, "in maintenance until noon")
        return ResourceStatus(ResourceStatusCode.Online)

    def acquire(self) -> str:
        mode = self.settings.get("QRMI_LEDGER_MODE", "online")
        if mode == "hang":
            time.sleep(3600)
        if mode == "fail":
            raise ServiceError(f"{self.resource_id} refused the lease: quota exhausted")
        token = str(uuid.uuid4())
        self._record("acquire", token)
        return token

    def release(self, token: str) -> None:
        self._record("release", token)

    def submit(self, payload: Payload) -> str:
        task_id = str(uuid.uuid4())
        self._task(task_id).write_text("Running")
        self._record("start", task_id)
        return task_id

    def cancel(self, task_id: str) -> None:
        if self.settings.get("QRMI_LEDGER_MODE") == "hang-cancel":
            time.sleep(3600)
        self._task(task_id).write_text("Cancelled")
        self._record("cancel", task_id)

    def fetch_state(self, task_id: str) -> str:
        try:
            return self._task(task_id).read_text()
        except FileNotFoundError:
            raise TaskNotFoundError(f"no task {task_id} on {self.resource_id}") from None

    def fetch_result(self, task_id: str) -> str:
        raise UnsupportedFunctionError("the ledger QPU's tasks produce no results")

    def fetch_target(self) -> str:
        return "{}"
