"""A fake Pasqal Cloud (``core-fast`` API and its OAuth token endpoint) on 127.0.0.1.

One :class:`PasqalCloudFake` serves both the API (``/core-fast/api/...``) and the token
endpoint (``/oauth/token``, see :attr:`PasqalCloudFake.auth_url`). It checks what the real
service checks: a valid bearer token on every authenticated route, the OAuth grant and its
credentials, the required fields of a batch, the project id and the device type. Answers are
wrapped in ``{"code", "data", "message", "status"}`` like the real ones.

Execution: Pulser sequences (abstract representation) are deserialized with ``pulser`` and, for
registers of at most :data:`MAX_SIMULATED_ATOMS` atoms, run on ``pulser-simulation``'s Qutip
backend (``QutipBackendV2``): the counts are samples of the real final state. Larger registers,
and CUDA-Q sequences (not executable here), get counts of the right shape (bitstrings as long
as the register, ``runs`` samples in total) drawn uniformly at random. A sequence Pulser cannot
load makes its job ``ERROR``, as on the real service.

Importing this module imports FastAPI (the fakes need the ``testing`` extra).

Tokens: ``/oauth/token`` issues opaque tokens for the configured client credentials or user
account; :meth:`PasqalCloudFake.add_token` accepts a pre-issued token (a JWT-shaped one from
:func:`make_jwt` is refused once its ``exp`` has passed). Jobs run on a background thread
(:class:`~qrmi.testing._jobs.JobQueue`): ``delay`` keeps them ``PENDING`` for a while and
``seconds_per_run`` emulates QPU time (a job of N runs stays ``RUNNING`` N x that long).
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from qrmi.testing._jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, FakeJob, JobQueue
from qrmi.testing.auth import TokenIssuer
from qrmi.testing.server import FakeServer

__all__ = [
    "DEVICE_TYPES",
    "MAX_SIMULATED_ATOMS",
    "PasqalCloudFake",
    "device_specs",
    "make_jwt",
    "pasqal_cloud_server",
    "run_pulser_sequence",
]

DEVICE_TYPES = ("FRESNEL", "FRESNEL_CAN1", "EMU_MPS", "EMU_FREE", "EMU_FRESNEL")
#: Largest register the fakes simulate exactly (the cost grows as 2^atoms).
MAX_SIMULATED_ATOMS = 6
AUDIENCE = "https://apis.pasqal.cloud/account/api/v1"
USER_LOGIN_CLIENT_ID = "PeZvo7Atx7IVv3iel59asJSb4Ig7vuSB"
PASSWORD_GRANT = "http://auth0.com/oauth/grant-type/password-realm"

_JOB_STATUS = {
    QUEUED: "PENDING",
    RUNNING: "RUNNING",
    DONE: "DONE",
    FAILED: "ERROR",
    CANCELLED: "CANCELED",
}
_specs_lock = threading.Lock()
_specs_cache: dict[str, str] = {}


def make_jwt(exp: float | None, **claims: Any) -> str:
    """An unsigned JWT (``alg: none``) with ``exp`` and ``claims``: for tests of expiry checks."""

    def part(value: Mapping[str, Any]) -> str:
        raw = base64.urlsafe_b64encode(json.dumps(value).encode()).decode()
        return raw.rstrip("=")

    body = dict(claims)
    if exp is not None:
        body["exp"] = int(exp)
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(body)}.signature"


def device_specs(device_type: str) -> str:
    """The Pulser abstract representation served as the specs of ``device_type``.

    Every device type is described by Pulser's ``AnalogDevice`` (Fresnel-like); the JSON text is
    computed once per process (importing Pulser takes a few seconds).
    """
    with _specs_lock:
        if device_type not in _specs_cache:
            from pulser.devices import AnalogDevice

            _specs_cache[device_type] = AnalogDevice.to_abstract_repr()
        return _specs_cache[device_type]


def run_pulser_sequence(
    sequence: str,
    runs: int,
    *,
    variables: Mapping[str, Any] | None = None,
    seed: int | None = None,
    max_atoms: int = MAX_SIMULATED_ATOMS,
) -> dict[str, int]:
    """Counts of ``runs`` shots of a Pulser sequence (abstract representation JSON text).

    Registers of at most ``max_atoms`` atoms are simulated with ``QutipBackendV2``; larger ones
    get uniformly random bitstrings of the right length. Raises whatever Pulser raises for a
    sequence it cannot load or build.
    """
    from pulser.sequence import Sequence

    seq = Sequence.from_abstract_repr(sequence)
    if seq.is_parametrized() or variables:
        seq = seq.build(**dict(variables or {}))
    atoms = len(seq.register.qubit_ids)
    if atoms == 0:
        raise ValueError("the sequence's register has no atoms")
    if atoms > max_atoms or not seq.get_duration():
        return uniform_counts(atoms, runs, seed)
    from pulser.backend import BitStrings
    from pulser_simulation import QutipBackendV2, QutipConfig

    if seed is not None:
        import numpy as np

        np.random.seed(seed)  # best effort: sampling may draw from numpy's global generator
    config = QutipConfig(observables=[BitStrings(num_shots=runs)])
    counts = QutipBackendV2(seq, config=config).run().final_bitstrings
    return {str(bits): int(n) for bits, n in counts.items()}


def uniform_counts(width: int, shots: int, seed: int | None = None) -> dict[str, int]:
    """``shots`` uniformly random bitstrings of ``width`` bits, counted."""
    rng = random.Random(seed)
    samples = (format(rng.getrandbits(width), f"0{width}b") for _ in range(shots))
    return dict(Counter(samples))


def _cudaq_width(sequence: Mapping[str, Any]) -> int:
    """How many atoms a CUDA-Q analog sequence uses (best effort; 1 when unclear)."""
    setup = sequence.get("setup")
    if isinstance(setup, Mapping):
        for key in ("atoms", "register", "coordinates", "sites", "atom_sites"):
            value = setup.get(key)
            if isinstance(value, list) and value:
                return len(value)
    return 1


def _stamp(when: float | None) -> str | None:
    """An epoch time as ISO 8601 text in UTC, or ``None``."""
    return None if when is None else datetime.fromtimestamp(when, UTC).isoformat()


def _envelope(data: Any, code: int = 200, message: str = "OK") -> dict[str, Any]:
    return {"code": code, "data": data, "message": message, "status": "success"}


class PasqalCloudFake(FakeServer):
    """The fake Pasqal Cloud; see the module docstring.

    Attributes tests use: :attr:`issuer` (tokens), :attr:`jobs` (the job queue: ``hold()``,
    ``resume()``, ``fail()``), :attr:`availability` (device type -> ``"ACTIVE"``, ``"RETIRED"``
    ...), :attr:`batches`.
    """

    def __init__(
        self,
        *,
        project_id: str = "proj-fake",
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        username: str = "alice",
        password: str = "fake-password",
        tokens: tuple[str, ...] = (),
        token_lifetime: float = 3600.0,
        delay: float = 0.0,
        seconds_per_run: float = 0.0,
        seed: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.seconds_per_run = seconds_per_run
        self.project_id = project_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.username = username
        self.password = password
        self.seed = seed
        self.issuer = TokenIssuer(lifetime=token_lifetime, prefix="pasqal")
        self.static_tokens = set(tokens)
        self.availability = dict.fromkeys(DEVICE_TYPES, "ACTIVE")
        self.batches: dict[str, dict[str, Any]] = {}
        self.jobs = JobQueue(
            self._execute, delay=delay, duration=lambda job: job.work["runs"] * self.seconds_per_run
        )
        self._lock = threading.Lock()
        super().__init__(self._build_app(), host=host, port=port, name="pasqal-cloud")

    @property
    def auth_url(self) -> str:
        """The token endpoint (``QRMI_PASQAL_CLOUD_AUTH_ENDPOINT``)."""
        return self.url + "/oauth/token"

    def settings(self, *, credentials: str = "client", **extra: str) -> dict[str, str]:
        """Settings for a ``pasqal-cloud`` resource using this fake (``from_config`` keys).

        ``credentials``: ``"client"`` (client id/secret), ``"token"`` (a fresh static token)
        or ``"none"``. A ``HOME``/``PASQAL_CONFIG_ROOT`` pointing nowhere keeps a real
        ``~/.pasqal/config`` out of tests.
        """
        values = {
            "QRMI_PASQAL_CLOUD_BASE_URL": self.url,
            "QRMI_PASQAL_CLOUD_AUTH_ENDPOINT": self.auth_url,
            "QRMI_PASQAL_CLOUD_PROJECT_ID": self.project_id,
            "QRMI_PASQAL_CLOUD_HTTP_TIMEOUT": "10",
            "QRMI_PASQAL_CLOUD_RETRY_DEADLINE": "20",
            "PASQAL_CONFIG_ROOT": "/nonexistent-pasqal-config-root",
        }
        if credentials == "client":
            values["QRMI_PASQAL_CLOUD_CLIENT_ID"] = self.client_id
            values["QRMI_PASQAL_CLOUD_CLIENT_SECRET"] = self.client_secret
        elif credentials == "token":
            values["QRMI_PASQAL_CLOUD_AUTH_TOKEN"] = self.issuer.issue("static").token
        values.update(extra)
        return values

    def resource_config(self, name: str = "EMU_FREE") -> dict[str, Any]:
        """A ``qrmi_config.json`` resource entry for this fake (used by ``qrmi fake serve``)."""
        environment = self.settings()
        environment.pop("PASQAL_CONFIG_ROOT")
        return {"name": name, "type": "pasqal-cloud", "environment": environment}

    def add_token(self, token: str) -> None:
        """Accept ``token`` as a pre-issued access token."""
        self.static_tokens.add(token)

    # -- auth --------------------------------------------------------------------------------

    def _token_valid(self, authorization: str | None) -> bool:
        if self.issuer.validate_header(authorization) is not None:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or token not in self.static_tokens:
            return False
        parts = token.split(".")
        if len(parts) == 3:
            try:
                claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            except ValueError:
                return False
            exp = claims.get("exp") if isinstance(claims, dict) else None
            if isinstance(exp, int | float) and exp <= time.time():
                return False
        return True

    def _grant(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type")
        if form.get("audience") != AUDIENCE:
            return 403, {"error": "access_denied", "error_description": "unknown audience"}
        if grant == "client_credentials":
            ok = (form.get("client_id"), form.get("client_secret")) == (
                self.client_id,
                self.client_secret,
            )
            subject = form.get("client_id", "")
        elif grant == PASSWORD_GRANT:
            ok = (
                form.get("client_id") == USER_LOGIN_CLIENT_ID
                and form.get("realm") == "pcs-users"
                and (form.get("username"), form.get("password")) == (self.username, self.password)
            )
            subject = form.get("username", "")
        else:
            return 400, {"error": "unsupported_grant_type", "error_description": str(grant)}
        if not ok:
            return 401, {"error": "invalid_grant", "error_description": "Wrong credentials."}
        issued = self.issuer.issue(subject)
        return 200, {
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": int(issued.expires_in),
        }

    # -- batches and jobs --------------------------------------------------------------------

    def _execute(self, job: FakeJob) -> dict[str, int]:
        work = job.work
        if "cudaq" in work:
            return uniform_counts(_cudaq_width(work["cudaq"]), work["runs"], self.seed)
        return run_pulser_sequence(
            work["sequence"], work["runs"], variables=work.get("variables"), seed=self.seed
        )

    def create_batch(
        self, sequence: str, jobs: list[dict[str, Any]], device_type: str, *, cudaq: Any = None
    ) -> dict[str, Any]:
        """Create a batch and queue its jobs; return the batch view."""
        batch_id = str(uuid.uuid4())
        job_ids = []
        for spec in jobs:
            work: dict[str, Any] = {"sequence": sequence, "runs": spec["runs"]}
            if spec.get("variables"):
                work["variables"] = spec["variables"]
            if cudaq is not None:
                work = {"cudaq": cudaq, "runs": spec["runs"]}
            job_ids.append(self.jobs.submit(work, batch_id=batch_id).id)
        with self._lock:
            self.batches[batch_id] = {
                "id": batch_id,
                "device_type": device_type,
                "project_id": self.project_id,
                "sequence_builder": sequence,
                "job_ids": job_ids,
                "created_at": time.time(),
            }
        return self.batch_view(batch_id)

    def batch_view(self, batch_id: str) -> dict[str, Any]:
        """The batch as the API shows it (status aggregated from its jobs)."""
        batch = self.batches[batch_id]
        statuses = [self.job_view(job_id)["status"] for job_id in batch["job_ids"]]
        return {
            "id": batch_id,
            "status": _batch_status(statuses),
            "job_ids": list(batch["job_ids"]),
            "device_type": batch["device_type"],
            "project_id": batch["project_id"],
            "sequence_builder": batch["sequence_builder"],
        }

    def job_view(self, job_id: str) -> dict[str, Any]:
        """A job as the API shows it."""
        job = self.jobs.get(job_id)
        assert job is not None
        status = _JOB_STATUS[job.state]
        if job.state == RUNNING and job.cancel_requested:
            status = "CANCELING"
        changed = job.finished_at or job.started_at or job.created_at
        return {
            "id": job.id,
            "batch_id": job.data["batch_id"],
            "project_id": self.project_id,
            "status": status,
            "runs": job.work["runs"],
            "errors": [job.error] if job.error else [],
            "created_at": _stamp(job.created_at),
            "updated_at": _stamp(changed),
            # When the QPU began and finished processing the job (its emulated run).
            "start_timestamp": _stamp(job.started_at),
            "end_timestamp": _stamp(job.finished_at if job.started_at else None),
        }

    # -- the ASGI app ------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake Pasqal Cloud")
        api = "/core-fast/api"

        def reply(data: Any, status: int = 200, message: str = "OK") -> JSONResponse:
            if status >= 400:
                body = {"code": status, "data": data, "message": message, "status": "fail"}
                return JSONResponse(body, status_code=status)
            return JSONResponse(_envelope(data, status, message), status_code=status)

        def refused(request: Request) -> JSONResponse | None:
            if self._token_valid(request.headers.get("authorization")):
                return None
            return reply({}, 401, "Unauthorized: missing, invalid or expired bearer token")

        @app.post("/oauth/token")
        async def token(request: Request) -> JSONResponse:
            content_type = request.headers.get("content-type", "")
            if not content_type.startswith("application/x-www-form-urlencoded"):
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            form = dict(parse_qsl((await request.body()).decode()))
            status, body = self._grant(form)
            return JSONResponse(body, status_code=status)

        @app.get(api + "/v1/devices")
        async def devices(device_type: str | None = None) -> JSONResponse:
            kinds = [device_type] if device_type else list(DEVICE_TYPES)
            return reply(
                [
                    {
                        "device_type": kind,
                        "status": "UP",
                        "availability": self.availability.get(kind, "RETIRED"),
                    }
                    for kind in kinds
                    if kind in DEVICE_TYPES
                ]
            )

        @app.get(api + "/v1/devices/public-specs")
        async def public_specs() -> JSONResponse:
            emulators = [kind for kind in DEVICE_TYPES if kind.startswith("EMU")]
            return reply([{"device_type": k, "specs": device_specs(k)} for k in emulators])

        @app.get(api + "/v1/devices/specs/{device_type}")
        async def specs(device_type: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            if device_type not in DEVICE_TYPES:
                return reply({}, 404, f"device type {device_type} not found")
            return reply({"device_type": device_type, "specs": device_specs(device_type)})

        @app.post(api + "/v1/batches")
        async def create_batch(request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            body, problem = await _json_body(request)
            problem = problem or self._batch_problem(body)
            if problem:
                return reply({"description": problem}, 400, "Bad request")
            if body["project_id"] != self.project_id:
                return reply({}, 403, "you are not a member of this project")
            view = self.create_batch(body["sequence_builder"], body["jobs"], body["device_type"])
            return reply(view)

        @app.post(api + "/v1/cudaq/job")
        async def create_cudaq(request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            body, problem = await _json_body(request)
            if not problem:
                problem = _cudaq_problem(body)
            if problem:
                return reply({"description": problem}, 400, "Bad request")
            if body["project_id"] != self.project_id:
                return reply({}, 403, "you are not a member of this project")
            view = self.create_batch(
                json.dumps(body["sequence"]),
                [{"runs": body["shots"]}],
                body["machine"],
                cudaq=body["sequence"],
            )
            return reply({"id": view["id"], "status": view["status"]})

        @app.get(api + "/v1/cudaq/job/{job_id}")
        async def get_cudaq(job_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            if job_id not in self.batches:
                return reply({}, 404, f"job {job_id} not found")
            view = self.batch_view(job_id)
            job = self.jobs.get(view["job_ids"][0])
            result = {"counter": job.result} if job is not None and job.state == DONE else None
            return reply({"id": job_id, "status": view["status"], "result": result})

        @app.get(api + "/v2/batches/{batch_id}")
        async def get_batch(batch_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            if batch_id not in self.batches:
                return reply({}, 404, f"batch {batch_id} not found")
            return reply(self.batch_view(batch_id))

        @app.get(api + "/v2/jobs/{job_id}")
        async def get_job(job_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            if self.jobs.get(job_id) is None:
                return reply({}, 404, f"job {job_id} not found")
            return reply(self.job_view(job_id))

        @app.patch(api + "/v2/batches/{batch_id}/cancel")
        async def cancel_batch(batch_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            if batch_id not in self.batches:
                return reply({}, 404, f"batch {batch_id} not found")
            for job_id in self.batches[batch_id]["job_ids"]:
                self.jobs.cancel(job_id)
            return reply(self.batch_view(batch_id))

        @app.get(api + "/v1/batches/{batch_id}/full_results")
        async def full_results(batch_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            if batch_id not in self.batches:
                return reply({}, 404, f"batch {batch_id} not found")
            results = {}
            for job_id in self.batches[batch_id]["job_ids"]:
                job = self.jobs.get(job_id)
                if job is not None and job.state == DONE:
                    results[job_id] = {"counter": job.result, "raw": []}
            return reply(results)

        return app

    def _batch_problem(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "the body must be a JSON object"
        for key in ("sequence_builder", "jobs", "device_type", "project_id"):
            if key not in body:
                return f"field required: {key}"
        if not isinstance(body["sequence_builder"], str):
            return "sequence_builder must be the sequence's JSON text"
        try:
            json.loads(body["sequence_builder"])
        except ValueError:
            return "sequence_builder is not valid JSON"
        if body["device_type"] not in DEVICE_TYPES:
            return f"device_type must be one of {', '.join(DEVICE_TYPES)}"
        jobs = body["jobs"]
        if not isinstance(jobs, list) or not jobs:
            return "jobs must be a non-empty list"
        for job in jobs:
            runs = job.get("runs") if isinstance(job, dict) else None
            if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
                return "every job needs a positive integer 'runs'"
        return None

    def stop(self) -> None:
        """Stop serving (queued jobs keep their state; a restart serves them again)."""
        super().stop()


async def _json_body(request: Request) -> tuple[Any, str | None]:
    if not request.headers.get("content-type", "").startswith("application/json"):
        return None, "Content-Type must be application/json"
    try:
        return json.loads(await request.body()), None
    except ValueError:
        return None, "the body is not valid JSON"


def _cudaq_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    for key in ("machine", "shots", "project_id", "sequence"):
        if key not in body:
            return f"field required: {key}"
    shots = body["shots"]
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        return "shots must be a positive integer"
    sequence = body["sequence"]
    if not isinstance(sequence, dict) or "setup" not in sequence or "hamiltonian" not in sequence:
        return "sequence must be an object with 'setup' and 'hamiltonian'"
    return None


def _batch_status(job_statuses: list[str]) -> str:
    if any(s == "RUNNING" for s in job_statuses):
        return "RUNNING"
    if any(s == "PENDING" for s in job_statuses):
        started = any(s != "PENDING" for s in job_statuses)
        return "RUNNING" if started else "PENDING"
    if any(s == "ERROR" for s in job_statuses):
        return "ERROR"
    if job_statuses and all(s == "CANCELED" for s in job_statuses):
        return "CANCELED"
    return "DONE"


def pasqal_cloud_server(**options: Any) -> PasqalCloudFake:
    """Factory for ``qrmi fake serve pasqal-cloud`` (options: see :class:`PasqalCloudFake`)."""
    return PasqalCloudFake(**options)
