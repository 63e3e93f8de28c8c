"""A fake Alice & Bob Felis API on 127.0.0.1 that runs simple QIR programs on qiskit-aer.

Every route needs HTTP Basic auth with the configured user and password (the API key is
base64 of ``user:password``). Jobs follow Felis's flow: ``POST /v1/jobs/`` creates one
(``CREATED``), ``POST /v1/jobs/{id}/input`` (multipart, part ``input``) uploads the program
(``FETCHING_INPUT``, ``INPUT_READY``), execution adds ``COMPILING`` ... ``EXECUTING`` and ends
with ``SUCCEEDED``, ``COMPILATION_FAILED`` (a program this fake cannot read),
``EXECUTION_FAILED`` or ``CANCELLED`` (``DELETE /v1/jobs/{id}``). The output
(``GET /v1/jobs/{id}/output``, ``text/plain`` as Felis serves it) is a histogram, one
``bitstring,count`` line per outcome, where character *i* of the bitstring is result *i*.

Execution: the human-readable QIR's quantum calls (``__quantum__qis__{h,x,y,z,s,s__adj,t,
t__adj,rx,ry,rz,cnot,cx,cz,mz,m,reset}__body`` with static qubit and result ids, ``null`` being
0) are converted to a qiskit circuit and sampled on qiskit-aer, noise-free: the cat-qubit
physics behind ``averageNbPhotons`` is not emulated (the parameter is validated only).
``nbShots`` shots (default 1000); ``seconds_per_shot`` emulates QPU time. Importing this module
imports FastAPI.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from qrmi.testing._jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, FakeJob, JobQueue
from qrmi.testing.server import FakeServer

__all__ = ["DEFAULT_TARGETS", "FelisFake", "QirError", "felis_server", "run_human_qir"]


def _signature(name: str, arguments: str) -> dict[str, str]:
    """A Felis instruction entry: the QIR function's signature."""
    return {"signature": f"__quantum__qis__{name}__body:void ({arguments})"}


def _param(kind: str, default: float, low: float, high: float) -> dict[str, Any]:
    """A Felis input-parameter description: ``{required, type, default, constraints}``."""
    return {
        "required": True,
        "type": kind,
        "default": default,
        "constraints": [{"min": low, "max": high}],
    }


_CAT_INSTRUCTIONS = [
    _signature("x", "%Qubit*"),
    _signature("z", "%Qubit*"),
    _signature("rz", "double, %Qubit*"),
    _signature("mz", "%Qubit*, %Result*"),
    _signature("mx", "%Qubit*, %Result*"),
    _signature("reset", "%Qubit*"),
    _signature("prepare_x", "i1, %Qubit*"),
    _signature("prepare_z", "i1, %Qubit*"),
    {"signature": "__quantum__qis__read_result__body:i1 (%Result*)"},
]

#: The targets served by default, in the shape of Felis's ``GET /v1/targets/``.
DEFAULT_TARGETS: list[dict[str, Any]] = [
    {
        "name": "EMU:1Q:LESCANNE_2020",
        "numQubits": 1,
        "instructions": _CAT_INSTRUCTIONS,
        "inputParams": {
            "nbShots": _param("int", 1000, 1, 10_000_000),
            "averageNbPhotons": _param("float", 4.0, 1.0, 7.0),
        },
    },
    {
        "name": "EMU:40Q:PHYSICAL_CATS",
        "numQubits": 40,
        "instructions": [*_CAT_INSTRUCTIONS, _signature("cnot", "%Qubit*, %Qubit*")],
        "inputParams": {
            "nbShots": _param("int", 1000, 1, 10_000_000),
            "averageNbPhotons": _param("float", 4.0, 1.0, 19.0),
        },
    },
]
#: Largest number of qubits this fake simulates.
MAX_QUBITS = 20

