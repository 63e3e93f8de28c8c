"""A fake OQTOPUS Cloud User API on 127.0.0.1 that runs OpenQASM 3 jobs on the emulator engine.

Routes and answers follow the service's User API router. Every route but storage needs the
``q-api-token`` header, ``<token id>.<secret>``: 401 when missing, malformed or unknown, 403
when :attr:`OqtopusFake.approved` is false. Errors are ``{"message": ...}``; ``null`` job
fields are left out; ``allowed_devices`` limits the devices the user may see and use (others
are 403):

* ``GET /devices``, ``GET /devices/{device_id}``: the device descriptions
  (``device_id``, ``device_type``, ``status`` ``available``/``unavailable``, ``available_at``,
  ``n_pending_jobs``, ``n_qubits``, ``basis_gates``, ``supported_instructions``,
  ``device_info``, ``calibrated_at``, ``description``). ``device_info`` is a storage URL of a
  zipped JSON document (``inline_device_info=True``: the JSON text itself).
* ``POST /jobs`` registers a job (status ``registered``; ``GET /jobs/{id}`` shows only
  ``{job_id, status}``) and returns ``{job_id, presigned_url: {url, fields}}``: an S3-style
  presigned POST form (``key`` = ``{job_id}/input.zip``, ``AWSAccessKeyId``,
  ``x-amz-security-token``, ``policy``, ``signature``).
* ``POST /storage/{bucket}`` takes that form with a ``file`` part (a zip holding one JSON
  document ``{"program": [...], "operator": [...]}`` or ``{"sse_program": ...}``); a wrong
  signature, an expired policy or a key outside the policy is 403 (S3's XML error).
  ``GET /storage/{bucket}/{key}?AWSAccessKeyId=&Signature=&Expires=`` downloads job files.
* ``POST /jobs/{id}/submit`` with ``{device_id, job_type, shots, name?, description?,
  transpiler_info?, simulator_info?, mitigation_info?}``: a body the request model refuses is
  FastAPI's 422 ``{"detail": [{type, loc, msg, input}]}``; then 404 for an unknown job, 400 when the
  job is not ``registered``, the device is unknown (``device not found``) or not available
  (``device X is not available``: the service refuses new jobs then), or the input was not
  uploaded; else ``{"message": "job submitted"}``.
* ``GET /jobs``, ``GET /jobs/{id}`` (``job_info`` holds storage URLs of ``input`` and
  ``result``, and the ``message`` of a failure), ``GET /jobs/{id}/status`` (404 ``job not
  found with the given id``), ``POST /jobs/{id}/cancel`` (``registered``, ``submitted``,
  ``ready``, ``running``: cancelled; ``cancelled``: accepted again; otherwise 400),
  ``DELETE /jobs/{id}`` (final jobs only, else 400; the job and its files are gone).

Execution: ``sampling`` runs the program on the emulator engine's sampler and returns
``{"sampling": {"counts": {bitstring: n}, "divided_counts": null}}`` (bit 0 rightmost, as
Qiskit); ``multi_manual`` runs each program and returns their joint ``counts`` (program 0's
bits rightmost) and per-program ``divided_counts``; ``estimation`` drops final measurements
and returns ``{"estimation": {"exp_value", "stds"}}`` for ``operator`` (``"X 0 Y 1"`` Pauli
strings with ``coeff``). A program that does not parse or uses more qubits than the device
has fails its job with a ``message``, as the service's transpiler does; ``sse`` jobs are
accepted and fail (user Python does not run here). ``seconds_per_shot`` emulates QPU time;
:meth:`OqtopusFake.set_available` makes a device unavailable (its queued jobs wait, new
ones are refused). Importing this module imports FastAPI.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import time
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from qrmi.testing._jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, FakeJob, JobQueue
from qrmi.testing.server import FakeServer

__all__ = ["FakeOqtopusDevice", "OqtopusFake", "oqtopus_server", "run_oqtopus_job"]

JOB_TYPES = ("sampling", "estimation", "multi_manual", "sse")
MAX_SHOTS = 10_000_000
BUCKET = "oqtopus-jobs"
URL_LIFETIME_SECONDS = 3600
_STATUS = {
    QUEUED: "submitted",
    RUNNING: "running",
    DONE: "succeeded",
    FAILED: "failed",
    CANCELLED: "cancelled",
}
_CANCELLABLE = ("registered", "submitted", "ready", "running")
_INFO_FIELDS = ("transpiler_info", "simulator_info", "mitigation_info")
NOT_FOUND = "job not found with the given id"
_FINAL = ("succeeded", "failed", "cancelled")
BASIS_GATES = [
    *("x", "y", "z", "h", "s", "sdg", "t", "tdg", "rx", "ry", "rz", "cx", "cz", "swap"),
    *("u1", "u2", "u3", "u", "p", "id", "sx", "sxdg"),
]


def _now(when: float | None = None) -> str:
    stamp = datetime.now(UTC) if when is None else datetime.fromtimestamp(when, UTC)
    return stamp.isoformat(timespec="seconds")


@dataclass
class FakeOqtopusDevice:
    """One device of the fake. ``snapshot`` is the emulator device whose size is emulated."""

    device_id: str
    n_qubits: int = 64
    device_type: str = "QPU"
    snapshot: str = "fake_brooklyn"
    description: str = "fake OQTOPUS device (emulator engine)"
    available: bool = True
    available_at: str | None = None
    basis_gates: list[str] = field(default_factory=lambda: list(BASIS_GATES))
    supported_instructions: list[str] = field(
        default_factory=lambda: ["measure", "barrier", "reset"]
    )

    def calibration(self) -> dict[str, Any]:
        """The ``device_info`` document: qubit count, connectivity and plausible figures."""
        qubits = range(self.n_qubits)
        return {
            "n_qubits": self.n_qubits,
            "calibration_data": {
                "qubit_connectivity": [f"({q},{q + 1})" for q in range(self.n_qubits - 1)],
                "t1": {str(q): 55.0 for q in qubits},
                "t2": {str(q): 60.0 for q in qubits},
                "ro_error": {str(q): 0.02 for q in qubits},
            },
        }


# -- execution ------------------------------------------------------------------------------


def run_oqtopus_job(
    job_type: str,
    job_input: Mapping[str, Any],
    shots: int,
    device: FakeOqtopusDevice,
    seed: int | None = None,
) -> dict[str, Any]:
    """Run a job's input on the emulator engine; the OQTOPUS result document.

    Raises:
        ValueError: the job cannot run (bad program, too many qubits, SSE job); the message
            becomes the job's ``message``.
    """
    programs = list(job_input.get("program") or [])
    if job_type == "sse":
        raise ValueError("SSE jobs (Python programs) cannot run in this fake")
    for index, program in enumerate(programs):
        _check_size(index, program, device)
    if job_type == "estimation":
        return {"estimation": _estimate(programs[0], job_input["operator"], device, seed)}
    per_program = [_shots_of(p, shots, device, seed) for p in programs]
    counts = _histogram(["".join(reversed(bits)) for bits in zip(*per_program, strict=True)])
    divided = None
    if job_type == "multi_manual":
        divided = {str(i): _histogram(bits) for i, bits in enumerate(per_program)}
    return {"sampling": {"counts": counts, "divided_counts": divided}}


def _histogram(bitstrings: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for bits in bitstrings:
        counts[bits] = counts.get(bits, 0) + 1
    return dict(sorted(counts.items()))


def _circuit(program: str) -> Any:
    from qiskit import qasm3

    try:
        return qasm3.loads(program)
    except Exception as exc:  # any parse failure fails the job, as OQTOPUS's transpiler does
        detail = " ".join(str(exc).split())
        raise ValueError(f"the program is not valid OpenQASM 3: {detail}") from None


def _check_size(index: int, program: str, device: FakeOqtopusDevice) -> None:
    circuit = _circuit(program)
    if circuit.num_qubits > device.n_qubits:
        raise ValueError(
            f"program {index} uses {circuit.num_qubits} qubits; device {device.device_id} "
            f"has {device.n_qubits}"
        )
    if circuit.num_clbits == 0:
        raise ValueError(f"program {index} measures no qubit")


def _shots_of(program: str, shots: int, device: FakeOqtopusDevice, seed: int | None) -> list[str]:
    """Per-shot bitstrings of one program (bit 0 rightmost)."""
    from qiskit_ibm_runtime import RuntimeDecoder

    from qrmi.backends.local_emulator.engine import run_primitive

    params = {"pubs": [[program, None, shots]], "version": 2}
    text = run_primitive("sampler", params, device=device.snapshot, seed=seed)
    result = json.loads(text, cls=RuntimeDecoder)
    return [str(bits) for bits in result[0].join_data().get_bitstrings()]


def _estimate(
    program: str, operator: list[Mapping[str, Any]], device: FakeOqtopusDevice, seed: int | None
) -> dict[str, float]:
    from qiskit import qasm3
    from qiskit_ibm_runtime import RuntimeDecoder

    from qrmi.backends.local_emulator.engine import run_primitive

    circuit = _circuit(program).remove_final_measurements(inplace=False)
    observable: dict[str, float] = {}
    for term in operator:
        label = _pauli_label(str(term["pauli"]), circuit.num_qubits)
        observable[label] = observable.get(label, 0.0) + float(term.get("coeff", 1.0) or 0.0)
    params = {"pubs": [[qasm3.dumps(circuit), observable]], "version": 2}
    text = run_primitive("estimator", params, device=device.snapshot, seed=seed)
    data = json.loads(text, cls=RuntimeDecoder)[0].data
    return {"exp_value": float(data.evs), "stds": float(data.stds)}


def _pauli_label(pauli: str, num_qubits: int) -> str:
    """``"X 0 Y 2"`` -> ``"YIX"`` on ``num_qubits`` qubits (qubit 0 rightmost)."""
    words = pauli.split()
    label = ["I"] * num_qubits
    if len(words) % 2:
        raise ValueError(f"operator pauli {pauli!r} must alternate Pauli letters and qubits")
    for letter, qubit in zip(words[::2], words[1::2], strict=True):
        if letter.upper() not in "IXYZ" or not qubit.isdigit() or int(qubit) >= num_qubits:
            raise ValueError(f"operator pauli {pauli!r} names an unknown Pauli or qubit")
        label[num_qubits - 1 - int(qubit)] = letter.upper()
    return "".join(label)


# -- storage --------------------------------------------------------------------------------


def _zip(document: Any, name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, document if isinstance(document, str) else json.dumps(document))
    return buffer.getvalue()


def _unzip_json(data: bytes) -> Any:
    """The one JSON document of an uploaded zip; raises ValueError otherwise."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if len(names) != 1:
                raise ValueError(f"the archive must hold one file; it holds {len(names)}")
            return json.loads(archive.read(names[0]))
    except zipfile.BadZipFile:
        raise ValueError("the uploaded file is not a zip archive") from None


