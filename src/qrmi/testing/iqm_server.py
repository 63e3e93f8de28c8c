"""A fake IQM Server (REST API v1) on 127.0.0.1 that runs circuit jobs on qiskit-aer.

It serves one quantum computer (alias ``garnet:mock`` by default) with qubits ``QB1..QBn`` on
a line (``cz`` between neighbours), one calibration set (reachable as ``default`` or by its
UUID), its quality metrics and static architecture. Every route needs
``Authorization: Bearer <token>``; an unknown quantum computer, calibration set or job is 404.

``circuit`` jobs are validated at submission (400 for a malformed run request, unknown qubits
or gates) and executed by converting IQM's native instructions to a qiskit circuit run on
qiskit-aer: ``prx`` (``angle``/``phase`` in radians as iqm-client sends them, or the older
``angle_t``/``phase_t`` in full turns; ``phased_rx`` is an alias) is ``RGate(angle, phase)``,
``cz`` is ``CZGate``, ``measure`` (``args.key``) measures its locus into a register named by
the key, ``barrier`` is a barrier. ``GET /api/v1/quantum-computers`` lists the computer
(iqm-client resolves its alias there first); calibration and quality-metric sets are
observation sets (``observations`` as a list). Artifacts: ``measurements`` (per circuit,
key -> per-shot bit lists) and ``measurement_counts`` (per circuit, ``{"measurement_keys":
[...], "counts": {bitstring: n}}`` with the keys' bits concatenated in that order). ``run`` and
``sweep`` jobs (pulse-level) are accepted but fail: they cannot be executed here.
``seconds_per_shot`` emulates QPU time. Importing this module imports FastAPI.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from qrmi.testing._jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, FakeJob, JobQueue
from qrmi.testing.server import FakeServer

__all__ = ["IQMServerFake", "iqm_server", "run_iqm_circuits"]

_STATUS = {
    QUEUED: "waiting",
    RUNNING: "processing",
    DONE: "completed",
    FAILED: "failed",
    CANCELLED: "cancelled",
}
_GATES = ("prx", "phased_rx", "cz", "measure", "barrier")
MAX_SHOTS = 100_000


def _now(when: float | None = None) -> str:
    stamp = datetime.now(UTC) if when is None else datetime.fromtimestamp(when, UTC)
    return stamp.isoformat().replace("+00:00", "Z")


def _locus(instruction: Mapping[str, Any]) -> list[str]:
    locus = instruction.get("locus", instruction.get("qubits"))
    return list(locus) if isinstance(locus, list) else []


def _prx_angles(args: Mapping[str, Any]) -> tuple[float, float] | None:
    """``(theta, phi)`` in radians of a ``prx``: IQM Server's ``angle``/``phase`` (radians, as
    iqm-client sends them) or the older ``angle_t``/``phase_t`` (full turns); else ``None``."""
    for angle, phase, scale in (("angle", "phase", 1.0), ("angle_t", "phase_t", 2 * math.pi)):
        values = args.get(angle), args.get(phase)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return float(values[0]) * scale, float(values[1]) * scale  # type: ignore[arg-type]
    return None


def circuit_problem(circuit: Any, qubits: list[str], couplers: set[frozenset[str]]) -> str | None:
    """Why a circuit of a run request is invalid for this device, or ``None``."""
    if not isinstance(circuit, dict) or not isinstance(circuit.get("instructions"), list):
        return "every circuit needs 'name' and a list of 'instructions'"
    keys: set[str] = set()
    for index, instruction in enumerate(circuit["instructions"]):
        where = f"circuit {circuit.get('name', '?')!r} instruction {index}"
        if not isinstance(instruction, dict) or instruction.get("name") not in _GATES:
            return f"{where}: unknown operation; supported: {', '.join(_GATES)}"
        locus = _locus(instruction)
        unknown = [q for q in locus if q not in qubits]
        if not locus or unknown:
            return f"{where}: locus {locus} names qubits this QPU does not have ({unknown})"
        name, args = instruction["name"], instruction.get("args") or {}
        if name == "cz" and (len(locus) != 2 or frozenset(locus) not in couplers):
            return f"{where}: cz needs two coupled qubits, got {locus}"
        if name in ("prx", "phased_rx") and (len(locus) != 1 or _prx_angles(args) is None):
            return (
                f"{where}: prx needs one qubit and numeric args angle, phase (radians) or "
                "angle_t, phase_t (full turns)"
            )
        if name == "measure":
            key = args.get("key")
            if not isinstance(key, str) or not key or key in keys:
                return f"{where}: measure needs a unique non-empty args.key"
            keys.add(key)
    return None


def run_iqm_circuits(
    circuits: list[dict[str, Any]], qubits: list[str], shots: int, seed: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run validated circuits on qiskit-aer; return the ``measurements`` and
    ``measurement_counts`` artifacts."""
    from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
    from qiskit.circuit.library import CZGate, RGate
    from qiskit_aer import AerSimulator

    simulator = AerSimulator(seed_simulator=seed)
    measurements, counts = [], []
    for circuit in circuits:
        register = QuantumRegister(len(qubits), "q")
        qc = QuantumCircuit(register)
        index = {name: i for i, name in enumerate(qubits)}
        keys: list[tuple[str, int]] = []
        for instruction in circuit["instructions"]:
            name, args = instruction["name"], instruction.get("args") or {}
            wires = [register[index[q]] for q in _locus(instruction)]
            if name in ("prx", "phased_rx"):
                angles = _prx_angles(args)
                assert angles is not None  # validated at submission
                qc.append(RGate(*angles), wires)
            elif name == "cz":
                qc.append(CZGate(), wires)
            elif name == "barrier":
                qc.barrier(wires)
            else:
                creg = ClassicalRegister(len(wires), args["key"])
                qc.add_register(creg)
                qc.measure(wires, creg)
                keys.append((args["key"], len(wires)))
        memory = simulator.run(qc, shots=shots, memory=True).result().get_memory(qc)
        per_key: dict[str, list[list[int]]] = {key: [] for key, _ in keys}
        histogram: dict[str, int] = {}
        for shot in memory:
            # Qiskit prints registers last-first, each with its bit 0 rightmost.
            fields = shot.split(" ")[::-1] if keys else []
            bitstring = ""
            for (key, _), text in zip(keys, fields, strict=True):
                bits = [int(b) for b in reversed(text)]
                per_key[key].append(bits)
                bitstring += "".join(str(b) for b in bits)
            histogram[bitstring] = histogram.get(bitstring, 0) + 1
        measurements.append(per_key)
        counts.append({"measurement_keys": [key for key, _ in keys], "counts": histogram})
    return measurements, counts


