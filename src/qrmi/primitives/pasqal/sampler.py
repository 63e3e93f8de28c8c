"""Sampler V2 for Pasqal resources through qiskit-pasqal-provider, as in the reference.

``QPPSamplerV2(qrmi)`` is qiskit-pasqal-provider's ``SamplerV2`` over a
:class:`QRMIPasqalBackend`: an analog circuit (``HamiltonianGate``) becomes a Pulser sequence
for the resource's device and runs as one ``Payload.PasqalCloud`` task. ``run()`` returns a
:class:`QRMIPasqalJob` whose ``result()`` is a ``PrimitiveResult`` with the counts.

qiskit-pasqal-provider is imported only when a sampler is built or a circuit is run; without
it those raise an ``ImportError`` that says what to install.

Differences from the reference, on purpose: ``result()`` polls adaptively (milliseconds at
first, never slower than ``poll_interval_seconds``), and ``delete_job=True`` stops only a task
that is still running when the job object is collected, never a finished one (its result stays
readable).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from qiskit.primitives import DataBin, PrimitiveResult, SamplerPubResult

from qrmi.backends.base import poll_intervals
from qrmi.errors import ServiceError, TaskNotReadyError, TaskTimeoutError
from qrmi.models import Payload, TaskStatus
from qrmi.primitives.pasqal._provider import provider_module
from qrmi.primitives.pasqal.target import get_device
from qrmi.primitives.runtime_job_v2 import STATUS_MAP, QRMITaskJob

# QPPSamplerV2 is resolved by the module's __getattr__ (it needs qiskit-pasqal-provider).
__all__ = ["STATUS_MAP", "Options", "QPPSamplerV2", "QRMIPasqalBackend", "QRMIPasqalJob"]  # noqa: F822


DEFAULT_SHOTS = 1024


@dataclass
class Options:
    """Options of :class:`QRMIPasqalBackend`.

    ``run_options`` keys read by jobs: ``poll_interval_seconds`` (1.0), ``timeout_seconds``
    (None: no limit) and ``delete_job`` (False).
    """

    default_shots: int = DEFAULT_SHOTS
    run_options: dict[str, Any] = field(default_factory=dict)


class QRMIPasqalJob(QRMITaskJob):
    """A Pasqal sampler task on a QRMI resource."""

    def __init__(
        self,
        qrmi: Any,
        job_id: str,
        backend_name: str,
        *,
        poll_interval_seconds: float = 1.0,
        timeout_seconds: float | None = None,
        delete_job: bool = False,
    ) -> None:
        super().__init__(job_id)
        self._qrmi = qrmi
        self._backend_name = backend_name
        self._poll_interval_seconds = poll_interval_seconds
        self._timeout_seconds = timeout_seconds
        self._delete_job = delete_job
        self._last_status: TaskStatus | None = None
        self._result: PrimitiveResult | None = None

    def __del__(self) -> None:
        # An abandoned running task is stopped; a finished one keeps its result.
        if getattr(self, "_delete_job", False) and not self._known_final():
            with contextlib.suppress(Exception):  # never raise from a finaliser
                self._qrmi.task_stop(self._job_id)

    def __repr__(self) -> str:
        return f"<QRMIPasqalJob {self._job_id!r} on {self._backend_name!r}>"

    def result(self) -> PrimitiveResult:
        """Wait for the task and return ``PrimitiveResult([SamplerPubResult(DataBin(counts))])``.

        Raises:
            TaskTimeoutError: (a ``TimeoutError``) the task did not end within
                ``timeout_seconds``; it keeps running.
            TaskNotReadyError: (a ``RuntimeError``) the task failed or was cancelled.
            ServiceError: the result holds no counts.
        """
        if self._result is None:
            status = self._wait()
            if status != TaskStatus.Completed:
                raise TaskNotReadyError(
                    f"QRMI task {self._job_id} on {self._backend_name} ended with status "
                    f"{STATUS_MAP[status]}; it has no result"
                )
            counts = counts_of(self._qrmi.task_result(self._job_id).value)
            self._result = PrimitiveResult(
                [SamplerPubResult(data=DataBin(counts=counts))],
                metadata={
                    "status": "DONE",
                    "success": True,
                    "backend_name": self._backend_name,
                    "job_id": self._job_id,
                },
            )
        return self._result

    def _known_final(self) -> bool:
        status = getattr(self, "_last_status", None)
        return status is not None and status.is_final

    def _wait(self) -> TaskStatus:
        timeout = self._timeout_seconds
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        for delay in poll_intervals(cap=max(0.01, self._poll_interval_seconds)):
            status = self.task_status()
            if status.is_final:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TaskTimeoutError(
                    f"QRMI task {self._job_id} timed out after {timeout}s (it is still "
                    f"{status.name} and keeps running; cancel() it or wait longer)"
                )
            time.sleep(delay if deadline is None else min(delay, deadline - time.monotonic()))
        raise AssertionError("unreachable")  # pragma: no cover


class QRMIPasqalBackend:
    """The backend qiskit-pasqal-provider's ``SamplerV2`` runs circuits on: a QRMI resource.

    Args:
        qrmi: a ``pasqal-cloud`` or ``pasqal-local`` resource.
        options: :class:`Options` fields as a dict (``default_shots``, ``run_options``).
    """

    def __init__(self, qrmi: Any, *, options: dict[str, Any] | None = None) -> None:
        self._qrmi = qrmi
        try:
            self._options = Options(**options) if options else Options()
        except TypeError as exc:
            raise TypeError(
                f"options {sorted(options or {})} are invalid ({exc}); valid keys are "
                "default_shots and run_options"
            ) from None

    @property
    def options(self) -> Options:
        """The backend's options."""
        return self._options

    def run(
        self,
        run_input: Any,
        shots: int | None = None,
        values: dict[str, Any] | None = None,
        **_: Any,
    ) -> QRMIPasqalJob:
        """Turn an analog circuit into a Pulser sequence for the resource's device and start it.

        Args:
            run_input: a ``QuantumCircuit`` holding qiskit-pasqal-provider analog gates.
            shots: runs of the sequence (default ``options.default_shots``).
            values: values of the circuit's parameters, by name.
        """
        pulse_utils = provider_module("providers.pulse_utils")
        device = get_device(self._qrmi)
        register = pulse_utils.place_register(
            pulse_utils.get_register_from_circuit(run_input), device
        )
        sequence = pulse_utils.gen_seq(analog_register=register, device=device, circuit=run_input)
        if values:
            sequence = sequence.build(**values)
        runs = shots if shots is not None else self._options.default_shots
        payload = Payload.PasqalCloud(sequence=sequence.to_abstract_repr(), job_runs=runs)
        task_id = self._qrmi.task_start(payload)
        run_options = self._options.run_options
        return QRMIPasqalJob(
            self._qrmi,
            task_id,
            str(self._qrmi.resource_id()),
            poll_interval_seconds=float(run_options.get("poll_interval_seconds", 1.0)),
            timeout_seconds=run_options.get("timeout_seconds"),
            delete_job=bool(run_options.get("delete_job", False)),
        )