def _s3_error(status: int, code: str, message: str) -> Response:
    body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}"
    return Response(body + "</Message></Error>", status_code=status, media_type="application/xml")


class _Storage:
    """S3-style presigned POST uploads and GET downloads, signed with a local secret."""

    def __init__(self) -> None:
        self.access_key = "FAKEOQTOPUSKEY"
        self._secret = uuid.uuid4().hex.encode()
        self.objects: dict[str, bytes] = {}

    def _sign(self, text: str) -> str:
        digest = hmac.new(self._secret, text.encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()

    def upload_form(self, base_url: str, key: str) -> dict[str, Any]:
        """``{url, fields}`` allowing one upload to ``key`` for an hour."""
        expires = datetime.now(UTC) + timedelta(seconds=URL_LIFETIME_SECONDS)
        policy = {
            "expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "conditions": [{"bucket": BUCKET}, {"key": key}],
        }
        encoded = base64.b64encode(json.dumps(policy).encode()).decode()
        fields = {
            "key": key,
            "AWSAccessKeyId": self.access_key,
            "x-amz-security-token": "fake-session-token",
            "policy": encoded,
            "signature": self._sign(encoded),
        }
        return {"url": f"{base_url}/storage/{BUCKET}", "fields": fields}

    def download_url(self, base_url: str, key: str) -> str:
        """A presigned GET URL of ``key``, valid for an hour."""
        expires = str(int(time.time()) + URL_LIFETIME_SECONDS)
        query = urlencode(
            {
                "AWSAccessKeyId": self.access_key,
                "Signature": self._sign(f"GET\n{key}\n{expires}"),
                "Expires": expires,
            }
        )
        return f"{base_url}/storage/{BUCKET}/{quote(key)}?{query}"

    def accept_upload(self, form: Mapping[str, Any], content: bytes) -> Response | None:
        """Store ``content`` under the form's key; an S3 error response if the form is bad."""
        policy, key = str(form.get("policy", "")), str(form.get("key", ""))
        if not hmac.compare_digest(str(form.get("signature", "")), self._sign(policy)):
            return _s3_error(403, "SignatureDoesNotMatch", "The request signature is wrong.")
        try:
            document = json.loads(base64.b64decode(policy))
        except ValueError:
            return _s3_error(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.")
        expires = datetime.strptime(document["expiration"], "%Y-%m-%dT%H:%M:%SZ")
        if expires.replace(tzinfo=UTC) < datetime.now(UTC):
            return _s3_error(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
        if {"key": key} not in document["conditions"]:
            return _s3_error(403, "AccessDenied", "Invalid according to Policy: key.")
        self.objects[key] = content
        return None

    def read(self, key: str, params: Mapping[str, str]) -> Response:
        """The object at ``key`` if the presigned query is valid and not expired."""
        expires = params.get("Expires", "")
        signature = self._sign(f"GET\n{key}\n{expires}")
        if not hmac.compare_digest(params.get("Signature", ""), signature):
            return _s3_error(403, "SignatureDoesNotMatch", "The request signature is wrong.")
        if not expires.isdigit() or int(expires) < time.time():
            return _s3_error(403, "AccessDenied", "Request has expired")
        if key not in self.objects:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        return Response(self.objects[key], media_type="application/zip")


# -- the fake service -----------------------------------------------------------------------


class OqtopusFake(FakeServer):
    """The fake OQTOPUS Cloud; see the module docstring. Tests use :attr:`jobs`,
    :attr:`devices`, :attr:`storage` and :meth:`set_available`."""

    def __init__(
        self,
        *,
        token: str = "fake-token-id.fake-oqtopus-secret",
        devices: list[FakeOqtopusDevice] | None = None,
        inline_device_info: bool = False,
        allowed_devices: list[str] | None = None,
        delay: float = 0.0,
        seconds_per_shot: float = 0.0,
        seed: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        default = [
            FakeOqtopusDevice("anemone"),
            FakeOqtopusDevice(
                "qulacs",
                n_qubits=39,
                device_type="simulator",
                description="fake state vector simulator (emulator engine)",
            ),
        ]
        self.devices = {d.device_id: d for d in devices or default}
        self.inline_device_info = inline_device_info
        self.allowed_devices = allowed_devices
        self.approved = True
        self.seed = seed
        self.storage = _Storage()
        self.registered: dict[str, dict[str, Any]] = {}
        self._deleted: set[str] = set()
        self.jobs = JobQueue(
            self._execute, delay=delay, duration=lambda job: job.work["shots"] * seconds_per_shot
        )
        super().__init__(self._build_app(), host=host, port=port, name="oqtopus")

    # -- what tests and ``qrmi fake serve`` use ----------------------------------------------

    @property
    def resource_name(self) -> str:
        """The first device's id: the resource name that addresses it."""
        return next(iter(self.devices))

    def settings(self, **extra: str) -> dict[str, str]:
        """Settings for an ``oqtopus`` resource using this fake (``from_config`` keys)."""
        values = {
            "QRMI_OQTOPUS_URL": self.url,
            "QRMI_OQTOPUS_API_TOKEN": self.token,
            "QRMI_OQTOPUS_TIMEOUT": "10",
        }
        values.update(extra)
        return values

    def resource_config(self) -> dict[str, Any]:
        """A ``qrmi_config.json`` resource entry for this fake (used by ``qrmi fake serve``)."""
        return {"name": self.resource_name, "type": "oqtopus", "environment": self.settings()}

    def may_use(self, device_id: str) -> bool:
        """Whether the token's user may use ``device_id`` (``allowed_devices`` None: all)."""
        return self.allowed_devices is None or device_id in self.allowed_devices

    def set_available(self, device_id: str, available: bool, until: str | None = None) -> None:
        """Mark a device (un)available; while any device is unavailable, queued jobs wait."""
        device = self.devices[device_id]
        device.available, device.available_at = available, None if available else until
        if all(d.available for d in self.devices.values()):
            self.jobs.resume()
        else:
            self.jobs.hold()

    # -- views -------------------------------------------------------------------------------

    def device_view(self, device: FakeOqtopusDevice) -> dict[str, Any]:
        """DevicesDeviceInfo JSON."""
        key = f"devices/{device.device_id}/device_info.zip"
        if self.inline_device_info:
            info = json.dumps(device.calibration())
        else:
            self.storage.objects[key] = _zip(device.calibration(), "device_info.json")
            info = self.storage.download_url(self.url, key)
        pending = sum(
            1
            for job in self.jobs.jobs()
            if not job.final and job.data["request"]["device_id"] == device.device_id
        )
        return {
            "device_id": device.device_id,
            "device_type": device.device_type,
            "status": "available" if device.available else "unavailable",
            "available_at": device.available_at,
            "n_pending_jobs": pending,
            "n_qubits": device.n_qubits,
            "basis_gates": list(device.basis_gates),
            "supported_instructions": list(device.supported_instructions),
            "device_info": info,
            "calibrated_at": "2026-01-01T00:00:00+00:00" if device.device_type == "QPU" else None,
            "description": device.description,
        }

    def status_of(self, job: FakeJob) -> str:
        """The User API status word of a submitted job."""
        if job.cancel_requested and not job.final:
            return "cancelling"
        return _STATUS[job.state]

    def job_view(self, job_id: str) -> dict[str, Any] | None:
        """Job JSON as the service returns it (``null`` fields left out), or ``None`` for an
        unknown id. A registered job is only ``{job_id, status}``."""
        if job_id in self._deleted:
            return None
        job = self.jobs.get(job_id)
        if job is None:
            registered = self.registered.get(job_id)
            return None if registered is None else {"job_id": job_id, **registered["view"]}
        request = job.data["request"]
        info: dict[str, Any] = {
            "input": self.storage.download_url(self.url, _input_key(job_id)),
            "message": job.error,
        }
        if job.state == DONE:
            info["result"] = self.storage.download_url(self.url, _result_key(job_id))
        running = job.started_at
        view = {
            "job_id": job.id,
            # The service stores "" for a name or description that was not given.
            "name": request.get("name") or "",
            "description": request.get("description") or "",
            "device_id": request["device_id"],
            "shots": request["shots"],
            "job_type": request["job_type"],
            "job_info": _without_none(info),
            "status": self.status_of(job),
            **{k: request.get(k) or {} for k in _INFO_FIELDS},
            "execution_time": round(job.finished_at - running, 3)
            if job.finished_at and running
            else None,
            "submitted_at": _now(job.created_at),
            "ready_at": _now(running) if running else None,
            "running_at": _now(running) if running else None,
            "ended_at": _now(job.finished_at) if job.finished_at else None,
        }
        return _without_none(view)

    def job_status(self, job_id: str) -> str | None:
        """The status word of a job, or ``None`` for an unknown id."""
        view = self.job_view(job_id)
        return None if view is None else str(view["status"])

    # -- jobs --------------------------------------------------------------------------------

    def _execute(self, job: FakeJob) -> Any:
        request = job.data["request"]
        device = self.devices[request["device_id"]]
        result = run_oqtopus_job(
            request["job_type"], job.work["input"], request["shots"], device, self.seed
        )
        self.storage.objects[_result_key(job.id)] = _zip(result, "result.json")
        return result

    def _register(self) -> dict[str, Any]:
        job_id = str(uuid.uuid4())
        self.registered[job_id] = {"view": {"status": "registered"}}
        form = self.storage.upload_form(self.url, _input_key(job_id))
        return {"job_id": job_id, "presigned_url": form}

    def _submit(self, job_id: str, body: Any) -> JSONResponse:
        """The service's checks, in its order."""
        status = self.job_status(job_id)
        if status is None:
            return _error(404, NOT_FOUND)
        if status != "registered":
            return _error(
                400,
                f"{job_id} job is not in valid status for submission (valid status for "
                "submission: 'registered')",
            )
        device = self.devices.get(body["device_id"])
        if device is None:
            return _error(400, "device not found")
        if not device.available:
            return _error(400, f"device {device.device_id} is not available")
        if not self.may_use(device.device_id):
            return _error(403, f"cannot create job for device={device.device_id}")
        if _input_key(job_id) not in self.storage.objects:
            return _error(400, f"job information input for {job_id} job not found")
        try:
            job_input = _unzip_json(self.storage.objects[_input_key(job_id)])
        except ValueError as exc:
            return _error(400, f"the uploaded job information is invalid: {exc}")
        problem = _input_problem(body["job_type"], job_input)
        if problem:
            return _error(400, problem)
        del self.registered[job_id]
        work = {"input": job_input, "shots": body["shots"]}
        self.jobs.submit(work, job_id=job_id, request=dict(body))
        return JSONResponse({"message": "job submitted"})

    def _cancel(self, job_id: str) -> JSONResponse:
        status = self.job_status(job_id)
        if status is None:
            return _error(404, NOT_FOUND)
        if status not in (*_CANCELLABLE, "cancelling", "cancelled"):
            return _error(
                400,
                f"{job_id} job is not in valid status for cancellation (valid statuses for "
                "cancellation: 'registered', 'ready', 'submitted' and 'running')",
            )
        if job_id in self.registered:
            self.registered[job_id]["view"] = {"status": "cancelled"}
        else:
            self.jobs.cancel(job_id)
        return JSONResponse({"message": "cancel request accepted"})

    def _delete(self, job_id: str) -> JSONResponse:
        status = self.job_status(job_id)
        if status is None:
            return _error(404, NOT_FOUND)
        if status not in _FINAL:
            return _error(
                400,
                f"{job_id} job is not in valid status for deletion (valid statuses for "
                "deletion: 'succeeded', 'failed' and 'cancelled')",
            )
        self._deleted.add(job_id)
        self.registered.pop(job_id, None)
        for key in [k for k in self.storage.objects if k.startswith(f"{job_id}/")]:
            del self.storage.objects[key]
        return JSONResponse({"message": "job deleted"})

    # -- the ASGI app ------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake OQTOPUS Cloud User API")

        def refused(request: Request) -> JSONResponse | None:
            """The service's token checks: 401 unless the token is known, 403 unless the
            user is approved."""
            token = request.headers.get("q-api-token")
            if token is None:
                return _error(401, "Missing Q-API-Token")
            if "." not in token:
                return _error(401, "Malformed Q-API-Token")
            if not hmac.compare_digest(token, self.token):
                return _error(401, "Invalid API token")
            if not self.approved:
                return _error(403, "User is not approved")
            return None

        @app.get("/devices")
        async def list_devices(request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            allowed = [d for d in self.devices.values() if self.may_use(d.device_id)]
            return JSONResponse([self.device_view(d) for d in allowed])

        @app.get("/devices/{device_id}")
        async def get_device(device_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            if not self.may_use(device_id):
                return _error(403, f"Cannot access device_id={device_id}.")
            device = self.devices.get(device_id)
            if device is None:
                return _error(404, f"device_id={device_id} is not found.")
            return JSONResponse(self.device_view(device))

        @app.get("/jobs")
        async def list_jobs(request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            ids = [*self.registered, *(job.id for job in self.jobs.jobs())]
            views = [self.job_view(job_id) for job_id in ids]
            return JSONResponse([view for view in views if view is not None])

        @app.post("/jobs")
        async def register(request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            return JSONResponse(self._register())

        @app.post("/jobs/{job_id}/submit")
        async def submit(job_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            try:
                body = json.loads(await request.body() or b"null")
            except ValueError:
                return _invalid([], "JSON decode error", "json_invalid", None)
            return _request_problem(body) or self._submit(job_id, body)

        @app.get("/jobs/{job_id}")
        async def get_job(job_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            view = self.job_view(job_id)
            return JSONResponse(view) if view is not None else _error(404, NOT_FOUND)

        @app.delete("/jobs/{job_id}")
        async def delete_job(job_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            return self._delete(job_id)

        @app.get("/jobs/{job_id}/status")
        async def job_status(job_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            status = self.job_status(job_id)
            if status is None:
                return _error(404, NOT_FOUND)
            return JSONResponse({"job_id": job_id, "status": status})

        @app.post("/jobs/{job_id}/cancel")
        async def cancel(job_id: str, request: Request) -> JSONResponse:
            if (denied := refused(request)) is not None:
                return denied
            return self._cancel(job_id)

        @app.post(f"/storage/{BUCKET}")
        async def upload(request: Request) -> Response:
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                return _s3_error(400, "InvalidArgument", "POST requires exactly one file upload")
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            content = await upload.read()
            refusal = self.storage.accept_upload(fields, content)
            return refusal if refusal is not None else Response(status_code=204)

        @app.get(f"/storage/{BUCKET}/{{key:path}}")
        async def download(key: str, request: Request) -> Response:
            return self.storage.read(key, dict(request.query_params))

        return app


def _input_key(job_id: str) -> str:
    return f"{job_id}/input.zip"


def _result_key(job_id: str) -> str:
    return f"{job_id}/result.zip"


def _without_none(view: dict[str, Any]) -> dict[str, Any]:
    """The service serialises its models with ``exclude_none``."""
    return {key: value for key, value in view.items() if value is not None}


def _request_problem(body: Any) -> JSONResponse | None:
    """FastAPI's 422 for what the service's request model refuses (checked before the handler
    runs, so before any 404), or ``None``."""
    if not isinstance(body, dict):
        return _invalid([], "Input should be a valid dictionary", "dict_type", body)
    shots = body.get("shots")
    if not isinstance(body.get("device_id"), str):
        return _invalid(["device_id"], "Input should be a valid string", "string_type", body)
    if body.get("job_type") not in JOB_TYPES:
        choices = ", ".join(f"'{t}'" for t in JOB_TYPES)
        return _invalid(["job_type"], f"Input should be {choices}", "enum", body)
    if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= MAX_SHOTS:
        message = f"Input should be an integer between 1 and {MAX_SHOTS}"
        return _invalid(["shots"], message, "int_type", body)
    for name in ("name", "description"):
        if body.get(name) is not None and not isinstance(body[name], str):
            return _invalid([name], "Input should be a valid string", "string_type", body)
    for name in _INFO_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], dict):
            return _invalid([name], "Input should be a valid dictionary", "dict_type", body)
    return None


def _invalid(loc: list[str], message: str, kind: str, body: Any) -> JSONResponse:
    value = body.get(loc[0]) if loc and isinstance(body, dict) else body
    detail = {"type": kind, "loc": ["body", *loc], "msg": message, "input": value}
    return JSONResponse({"detail": [detail]}, status_code=422)


def _input_problem(job_type: str, job_input: Any) -> str | None:
    if not isinstance(job_input, dict):
        return "the uploaded job information must be a JSON object"
    if job_type == "sse":
        program = job_input.get("sse_program")
        return None if isinstance(program, str) and program else "an sse job needs sse_program"
    programs = job_input.get("program")
    if not isinstance(programs, list) or not programs:
        return f"a {job_type} job needs a non-empty program list"
    if not all(isinstance(p, str) for p in programs):
        return "every program must be a string"
    if job_type != "multi_manual" and len(programs) != 1:
        return f"a {job_type} job takes exactly one program"
    operator = job_input.get("operator")
    if job_type == "estimation" and (
        not isinstance(operator, list)
        or not operator
        or not all(isinstance(t, dict) and isinstance(t.get("pauli"), str) for t in operator)
    ):
        return "an estimation job needs an operator list of {pauli, coeff}"
    return None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


def oqtopus_server(**options: Any) -> OqtopusFake:
    """Factory for ``qrmi fake serve oqtopus`` (options: see :class:`OqtopusFake`)."""
    return OqtopusFake(**options)
