"""IBM Quantum System (the on-premises "Direct Access" API): type ``ibm-quantum-system``.

Settings (``{resource}_{KEY}`` or the ``environment`` of the resource in ``qrmi_config.json``):

========================================  ====================================================
``QRMI_IBM_QS_ENDPOINT``                  API base URL (``/v1/...`` is appended); required
``QRMI_IBM_QS_IAM_ENDPOINT``              IBM Cloud IAM base URL; required
``QRMI_IBM_QS_IAM_APIKEY``                IAM API key; required
``QRMI_IBM_QS_SERVICE_CRN``               service instance CRN (``Service-CRN`` header); required
``QRMI_IBM_QS_AWS_ACCESS_KEY_ID``         S3 credentials, endpoint, bucket and region: needed by
``QRMI_IBM_QS_AWS_SECRET_ACCESS_KEY``     ``task_start``, ``task_result`` and ``task_logs``
``QRMI_IBM_QS_S3_ENDPOINT``
``QRMI_IBM_QS_S3_BUCKET``
``QRMI_IBM_QS_S3_REGION``
``QRMI_IBM_QS_S3_ENDPOINT_FOR_QSAPI``     S3 URL the *service* reaches; used in presigned URLs
``QRMI_JOB_TIMEOUT_SECONDS``              job time limit (``timeout_secs``, presigned URL
                                          lifetime); required by ``task_start``
``QRMI_IBM_QS_THROTTLE_WAIT_SECONDS``     cap of the wait for a reserved (423) or throttling
                                          (429) service at submission; default 900
``QRMI_IBM_QS_HTTP_TIMEOUT``              per-request timeout in seconds; default 60
========================================  ====================================================

Protocol: the input is uploaded to ``input_{id}.json`` in the bucket; the job is created with
``POST /v1/jobs`` (answer 204) carrying a presigned GET URL for the input and presigned PUT URLs
for ``results_{id}.json`` and ``logs_{id}.json``, which the service fills itself. Results and
logs are read back from S3 with the configured credentials.

**task_stop never deletes.** The reference cancels *and deletes* the job on ``task_stop``, so a
finished job's result vanished when a job script ended or a Python object was garbage
collected. Here ``task_stop`` cancels a job that is still running and does nothing to a final
one: no ``DELETE /v1/jobs/{id}``, no S3 deletion. Jobs and objects are left to the service's and
the bucket's retention policies (configure an S3 lifecycle rule to expire old objects).

**Retries.** Every call goes through :class:`~qrmi.http.HttpClient`: connection errors, 408 and
5xx are retried with backoff and jitter; a 401 refreshes the IAM token once. 423 (backend
reserved) and 429 (lanes full / rate limit) at submission are retried with backoff until a
deadline of ``min(QRMI_JOB_TIMEOUT_SECONDS, QRMI_IBM_QS_THROTTLE_WAIT_SECONDS)`` and then fail
with :class:`~qrmi.errors.ServiceUnavailableError`; other calls use a 120 s budget. Nothing
retries forever.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from qrmi.backends._ibm_common import (
    IamToken,
    failure_reason,
    fetch_description,
    ibm_error_message,
    json_object,
    primitive_input,
)
from qrmi.backends.base import Backend, Clock, Sleeper
from qrmi.config import Settings
from qrmi.errors import (
    AuthenticationFailedError,
    ConfigError,
    InvalidInputError,
    QrmiError,
    ServiceError,
    ServiceUnavailableError,
    TaskNotFoundError,
    TaskNotReadyError,
    UnsupportedPayloadError,
)
from qrmi.http import HttpClient, RetryPolicy
from qrmi.log import redact
from qrmi.models import (
    Payload,
    QiskitPrimitivePayload,
    ResourceCapacity,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    TaskResult,
    TaskStatus,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["PROGRAM_IDS", "QuantumSystemBackend"]

logger = logging.getLogger(__name__)

PREFIX = "QRMI_IBM_QS_"
#: The primitives the Quantum System API runs.
PROGRAM_IDS = ("estimator", "sampler")
#: Default cap of the wait for a reserved or throttling service at submission.
DEFAULT_THROTTLE_WAIT_SECONDS = 900
#: Longest lifetime S3 SigV4 allows for a presigned URL.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600

_BACKEND_STATUS = {
    "online": ResourceStatusCode.Online,
    "paused": ResourceStatusCode.Paused,
    "offline": ResourceStatusCode.Offline,
}


class QuantumSystemBackend(Backend):
    """An IBM Quantum System (Direct Access API) QPU; see the module docstring."""

    RESOURCE_TYPE: ClassVar[ResourceType | str] = ResourceType.IBMQuantumSystem
    PAYLOADS: ClassVar[tuple[type[Payload], ...]] = (QiskitPrimitivePayload,)
    STATE_MAP: ClassVar[Mapping[str, TaskStatus]] = {
        "Queued": TaskStatus.Queued,
        "Running": TaskStatus.Running,
        "Completed": TaskStatus.Completed,
        "Failed": TaskStatus.Failed,
        "Cancelled": TaskStatus.Cancelled,
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
        endpoint = settings.require(PREFIX + "ENDPOINT")
        iam_endpoint = settings.require(PREFIX + "IAM_ENDPOINT")
        apikey = settings.require(PREFIX + "IAM_APIKEY")
        crn = settings.require(PREFIX + "SERVICE_CRN")
        timeout = settings.get_float(PREFIX + "HTTP_TIMEOUT", 60.0) or 60.0
        self._token = IamToken(iam_endpoint, apikey, timeout=timeout)
        self._http = HttpClient(
            endpoint,
            service="IBM Quantum System API",
            headers={"Accept": "application/json", "Service-CRN": crn},
            auth=self._token,
            timeout=timeout,
            retry=RetryPolicy(backoff_initial=0.25, backoff_max=8.0, deadline=120.0),
            error_message=ibm_error_message,
            clock=self.clock,
            sleep=self.sleep,
        )
        self._storage: _S3Storage | None = None
        self._storage_lock = threading.Lock()

    # ----- resource ------------------------------------------------------------------------

    def is_accessible(self) -> bool:
        """True when the backend is online (one request, unlike :meth:`status`)."""
        return self._status_code(self._backend()) == ResourceStatusCode.Online

    def fetch_status(self) -> ResourceStatus:
        """Backend status, free execution lanes and this backend's running jobs."""
        backend = self._backend()
        code = self._status_code(backend)
        pending = self._running_jobs()
        capacity = self._capacity(pending)
        return ResourceStatus(
            status=code,
            status_reason=backend.get("message") or None,
            busy=None if capacity is None else capacity.available_slots == 0,
            capacity=capacity,
            pending_job_count=pending,
        )

    def _backend(self) -> dict[str, Any]:
        return json_object(self._http.get(self._backend_path()), "backend status")

    @staticmethod
    def _status_code(backend: Mapping[str, Any]) -> ResourceStatusCode:
        return _BACKEND_STATUS.get(
            str(backend.get("status", "")).lower(), ResourceStatusCode.Offline
        )

    def _capacity(self, running: int | None) -> ResourceCapacity | None:
        try:
            lanes = json_object(self._http.get(self._backend_path() + "/lanes"), "lanes")
        except (ServiceError, InvalidInputError, QrmiError) as exc:
            if isinstance(exc, AuthenticationFailedError | ServiceUnavailableError):
                raise
            logger.debug("lanes of %s unavailable: %s", self.resource_id, exc)
            return None
        hpc = lanes.get("hpc_workload_manager")
        total = hpc.get("lanes") if isinstance(hpc, dict) else None
        if not isinstance(total, int):
            return None
        return ResourceCapacity(available_slots=max(0, total - (running or 0)), max_slots=total)

    def _running_jobs(self) -> int | None:
        body = json_object(self._http.get("v1/jobs"), "job list")
        jobs = body.get("jobs")
        if not isinstance(jobs, list):
            return None
        return sum(
            1
            for job in jobs
            if isinstance(job, dict)
            and job.get("backend") == self.resource_id
            and job.get("status") in ("Queued", "Running")
        )

    def fetch_target(self) -> str:
        """``{"configuration": ..., "properties": ...}`` of the backend."""
        return fetch_description(self._http, self._backend_path())

    # ----- tasks ---------------------------------------------------------------------------

    def submit(self, payload: Payload) -> str:
        """Upload the input to S3, then create the job with presigned storage URLs."""
        assert isinstance(payload, QiskitPrimitivePayload)
        if payload.program_id not in PROGRAM_IDS:
            raise UnsupportedPayloadError(
                f"unknown program ID: {payload.program_id!r}; IBM Quantum System runs "
                + " and ".join(repr(p) for p in PROGRAM_IDS)
            )
        primitive_input(payload.input, self.resource_id)
        timeout = self._job_timeout()
        storage = self._s3()
        job_id = str(uuid.uuid4())
        storage.put(f"input_{job_id}.json", payload.input.encode("utf-8"))
        expires = min(timeout, MAX_PRESIGN_SECONDS)
        body = {
            "id": job_id,
            "backend": self.resource_id,
            "program_id": payload.program_id,
            "log_level": "info",
            "timeout_secs": timeout,
            "storage": {
                "input": _location(storage.presign("get", f"input_{job_id}.json", expires)),
                "results": _location(storage.presign("put", f"results_{job_id}.json", expires)),
                "logs": _location(storage.presign("put", f"logs_{job_id}.json", expires)),
            },
        }
        self._http.post(
            "v1/jobs", json=body, expected=(204, 200, 201), deadline=self._submit_deadline(timeout)
        )
        return job_id

    def cancel(self, task_id: str) -> None:
        """``POST /v1/jobs/{id}/cancel``; a job that ended meanwhile (409) is left alone."""
        try:
            self._http.post(f"v1/jobs/{task_id}/cancel", expected=(204, 200))
        except InvalidInputError as exc:
            logger.info("cancel of task %s not needed: %s", task_id, exc)

    def fetch_state(self, task_id: str) -> str:
        """The job's ``status`` (``Running``, ``Completed``, ``Failed``, ``Cancelled``)."""
        return str(self._job(task_id).get("status"))

    def task_result(self, task_id: str) -> TaskResult:
        """The result JSON from ``results_{id}.json``, once the job has completed.

        Raises:
            TaskNotReadyError: the job is running, failed (with IBM's reason) or cancelled.
        """
        job = self._job(task_id)
        state = str(job.get("status"))
        status = self.STATE_MAP.get(state, TaskStatus.Running)
        if status == TaskStatus.Failed:
            raise TaskNotReadyError(
                f"unable to retrieve result for task {task_id}: task failed. {failure_reason(job)}"
            )
        if status != TaskStatus.Completed:
            why = "task was cancelled" if status == TaskStatus.Cancelled else "task is running"
            raise TaskNotReadyError(f"unable to retrieve result for task {task_id}: {why}")
        return TaskResult(self.fetch_result(task_id))

    def fetch_result(self, task_id: str) -> str:
        """The text of ``results_{id}.json``."""
        text = self._s3().get(f"results_{task_id}.json")
        if text is None:
            raise ServiceError(
                f"task {task_id} on {self.resource_id} is Completed but its result object "
                f"results_{task_id}.json is missing from the bucket; check the bucket's "
                "lifecycle rules and QRMI_IBM_QS_S3_ENDPOINT_FOR_QSAPI"
            )
        return text

    def fetch_logs(self, task_id: str) -> str:
        """The text of ``logs_{id}.json`` (written by the service when the job ends)."""
        text = self._s3().get(f"logs_{task_id}.json")
        if text is not None:
            return text
        status = self.task_status(task_id)
        if not status.is_final:
            return f"task {task_id} is {status.name}; its logs are written when it ends."
        return f"task {task_id} ended ({status.name}) without logs."

    # ----- helpers -------------------------------------------------------------------------

    def _backend_path(self) -> str:
        return f"v1/backends/{self.resource_id}"

    def _job(self, task_id: str) -> dict[str, Any]:
        response = self._http.get(f"v1/jobs/{task_id}", not_found=TaskNotFoundError)
        return json_object(response, f"job {task_id}")

    def _job_timeout(self) -> int:
        value = self.settings.get_int("QRMI_JOB_TIMEOUT_SECONDS", minimum=1)
        if value is None:
            self.settings.require("QRMI_JOB_TIMEOUT_SECONDS")  # raises EnvVarNotSetError
            raise AssertionError("unreachable")  # pragma: no cover
        return value

    def _submit_deadline(self, timeout: int) -> float:
        cap = self.settings.get_float(
            PREFIX + "THROTTLE_WAIT_SECONDS", float(DEFAULT_THROTTLE_WAIT_SECONDS)
        )
        if cap is None or cap <= 0:
            raise ConfigError(
                f"{self.settings.env_name(PREFIX + 'THROTTLE_WAIT_SECONDS')} must be a "
                "positive number of seconds"
            )
        return float(min(timeout, cap))

    def _s3(self) -> _S3Storage:
        with self._storage_lock:
            if self._storage is None:
                self._storage = _S3Storage.from_settings(self.settings)
            return self._storage


