"""Drive the reference ``qrmi`` wheel through one short flow; run by its own interpreter.

Usage: ``python reference_client.py SPEC_JSON``. SPEC is ``{"name", "type", "payload": {"kind",
"args"}, "timeout"}``; the resource's settings come from the environment (``{name}_{KEY}``), as
the reference reads them. Prints one JSON object: what each call returned, or the error of the
call that failed (``{"failed": call, "error": text}``). Imports nothing but the reference.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def main(spec: dict[str, Any]) -> dict[str, Any]:
    import qrmi

    report: dict[str, Any] = {}
    step = "construct"
    try:
        qpu = qrmi.QuantumResource(spec["name"], getattr(qrmi.ResourceType, spec["type"]))
        step = "is_accessible"
        report["accessible"] = qpu.is_accessible()
        step = "acquire"
        token = qpu.acquire()
        step = "target"
        report["target_chars"] = len(qpu.target().value)
        step = "task_start"
        payload = getattr(qrmi.Payload, spec["payload"]["kind"])(**spec["payload"]["args"])
        task = qpu.task_start(payload)
        step = "task_status"
        report["status"] = _wait(qpu, task, float(spec.get("timeout", 60)))
        step = "task_result"
        report["result"] = qpu.task_result(task).value
        step = "task_stop"
        qpu.task_stop(task)
        step = "release"
        qpu.release(token)
    except Exception as exc:  # reported to the test, which says which call failed
        report.update(failed=step, error=f"{type(exc).__name__}: {exc}")
    return report


def _wait(qpu: Any, task: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = str(qpu.task_status(task)).rsplit(".", 1)[-1]
        if status in ("Completed", "Failed", "Cancelled") or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
