"""A test double of a *vendor*: a QPU service whose tasks live in JSON files.

Any process pointed at the same state directory sees the same tasks, like a real vendor API.
The task input (``Payload.QiskitPrimitive``) scripts the task::

    {"behaviour": "complete" | "fail" | "hang", "seconds": 0.5}

``complete`` / ``fail`` tasks are Queued, then Running, then final once ``seconds`` have passed
since submission; ``hang`` tasks run until cancelled.

Settings: ``QRMI_TEST_STATE_DIR`` (required), ``QRMI_TEST_API_KEY`` (a credential that must never
be printed), ``QRMI_TEST_STATUS`` (``online``, ``offline`` or ``broken``: ``status()`` fails).

Run as a script to get the ``qrmi`` or ``task_runner`` command with this vendor registered as
type ``test-file-vendor``::

    python filevendor.py qrmi resources --config cfg.json
    python filevendor.py task_runner NAME INPUT [OUTPUT]
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from qrmi import registry
from qrmi.backends.base import Backend
from qrmi.errors import ServiceError, TaskNotFoundError
from qrmi.models import (
    Payload,
    ResourceCapacity,
    ResourceStatus,
    ResourceStatusCode,
    TaskStatus,
)

TYPE = "test-file-vendor"
FAILURE_REASON = "boom: qubit 3 fell off the chip"
HTTP_LOG_LINE = "HTTP Request: GET file://state 200 OK"
"""What the vendor's HTTP client logs at INFO for every status poll (httpx does that)."""


class FileVendorBackend(Backend):
    """Tasks are JSON files in ``QRMI_TEST_STATE_DIR``."""

    RESOURCE_TYPE = TYPE
    PAYLOADS = (Payload.QiskitPrimitive,)
    STATE_MAP = {
        "QUEUED": TaskStatus.Queued,
        "RUNNING": TaskStatus.Running,
        "DONE": TaskStatus.Completed,
        "ERROR": TaskStatus.Failed,
        "CANCELLED": TaskStatus.Cancelled,
    }

    @property
    def state_dir(self) -> Path:
        return Path(self.settings.require("QRMI_TEST_STATE_DIR"))

    def fetch_status(self) -> ResourceStatus:
        self.settings.get("QRMI_TEST_API_KEY")
        mode = self.settings.get("QRMI_TEST_STATUS", "online")
        if mode == "broken":
            raise ServiceError("the vendor answered 500 Internal Server Error", status_code=500)
        code = ResourceStatusCode.Offline if mode == "offline" else ResourceStatusCode.Online
        running = sum(1 for t in self._tasks() if self.fetch_state(t) == "RUNNING")
        return ResourceStatus(
            code,
            status_reason="maintenance" if mode == "offline" else None,
            capacity=ResourceCapacity(available_slots=max(0, 4 - running), max_slots=4),
            pending_job_count=0,
        )

    def submit(self, payload: Payload) -> str:
        assert isinstance(payload, Payload.QiskitPrimitive)
        params = json.loads(payload.input)
        task_id = f"task-{uuid.uuid4().hex[:12]}"
        record = {
            "behaviour": params.get("behaviour", "complete"),
            "seconds": float(params.get("seconds", 0)),
            "submitted": time.time(),
            "cancelled": False,
            "program_id": payload.program_id,
            "params": params,
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._path(task_id).write_text(json.dumps(record))
        return task_id

    def cancel(self, task_id: str) -> None:
        record = self._record(task_id)
        record["cancelled"] = True
        self._path(task_id).write_text(json.dumps(record))

    def fetch_state(self, task_id: str) -> str:
        logging.getLogger("httpx").info(HTTP_LOG_LINE)
        record = self._record(task_id)
        if record["cancelled"]:
            return "CANCELLED"
        elapsed = time.time() - record["submitted"]
        if record["behaviour"] == "hang" or elapsed < record["seconds"]:
            return "QUEUED" if elapsed < record["seconds"] / 4 else "RUNNING"
        return "ERROR" if record["behaviour"] == "fail" else "DONE"

    def fetch_result(self, task_id: str) -> str:
        record = self._record(task_id)
        return json.dumps({"program_id": record["program_id"], "echo": record["params"]})

    def fetch_logs(self, task_id: str) -> str:
        failed = self._record(task_id)["behaviour"] == "fail"
        return FAILURE_REASON if failed else "all good"

    def fetch_target(self) -> str:
        return "{}"

    def _path(self, task_id: str) -> Path:
        return self.state_dir / f"{task_id}.json"

    def _record(self, task_id: str) -> dict[str, Any]:
        try:
            return dict(json.loads(self._path(task_id).read_text()))
        except FileNotFoundError:
            raise TaskNotFoundError(f"task {task_id} not found") from None

    def _tasks(self) -> list[str]:
        if not self.state_dir.is_dir():
            return []
        return [p.stem for p in self.state_dir.glob("task-*.json")]


def install() -> None:
    """Register the vendor under :data:`TYPE` (idempotent)."""
    registry.register(TYPE, FileVendorBackend, replace=True)


def _main(argv: list[str]) -> int:
    install()
    command, rest = argv[0], argv[1:]
    if command == "task_runner":
        from qrmi.tools.task_runner.main import run as task_runner_main

        return task_runner_main(rest)
    from qrmi.cli import app

    sys.argv = ["qrmi", *rest]
    app(prog_name="qrmi")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(_main(sys.argv[1:]))