def _location(url: str) -> dict[str, str]:
    return {"presigned_url": url, "type": "s3_compatible"}


class _S3Storage:
    """The job bucket: SigV4, path-style addressing, configurable endpoints (boto3)."""

    def __init__(self, client: S3Client, presigner: S3Client, bucket: str) -> None:
        self._client = client
        self._presigner = presigner
        self._bucket = bucket

    @classmethod
    def from_settings(cls, settings: Settings) -> _S3Storage:
        """Build the clients from the ``QRMI_IBM_QS_S3_*`` settings (no network I/O)."""
        key_id = settings.require(PREFIX + "AWS_ACCESS_KEY_ID")
        secret = settings.require(PREFIX + "AWS_SECRET_ACCESS_KEY")
        endpoint = settings.require(PREFIX + "S3_ENDPOINT")
        bucket = settings.require(PREFIX + "S3_BUCKET")
        region = settings.require(PREFIX + "S3_REGION")
        qsapi_endpoint = settings.get(PREFIX + "S3_ENDPOINT_FOR_QSAPI") or endpoint
        client = _s3_client(endpoint, region, key_id, secret)
        presigner = client if qsapi_endpoint == endpoint else None
        if presigner is None:
            presigner = _s3_client(qsapi_endpoint, region, key_id, secret)
        return cls(client, presigner, bucket)

    def put(self, key: str, body: bytes) -> None:
        """Store ``body`` at ``key``."""
        with _s3_errors(f"uploading {key} to S3 bucket {self._bucket}"):
            self._client.put_object(
                Bucket=self._bucket, Key=key, Body=body, ContentType="application/json"
            )

    def get(self, key: str) -> str | None:
        """The text at ``key``, or ``None`` if there is no such object."""
        with _s3_errors(f"reading {key} from S3 bucket {self._bucket}") as errors:
            try:
                response = self._client.get_object(Bucket=self._bucket, Key=key)
            except errors.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            data: bytes = response["Body"].read()
        return data.decode("utf-8")

    def presign(self, method: str, key: str, expires: int) -> str:
        """A presigned ``get`` or ``put`` URL for ``key`` valid ``expires`` seconds."""
        operation = "get_object" if method == "get" else "put_object"
        with _s3_errors(f"presigning {key}"):
            url: str = self._presigner.generate_presigned_url(
                operation, Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=expires
            )
        return url