def counts_of(raw: str | dict[str, Any]) -> dict[str, int]:
    """``{"counter": {bitstring: count}}`` (JSON text or dict) to ``{bitstring: count}``.

    Raises:
        ServiceError: the result is not such an object, or holds no counts.
    """
    try:
        payload = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise ServiceError(f"the Pasqal result is not JSON ({exc})") from None
    counter = payload.get("counter") if isinstance(payload, dict) else None
    if not isinstance(counter, dict):
        raise ServiceError(f"the Pasqal result has no 'counter' object: {str(raw)[:200]!r}")
    counts = {str(k): int(v) for k, v in counter.items() if isinstance(v, int | float)}
    if not counts:
        raise ServiceError(f"the Pasqal result holds no counts: {str(raw)[:200]!r}")
    return counts


def _sampler_class() -> type:
    """``QPPSamplerV2``: built on first use, as a subclass of qiskit-pasqal-provider's sampler."""
    base = provider_module("providers").SamplerV2

    class QPPSamplerV2(base):  # type: ignore[misc, valid-type]
        """qiskit-pasqal-provider's ``SamplerV2`` running on a QRMI Pasqal resource."""

        def __init__(self, qrmi: Any, *, options: dict[str, Any] | None = None) -> None:
            super().__init__(backend=QRMIPasqalBackend(qrmi, options=options))

    QPPSamplerV2.__module__ = __name__
    QPPSamplerV2.__qualname__ = "QPPSamplerV2"
    return QPPSamplerV2


def __getattr__(name: str) -> Any:
    # ``QPPSamplerV2`` needs qiskit-pasqal-provider; build it only when asked for.
    if name == "QPPSamplerV2":
        cls = _sampler_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