_ONE_QUBIT = {"h", "x", "y", "z", "s", "s__adj", "t", "t__adj", "reset"}
_ROTATIONS = {"rx", "ry", "rz"}
_TWO_QUBIT = {"cnot", "cx", "cz"}
_CALL = re.compile(r"call\s+\S+\s+@__quantum__qis__(\w+?)__body\s*\((.*)\)")
_POINTER = re.compile(r"%(Qubit|Result)\*\s+(null|inttoptr\s*\(\s*i64\s+(\d+)\s+to\s+%\w+\*\s*\))")
_DOUBLE = re.compile(r"double\s+([-+0-9.eE]+)")


def _param_problem(name: str, value: Any, spec: dict[str, Any]) -> str | None:
    """Why ``value`` does not fit the parameter description ``spec``, or ``None``."""
    kind = spec.get("type")
    if kind == "bool":
        return None if isinstance(value, bool) else f"input parameter {name} must be a boolean"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"input parameter {name} must be a number"
    if kind == "int" and not isinstance(value, int):
        return f"input parameter {name} must be an integer"
    for constraint in spec.get("constraints") or ():
        low, high = constraint.get("min"), constraint.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            return f"{name} must be between {low} and {high}"
    return None


class QirError(ValueError):
    """The program is not QIR this fake can execute."""


def _pointers(arguments: str, kind: str) -> list[int]:
    return [
        0 if match.group(2) == "null" else int(match.group(3))
        for match in _POINTER.finditer(arguments)
        if match.group(1) == kind
    ]


def parse_human_qir(text: str) -> list[tuple[str, list[int], list[float], list[int]]]:
    """``(gate, qubits, angles, results)`` for every quantum call of a QIR program."""
    operations = []
    for line in text.splitlines():
        match = _CALL.search(line)
        if match is None:
            continue
        gate, arguments = match.group(1), match.group(2)
        qubits, results = _pointers(arguments, "Qubit"), _pointers(arguments, "Result")
        angles = [float(a) for a in _DOUBLE.findall(arguments)]
        expected = 2 if gate in _TWO_QUBIT else 1
        if gate not in _ONE_QUBIT | _ROTATIONS | _TWO_QUBIT | {"mz", "m"}:
            raise QirError(f"unsupported quantum instruction __quantum__qis__{gate}__body")
        if len(qubits) != expected or (gate in _ROTATIONS and len(angles) != 1):
            raise QirError(f"cannot read the arguments of {gate}: {arguments.strip()}")
        if gate in ("mz", "m") and len(results) != 1:
            raise QirError(f"measurement without a static %Result*: {arguments.strip()}")
        operations.append((gate, qubits, angles, results))
    if not operations:
        raise QirError("the program has no __quantum__qis__*__body calls")
    return operations


def run_human_qir(text: str, shots: int, seed: int | None = None) -> dict[str, int]:
    """Histogram of ``shots`` runs of a QIR program (see the module docstring)."""
    from qiskit import QuantumCircuit
    from qiskit_aer import AerSimulator

    operations = parse_human_qir(text)
    n_qubits = 1 + max(q for _, qubits, _, _ in operations for q in qubits)
    results = [r for _, _, _, rs in operations for r in rs]
    if n_qubits > MAX_QUBITS:
        raise QirError(f"{n_qubits} qubits is more than this fake simulates ({MAX_QUBITS})")
    n_results = 1 + max(results) if results else 0
    circuit = QuantumCircuit(n_qubits, max(n_results, 1))
    for gate, qubits, angles, rs in operations:
        if gate in ("mz", "m"):
            circuit.measure(qubits[0], rs[0])
        elif gate in ("cnot", "cx"):
            circuit.cx(*qubits)
        elif gate in _ROTATIONS:
            getattr(circuit, gate)(angles[0], qubits[0])
        else:
            name = gate.replace("__adj", "dg")
            getattr(circuit, name)(qubits[0])
    counts = AerSimulator(seed_simulator=seed).run(circuit, shots=shots).result().get_counts()
    # Qiskit prints clbit 0 rightmost; Felis histograms here put result 0 first.
    return {key.replace(" ", "")[::-1][: max(n_results, 1)]: n for key, n in counts.items()}


