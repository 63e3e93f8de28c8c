"""iqm-client's normal flow against an IQM Server; run in its own venv.

Usage: ``python iqm_client_flow.py URL QUANTUM_COMPUTER TOKEN``. Connects, reads health and the
architectures, submits a Bell circuit in IQM's native gates, waits, reads counts and
measurements, then cancels a second job. Prints JSON of what it saw.
"""

from __future__ import annotations

import json
import math
import sys

from iqm.iqm_client import Circuit, IQMClient
from iqm.pulse import CircuitOperation


def bell() -> Circuit:
    half = math.pi / 2
    return Circuit(
        name="bell",
        instructions=(
            CircuitOperation(name="prx", locus=("QB1",), args={"angle": half, "phase": half}),
            CircuitOperation(name="prx", locus=("QB2",), args={"angle": half, "phase": half}),
            CircuitOperation(name="cz", locus=("QB1", "QB2"), args={}),
            CircuitOperation(name="prx", locus=("QB2",), args={"angle": half, "phase": 3 * half}),
            CircuitOperation(name="measure", locus=("QB1", "QB2"), args={"key": "m"}),
        ),
    )


def main(url: str, quantum_computer: str, token: str) -> dict[str, object]:
    client = IQMClient.from_url(url, quantum_computer=quantum_computer, token=token)
    dqa = client.get_dynamic_quantum_architecture()
    job = client.submit_circuits([bell()], shots=200)
    job.wait_for_completion(timeout_secs=60)
    counts = client.get_job_measurement_counts(job.job_id)[0]
    measurements = client.get_job_measurements(job.job_id)[0]
    other = client.submit_circuits([bell()], shots=100_000)
    client.cancel_job(other.job_id)
    return {
        "healthy": client.get_health().get("healthy"),
        "qubits": list(dqa.qubits),
        "static_qubits": list(client.get_static_quantum_architecture().qubits),
        "calibration_observations": len(client.get_calibration_set().observations),
        "metric_observations": len(client.get_quality_metric_set().observations),
        "status": str(job.status),
        "tracker": type(client.get_job(job.job_id)).__name__,
        "keys": list(counts.measurement_keys),
        "counts": dict(counts.counts),
        "shots_measured": len(measurements["m"]),
        "cancelled": str(client.get_job(other.job_id).status),
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