class _RedactSignatures(logging.Filter):
    """botocore logs request signatures (presigned URLs included) at DEBUG: mask them."""

    _SIGNATURE = re.compile(r"(?i)(signature[\s:=]+)[0-9a-f]{32,}")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(self._SIGNATURE.sub(r"\1***", message))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_BOTOCORE_LOGGERS = ("botocore.auth", "botocore.endpoint", "botocore.httpsession", "botocore.hooks")
_redaction_installed = False


def _install_botocore_redaction() -> None:
    global _redaction_installed
    if not _redaction_installed:
        for name in _BOTOCORE_LOGGERS:
            logging.getLogger(name).addFilter(_RedactSignatures())
        _redaction_installed = True


def _s3_client(endpoint: str, region: str, key_id: str, secret: str) -> S3Client:
    import boto3  # heavy; needed only when S3 is used
    from botocore.config import Config as BotoConfig

    _install_botocore_redaction()

    config = BotoConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        # S3-compatible stores (MinIO, Ceph) may not know the newer default checksums.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=region
    )
    client: S3Client = session.client("s3", endpoint_url=endpoint, config=config)
    return client


class _S3Errors:
    """Turns botocore failures into typed errors; exposes ``ClientError`` for callers."""

    def __init__(self, what: str) -> None:
        from botocore import exceptions

        self.what = what
        self.ClientError = exceptions.ClientError
        self._exceptions = exceptions

    def __enter__(self) -> _S3Errors:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, QrmiError):
            return
        errors = self._exceptions
        if isinstance(exc, errors.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            message = str(exc.response.get("Error", {}).get("Message", ""))
            if code in _S3_AUTH_CODES:
                raise AuthenticationFailedError(
                    f"{self.what} was refused ({code}: {message}); check "
                    f"{PREFIX}AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy"
                ) from None
            if code == "NoSuchBucket":
                raise ConfigError(
                    f"{self.what} failed: the bucket does not exist; check {PREFIX}S3_BUCKET"
                ) from None
            raise ServiceError(f"{self.what} failed ({code}: {message})") from None
        if isinstance(exc, errors.EndpointConnectionError | errors.ConnectionError):
            raise ServiceUnavailableError(
                f"{self.what} failed: cannot reach the S3 endpoint ({type(exc).__name__}); "
                f"check {PREFIX}S3_ENDPOINT and the network"
            ) from None
        if isinstance(exc, errors.BotoCoreError):
            raise ServiceError(f"{self.what} failed: {type(exc).__name__}") from None


_S3_AUTH_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "403"}
)


def _s3_errors(what: str) -> _S3Errors:
    return _S3Errors(what)