class IQMServerFake(FakeServer):
    """The fake IQM Server; see the module docstring. Tests use :attr:`jobs`, :attr:`healthy`."""

    def __init__(
        self,
        *,
        token: str = "fake-iqm-token",
        alias: str = "garnet:mock",
        num_qubits: int = 5,
        static_architecture: bool = True,
        delay: float = 0.0,
        seconds_per_shot: float = 0.0,
        seed: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.alias = alias
        self.qc_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"iqm-fake/{alias}"))
        self.calibration_set_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"iqm-fake/{alias}/cal"))
        self.qubits = [f"QB{i + 1}" for i in range(num_qubits)]
        self.couplers = {
            frozenset(pair) for pair in zip(self.qubits, self.qubits[1:], strict=False)
        }
        self.static_architecture = static_architecture
        self.seed = seed
        self.healthy = True
        self.seconds_per_shot = seconds_per_shot
        self.jobs = JobQueue(
            self._execute, delay=delay, duration=lambda job: job.work["shots"] * seconds_per_shot
        )
        super().__init__(self._build_app(), host=host, port=port, name="iqm-server")

    def settings(self, **extra: str) -> dict[str, str]:
        """Settings for an ``iqm-server`` resource using this fake (``from_config`` keys)."""
        values = {
            "QRMI_IQM_ISA_ENDPOINT": self.url,
            "QRMI_IQM_ISA_TOKEN": self.token,
            "QRMI_IQM_HTTP_TIMEOUT": "10",
            "QRMI_IQM_RETRY_DEADLINE": "20",
        }
        values.update(extra)
        return values

    def resource_config(self) -> dict[str, Any]:
        """A ``qrmi_config.json`` resource entry for this fake (used by ``qrmi fake serve``)."""
        return {"name": self.resource_name, "type": "iqm-server", "environment": self.settings()}

    @property
    def resource_name(self) -> str:
        """The resource name whose alias is this fake's (``garnet:mock`` -> ``garnet_mock``)."""
        return self.alias.replace(":", "_")

    # -- device description ------------------------------------------------------------------

    def computer_view(self) -> dict[str, Any]:
        """The quantum computer as ``GET /api/v1/quantum-computers`` lists it."""
        name = self.alias.split(":")[0].capitalize()
        return {"id": self.qc_id, "alias": self.alias, "display_name": name}

    def computer_details(self) -> dict[str, Any]:
        """The quantum computer as ``GET /api/v1/quantum-computers/{qc}`` describes it."""
        return {
            **self.computer_view(),
            "description": f"Fake IQM quantum computer with {len(self.qubits)} qubits",
            "backend_type": "qpu",
            "number_of_qubits": len(self.qubits),
            "pulla_enabled": False,
            "limits": {
                "max_circuits_per_job": 200,
                "max_executions_per_job": MAX_SHOTS * 200,
                "max_instructions_per_circuit": 10_000,
                "max_shots_per_circuit": MAX_SHOTS,
            },
            "operational": "online" if self.healthy else "maintenance",
            "health": {"healthy": self.healthy, "updated_at": _now()},
            "queue_length": sum(1 for job in self.jobs.jobs() if job.state == QUEUED),
            "pricing": {
                "payg_price_per_second": "0.00",
                "timeslot": {"slot_duration": "PT1H", "slot_price": "0.00"},
            },
            "additional_info": {
                "academy_url": "",
                "best_suited_for": [],
                "documentation_url": "",
                "mock_url": "",
            },
        }

    def dynamic_architecture(self) -> dict[str, Any]:
        """The calibrated gates and loci."""

        def gate(loci: list[list[str]], implementation: str) -> dict[str, Any]:
            return {
                "default_implementation": implementation,
                "override_default_implementation": {},
                "implementations": {implementation: {"loci": loci}},
            }

        return {
            "calibration_set_id": self.calibration_set_id,
            "qubits": list(self.qubits),
            "computational_resonators": [],
            "gates": {
                "prx": gate([[q] for q in self.qubits], "drag_gaussian"),
                "cz": gate([sorted(pair) for pair in self.couplers], "tgss"),
                "measure": gate([[q] for q in self.qubits], "constant"),
            },
        }

    def calibration_set(self) -> dict[str, Any]:
        """The calibration set: an observation set as IQM Server serves it."""
        values = {f"{q}.flux.voltage": (0.0, "V") for q in self.qubits}
        return self._observation_set("calibration-set", self.calibration_set_id, values)

    def quality_metrics(self) -> dict[str, Any]:
        """Made-up but plausible fidelities, as a quality-metric set of the calibration set."""
        values = {
            **{f"metrics.rb.prx.{q}.fidelity": (0.999, "") for q in self.qubits},
            **{f"metrics.ssro.measure.{q}.fidelity": (0.97, "") for q in self.qubits},
        }
        set_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"iqm-fake/{self.alias}/metrics"))
        metrics = self._observation_set("quality-metric-set", set_id, values)
        calibration = {k: v for k, v in self.calibration_set().items() if k != "observations"}
        calibration["observation_ids"] = [
            o["observation_id"] for o in self.calibration_set()["observations"]
        ]
        metrics["describes_id"] = self.calibration_set_id
        metrics["calibration_set"] = calibration
        return metrics

    def _observation_set(
        self, kind: str, set_id: str, values: Mapping[str, tuple[float, str]]
    ) -> dict[str, Any]:
        created = "2026-01-01T00:00:00Z"
        observations = [
            {
                "observation_id": number,
                "dut_field": field,
                "value": value,
                "unit": unit,
                "uncertainty": None,
                "invalid": False,
                "created_timestamp": created,
                "modified_timestamp": created,
            }
            for number, (field, (value, unit)) in enumerate(values.items(), start=1)
        ]
        return {
            "observation_set_id": set_id,
            "observation_set_type": kind,
            "describes_id": None,
            "invalid": False,
            "dut_label": self.alias,
            "created_timestamp": created,
            "end_timestamp": created,
            "observations": observations,
            # the id under the name older IQM Server releases used
            "calibration_set_id": self.calibration_set_id,
        }

    # -- jobs --------------------------------------------------------------------------------

    def _execute(self, job: FakeJob) -> Any:
        if job.data["type"] != "circuit":
            raise RuntimeError(f"{job.data['type']} jobs cannot be executed by this fake")
        request = job.work
        return run_iqm_circuits(request["circuits"], self.qubits, request["shots"], self.seed)

    def job_view(self, job: FakeJob) -> dict[str, Any]:
        """IqmServerJob JSON."""
        status = _STATUS[job.state]
        timeline = [{"source": "server", "status": "created", "timestamp": job.data["created"]}]
        if job.started_at is not None:
            started = _now(job.started_at)
            timeline.append({"source": "qpu", "status": "execution_started", "timestamp": started})
        if job.final:
            ended = _now(job.finished_at)
            if job.started_at is not None:  # the instruments stop when the job ends
                timeline.append({"source": "qpu", "status": "execution_ended", "timestamp": ended})
            timeline.append({"source": "server", "status": status, "timestamp": ended})
        done = job.state == DONE
        return {
            "id": job.id,
            "type": job.data["type"],
            "status": status,
            "artifacts": [{"type": "measurements"}, {"type": "measurement_counts"}] if done else [],
            "messages": [{"source": "server", "message": job.error}] if job.error else [],
            "errors": [{"error_code": "execution_failed", "message": job.error}]
            if job.error
            else [],
            "qc": {"id": self.qc_id, "alias": self.alias},
            "timeline": timeline,
            "queue_position": None,
            "tag": job.data.get("tag"),
        }

    def _submission_problem(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "the run request must be a JSON object"
        circuits, shots = body.get("circuits"), body.get("shots")
        if not isinstance(circuits, list) or not circuits:
            return "'circuits' must be a non-empty list"
        if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= MAX_SHOTS:
            return f"'shots' must be an integer between 1 and {MAX_SHOTS}"
        calibration = body.get("calibration_set_id")
        if calibration not in (None, self.calibration_set_id):
            return f"unknown calibration_set_id {calibration!r}"
        for circuit in circuits:
            problem = circuit_problem(circuit, self.qubits, self.couplers)
            if problem:
                return problem
        return None

    # -- the ASGI app ------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake IQM Server")
        v1 = "/api/v1"

        def refused(request: Request) -> JSONResponse | None:
            if request.headers.get("authorization") == f"Bearer {self.token}":
                return None
            return _error(401, "Unauthorized: missing or invalid bearer token")

        def known_qc(qc: str) -> bool:
            return qc in (self.alias, self.qc_id)

        def known_calset(calset: str) -> bool:
            return calset in ("default", self.calibration_set_id)

        @app.get(v1 + "/quantum-computers")
        async def computers(request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            return JSONResponse({"quantum_computers": [self.computer_view()]})

        @app.get(v1 + "/quantum-computers/{qc}/health")
        async def health(qc: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            if not known_qc(qc):
                return _error(404, f"quantum computer {qc} not found")
            return JSONResponse({"healthy": self.healthy, "updated_at": _now()})

        @app.get(v1 + "/quantum-computers/{qc}")
        async def computer(qc: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            if not known_qc(qc):
                return _error(404, f"quantum computer {qc} not found")
            return JSONResponse(self.computer_details())

        @app.get(v1 + "/quantum-computers/{qc}/artifacts/static-quantum-architectures")
        async def static(qc: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            if not known_qc(qc) or not self.static_architecture:
                return _error(404, "no static quantum architecture")
            return JSONResponse(
                [
                    {
                        "qubits": list(self.qubits),
                        "computational_resonators": [],
                        "connectivity": [sorted(pair) for pair in self.couplers],
                    }
                ]
            )

        @app.get(v1 + "/calibration-sets/{qc}/{calset}")
        async def calibration(qc: str, calset: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            if not (known_qc(qc) and known_calset(calset)):
                return _error(404, f"calibration set {calset} of {qc} not found")
            return JSONResponse(self.calibration_set())

        @app.get(v1 + "/calibration-sets/{qc}/{calset}/{what}")
        async def calibration_part(qc: str, calset: str, what: str, request: Request) -> Any:
            if (denied := refused(request)) is not None:
                return denied
            parts = {
                "dynamic-quantum-architecture": self.dynamic_architecture,
                "metrics": self.quality_metrics,
            }
            if not (known_qc(qc) and known_calset(calset)) or what not in parts:
                return _error(404, f"{what} of calibration set {calset} of {qc} not found")
            return JSONResponse(parts[what]())

        @app.post(v1 + "/jobs/{first}/{second}")
        async def post_job(first: str, second: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            if second == "cancel" and self.jobs.get(first) is not None:
                job = self.jobs.cancel(first)
                assert job is not None
                return JSONResponse(self.job_view(job))
            if not known_qc(first):
                return _error(404, f"quantum computer {first} not found")
            if second not in ("circuit", "run", "sweep"):
                return _error(404, f"unknown job type {second}")
            return await self._submit(request, second)

        @app.get(v1 + "/jobs/{job_id}")
        async def get_job(job_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            job = self.jobs.get(job_id)
            if job is None:
                return _error(404, f"job {job_id} not found")
            if request.query_params.get("wait_until_terminal") == "true":
                wait = float(request.query_params.get("timeout_seconds", "30") or 30)
                deadline = time.monotonic() + min(wait, 30.0)
                while not job.final and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            return JSONResponse(self.job_view(job))

        @app.get(v1 + "/jobs/{job_id}/payload")
        async def payload(job_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            job = self.jobs.get(job_id)
            if job is None:
                return _error(404, f"job {job_id} not found")
            return JSONResponse(job.work)

        @app.get(v1 + "/jobs/{job_id}/artifacts/{name}")
        async def artifact(job_id: str, name: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            job = self.jobs.get(job_id)
            if job is None or job.state != DONE or name not in _ARTIFACTS:
                return _error(404, f"artifact {name} of job {job_id} not found")
            return JSONResponse(job.result[_ARTIFACTS[name]])

        return app

    async def _submit(self, request: Request, job_type: str) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "the body is not valid JSON")
        tag = request.query_params.get("tag")
        if tag is not None and len(tag) > 50:
            return _error(422, "tag must be at most 50 characters")
        use_timeslot = request.query_params.get("use_timeslot", "false")
        if use_timeslot not in ("true", "false"):
            return _error(422, "use_timeslot must be true or false")
        if job_type == "circuit":
            problem = self._submission_problem(body)
            if problem:
                return _error(400, problem)
        elif not isinstance(body, dict):
            return _error(400, "the run request must be a JSON object")
        body.setdefault("shots", 1)
        job = self.jobs.submit(
            body, type=job_type, tag=tag, use_timeslot=use_timeslot == "true", created=_now()
        )
        return JSONResponse(self.job_view(job))


_ARTIFACTS = {"measurements": 0, "measurement_counts": 1}


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def iqm_server(**options: Any) -> IQMServerFake:
    """Factory for ``qrmi fake serve iqm-server`` (options: see :class:`IQMServerFake`)."""
    return IQMServerFake(**options)