def _stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")


class FelisFake(FakeServer):
    """The fake Felis API; see the module docstring. Tests use :attr:`jobs` and :attr:`targets`."""

    def __init__(
        self,
        *,
        user: str = "fake-user",
        password: str = "fake-password",
        targets: list[dict[str, Any]] | None = None,
        delay: float = 0.0,
        seconds_per_shot: float = 0.0,
        seed: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.user = user
        self.password = password
        self.targets = list(targets or DEFAULT_TARGETS)
        self.seed = seed
        self.created: dict[str, dict[str, Any]] = {}
        self.jobs = JobQueue(
            self._execute,
            delay=delay,
            duration=lambda job: job.work["shots"] * seconds_per_shot,
        )
        super().__init__(self._build_app(), host=host, port=port, name="alice-bob-felis")

    @property
    def api_key(self) -> str:
        """The API key for this fake: base64 of ``user:password``."""
        return base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    def settings(self, **extra: str) -> dict[str, str]:
        """Settings for an ``alice-bob-felis`` resource using this fake (``from_config`` keys)."""
        values = {
            "QRMI_AB_FELIS_API_KEY": self.api_key,
            "QRMI_AB_FELIS_BASE_ENDPOINT": self.url,
            "QRMI_AB_FELIS_HTTP_TIMEOUT": "10",
            "QRMI_AB_FELIS_RETRY_DEADLINE": "20",
        }
        values.update(extra)
        return values

    def resource_config(self, name: str = "ab_emu_1q_lescanne_2020") -> dict[str, Any]:
        """A ``qrmi_config.json`` resource entry for this fake (used by ``qrmi fake serve``)."""
        return {"name": name, "type": "alice-bob-felis", "environment": self.settings()}

    # -- jobs --------------------------------------------------------------------------------

    def _execute(self, job: FakeJob) -> dict[str, int]:
        return run_human_qir(job.work["qir"], job.work["shots"], self.seed)

    def job_view(self, job_id: str) -> dict[str, Any]:
        """The ExternalJob JSON of a job."""
        record = self.created[job_id]
        job = self.jobs.get(job_id)
        events = [{"type": "CREATED", "createdAt": _stamp(record["created"]), "message": None}]
        errors: list[dict[str, Any]] = []
        if job is not None:
            events += _events(job, errors)
        elif record.get("cancelled"):
            events.append({"type": "CANCELLED", "createdAt": _stamp(record["cancelled"])})
        return {
            "id": job_id,
            "target": record["target"],
            "inputParams": record["inputParams"],
            "inputDataFormat": "HUMAN_QIR",
            "outputDataFormat": "HISTOGRAM",
            "userName": self.user,
            "userId": "user-1",
            "organizationName": "fake-org",
            "events": events,
            "errors": errors,
        }

    def _job_problem(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "the body must be a JSON object"
        if body.get("inputDataFormat") != "HUMAN_QIR":
            return "inputDataFormat must be HUMAN_QIR"
        if body.get("outputDataFormat") != "HISTOGRAM":
            return "outputDataFormat must be HISTOGRAM"
        target = next((t for t in self.targets if t["name"] == body.get("target")), None)
        if target is None:
            return f"unknown target {body.get('target')!r}"
        params = body.get("inputParams", {})
        if not isinstance(params, dict):
            return "inputParams must be an object"
        for name, value in params.items():
            spec = target["inputParams"].get(name)
            if spec is None:
                return f"unknown input parameter {name!r} for target {target['name']}"
            problem = _param_problem(name, value, spec)
            if problem is not None:
                return problem
        return None

    # -- the ASGI app ------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake Alice & Bob Felis")

        def refused(request: Request) -> JSONResponse | None:
            if request.headers.get("authorization") == f"Basic {self.api_key}":
                return None
            return JSONResponse({"message": "Unauthorized"}, status_code=401)

        def unknown(job_id: str) -> JSONResponse:
            return JSONResponse({"message": f"job {job_id} not found"}, status_code=404)

        @app.get("/v1/targets/")
        async def targets(request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            return JSONResponse(self.targets)

        @app.post("/v1/jobs/")
        async def create(request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            try:
                body = json.loads(await request.body())
            except ValueError:
                body = None
            problem = self._job_problem(body)
            if problem:
                return JSONResponse({"message": problem}, status_code=400)
            job_id = str(uuid.uuid4())
            self.created[job_id] = {
                "target": body["target"],
                "inputParams": body.get("inputParams", {}),
                "created": datetime.now(UTC).timestamp(),
            }
            return JSONResponse(self.job_view(job_id), status_code=201)

        @app.post("/v1/jobs/{job_id}/input")
        async def upload(job_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            record = self.created.get(job_id)
            if record is None:
                return unknown(job_id)
            if self.jobs.get(job_id) is not None or record.get("cancelled"):
                return JSONResponse({"message": "input already provided"}, status_code=409)
            qir = _multipart_part(
                request.headers.get("content-type", ""), await request.body(), "input"
            )
            if qir is None:
                return JSONResponse(
                    {"message": "multipart/form-data with a part named 'input' is required"},
                    status_code=400,
                )
            shots = int(record["inputParams"].get("nbShots", 1000))
            self.jobs.submit({"qir": qir.decode(errors="replace"), "shots": shots}, job_id=job_id)
            return JSONResponse(self.job_view(job_id))

        @app.get("/v1/jobs/{job_id}")
        async def get_job(job_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            if job_id not in self.created:
                return unknown(job_id)
            return JSONResponse(self.job_view(job_id))

        @app.delete("/v1/jobs/{job_id}")
        async def cancel(job_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            record = self.created.get(job_id)
            if record is None:
                return unknown(job_id)
            if self.jobs.get(job_id) is not None:
                self.jobs.cancel(job_id)
            elif not record.get("cancelled"):
                record["cancelled"] = datetime.now(UTC).timestamp()
            return JSONResponse(self.job_view(job_id))

        @app.get("/v1/jobs/{job_id}/output")
        async def output(job_id: str, request: Request) -> Response:
            if (denied := refused(request)) is not None:
                return denied
            job = self.jobs.get(job_id)
            if job_id not in self.created:
                return unknown(job_id)
            if job is None or job.state != DONE:
                return JSONResponse({"message": "the job has no output yet"}, status_code=409)
            lines = [f"{bits},{count}" for bits, count in sorted(job.result.items())]
            return PlainTextResponse("\n".join(lines) + "\n")

        return app


def _events(job: FakeJob, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    created = _stamp(job.created_at)
    events = [{"type": kind, "createdAt": created} for kind in ("FETCHING_INPUT", "INPUT_READY")]
    if job.started_at is not None:
        started = _stamp(job.started_at)
        running = ("COMPILING", "COMPILED", "TRANSPILING", "TRANSPILED", "EXECUTING")
        events += [{"type": kind, "createdAt": started} for kind in running]
    if job.final:
        ended = _stamp(job.finished_at or job.created_at)
        kind = {DONE: "SUCCEEDED", CANCELLED: "CANCELLED"}.get(job.state)
        if job.state == FAILED:
            compile_error = (job.error or "").startswith("QirError")
            kind = "COMPILATION_FAILED" if compile_error else "EXECUTION_FAILED"
            errors.append({"type": kind, "message": job.error})
        events.append({"type": kind or "EXECUTION_FAILED", "createdAt": ended})
    assert job.state in (QUEUED, RUNNING) or job.final
    return events


def _multipart_part(content_type: str, body: bytes, name: str) -> bytes | None:
    """The content of form part ``name`` of a multipart/form-data body (stdlib parser)."""
    if not content_type.startswith("multipart/form-data"):
        return None
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == name:
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else None
    return None


def felis_server(**options: Any) -> FelisFake:
    """Factory for ``qrmi fake serve alice-bob-felis`` (options: see :class:`FelisFake`)."""
    return FelisFake(**options)
