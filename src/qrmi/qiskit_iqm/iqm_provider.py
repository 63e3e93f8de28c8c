"""``IQMProvider``, ``QRMIBackend`` and ``IQMJobCustom``: Qiskit on an ``iqm-server`` resource.

Names, signatures and behaviour follow the reference's ``qrmi.qiskit_iqm.iqm_provider``, without
IQM's client libraries: the backend's target comes from the resource's ``target()`` (IQM's
dynamic quantum architecture), circuits are serialized to IQM's run request here, and a job's
``result()`` turns the ``measurements`` artifact into a Qiskit ``Result``.

Differences from the reference, on purpose:

* ``create_run_request`` returns the run request as a plain dict (IQM's ``RunRequest`` model
  needs iqm-client);
* ``IQMJobCustom.cancel()`` stops the task (the reference only warned that it cannot);
* ``IQMProvider().get_backend()`` in a job without IQM resources raises a
  :class:`~qrmi.errors.ResourceNotFoundError` that says so (the reference: ``IndexError``).
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any
from uuid import UUID

from qiskit import QuantumCircuit
from qiskit.providers import BackendV2, JobStatus, JobV1, Options

from qrmi.errors import QrmiError, ResourceNotFoundError, TaskTimeoutError
from qrmi.job import get_job_qpu_resources_and_types
from qrmi.models import Payload, ResourceType, TaskStatus
from qrmi.primitives.runtime_job_v2 import STATUS_MAP
from qrmi.qiskit_iqm._circuits import (
    DeviceArchitecture,
    build_target,
    format_circuit_results,
    serialize_circuit,
)
from qrmi.resource import QuantumResource

__all__ = ["STATUS_MAP", "IQMJobCustom", "IQMProvider", "QRMIBackend"]

IQM_TYPE = ResourceType.IQMServer.type_string


class IQMJobCustom(JobV1):  # type: ignore[misc]
    """A circuit batch running on an IQM resource; ``result()`` waits for it."""

    POLL_INTERVAL: float = 2.0

    def __init__(
        self, backend: QRMIBackend, job_id: str, circuits: list[dict[str, Any]], shots: int
    ) -> None:
        super().__init__(backend, job_id=str(job_id))
        self._circuits = circuits
        self._shots = shots
        self._cached: list[tuple[str, list[str], dict[str, int]]] | None = None
        self.circuit_metadata: list[Any] | None = None

    def submit(self) -> None:
        """Not used: ``QRMIBackend.run()`` submits the job."""
        raise NotImplementedError("Job is submitted automatically in QRMIBackend.run().")

    def status(self) -> JobStatus:
        """The Qiskit status of the task."""
        return STATUS_MAP[self._qrmi.task_status(self.job_id())]

    def cancel(self) -> bool:
        """Stop the task if it has not finished; True when the call went through."""
        self._qrmi.task_stop(self.job_id())
        return True

    def result(self, *, timeout: float = 300.0, poll_interval: float = POLL_INTERVAL) -> Any:
        """Wait up to ``timeout`` seconds for the task; return a Qiskit ``Result`` with memory
        and counts (``success`` false, and no experiments, when the task failed).

        Raises:
            TaskTimeoutError: (a ``TimeoutError``) the task is still running after ``timeout``.
        """
        from qiskit.result import Result

        status = self._wait(timeout, poll_interval)
        result: dict[str, Any] = {
            "backend_name": self.backend().name,
            "backend_version": "",
            "qobj_id": "",
            "job_id": self.job_id(),
            "success": status == TaskStatus.Completed,
            "status": status.name.upper(),
            "date": date.today().isoformat(),
            "results": [],
        }
        if status == TaskStatus.Completed:
            result["results"] = self._experiments()
        return Result.from_dict(result)

    @property
    def _qrmi(self) -> Any:
        return self.backend().qrmi

    def _wait(self, timeout: float, poll_interval: float) -> TaskStatus:
        if isinstance(self._qrmi, QuantumResource):
            try:
                return self._qrmi.task_wait(self.job_id(), timeout)
            except TaskTimeoutError:
                raise TaskTimeoutError(
                    f"Job {self.job_id()} did not finish within {timeout} seconds."
                ) from None
        deadline = time.monotonic() + timeout
        while True:
            status = self._qrmi.task_status(self.job_id())
            if status.is_final:
                return TaskStatus(status)
            if time.monotonic() > deadline:
                raise TaskTimeoutError(
                    f"Job {self.job_id()} did not finish within {timeout} seconds."
                )
            time.sleep(poll_interval)

    def _experiments(self) -> list[dict[str, Any]]:
        if self._cached is None:
            measurements = json.loads(self._qrmi.task_result(self.job_id()).value)["measurements"]
            self._cached = [
                (circuit["name"], *format_circuit_results(per_circuit, self._shots))
                for circuit, per_circuit in zip(self._circuits, measurements, strict=False)
            ]
        metadata = self.circuit_metadata or []
        return [
            {
                "shots": len(memory),
                "success": True,
                "data": {
                    "memory": memory,
                    "counts": counts,
                    "metadata": metadata[i] if i < len(metadata) else {},
                },
                "header": {"name": name},
            }
            for i, (name, memory, counts) in enumerate(self._cached)
        ]


class QRMIBackend(BackendV2):  # type: ignore[misc]
    """A Qiskit backend for an ``iqm-server`` resource; ``run()`` executes circuits on it.

    Args:
        qrmi: the ``iqm-server`` resource.
        calibration_set_id: the calibration set the resource was built for (checked against
            the target); ``None`` means the server's default.
        use_metrics: put the calibration's fidelities into the target (as instruction errors)
            so that the transpiler prefers better qubits.
    """

    def __init__(
        self,
        qrmi: Any,
        *,
        calibration_set_id: str | UUID | None = None,
        use_metrics: bool = False,
        **kwargs: Any,
    ) -> None:
        self.qrmi: Any = qrmi
        self.target_json: dict[str, Any] = json.loads(qrmi.target().value)
        self.architecture = DeviceArchitecture(
            self.target_json.get("dynamic_quantum_architecture") or {}
        )
        self._use_default_calibration_set = calibration_set_id is None
        self._calibration_set_id = self.architecture.calibration_set_id
        if calibration_set_id is not None:
            self._calibration_set_id = str(UUID(str(calibration_set_id)))
        kwargs.setdefault("name", _backend_name(qrmi))
        super().__init__(**kwargs)
        errors = quality_errors(self.target_json.get("quality_metrics")) if use_metrics else None
        self._target = build_target(self.architecture, errors)
        self._idx_to_qb = dict(enumerate(self.architecture.qubits))
        self._qb_to_idx = self.architecture.index_of
        self._max_circuits: int | None = None

    def __repr__(self) -> str:
        return f"<QRMIBackend {self.name!r}: {self.num_qubits} qubits, IQM>"

    @classmethod
    def _default_options(cls) -> Options:
        return Options()

    @property
    def target(self) -> Any:
        """The Qiskit ``Target``: ``r``, ``id``, ``cz`` and ``measure`` on calibrated loci."""
        return self._target

    @property
    def max_circuits(self) -> int | None:
        """Most circuits per job (``None``: no limit advertised)."""
        return self._max_circuits

    @max_circuits.setter
    def max_circuits(self, value: int | None) -> None:
        self._max_circuits = value

    def qubit_name_to_index(self, name: str) -> int:
        """The Qiskit index of an IQM qubit name (``"QB1"`` -> 0)."""
        return self._qb_to_idx[name]

    def index_to_qubit_name(self, index: int) -> str:
        """The IQM qubit name of a Qiskit qubit index (0 -> ``"QB1"``)."""
        return self._idx_to_qb[index]

    def run(
        self,
        run_input: QuantumCircuit | list[QuantumCircuit],
        *,
        use_timeslot: bool = False,
        **options: Any,
    ) -> IQMJobCustom:
        """Serialize transpiled circuits and start them as one IQM task.

        ``options``: ``shots`` (1024), ``circuit_compilation_options``, ``circuit_callback``,
        ``qubit_index_to_name`` (see :meth:`create_run_request`).
        """
        request = self.create_run_request(run_input, **options)
        payload = Payload.IQMServer(
            iqmjson=json.dumps(request), job_type="circuit", use_timeslot=use_timeslot, tag=None
        )
        task_id = self.qrmi.task_start(payload)
        job = IQMJobCustom(self, task_id, request["circuits"], request["shots"])
        job.circuit_metadata = [c.get("metadata") or {} for c in request["circuits"]]
        return job

    def create_run_request(
        self,
        run_input: QuantumCircuit | list[QuantumCircuit],
        shots: int = 1024,
        circuit_compilation_options: Any = None,
        circuit_callback: Callable[[list[QuantumCircuit]], Any] | None = None,
        qubit_index_to_name: dict[int, str] | None = None,
        **unknown_options: Any,
    ) -> dict[str, Any]:
        """The IQM run request for ``run_input``, as a dict, without submitting it.

        Raises:
            ValueError: no circuits, or a circuit that is not transpiled for this backend.
        """
        circuits = [run_input] if isinstance(run_input, QuantumCircuit) else list(run_input)
        if not circuits:
            raise ValueError("Empty list of circuits submitted for execution.")
        compilation = _compilation_options(circuit_compilation_options, unknown_options)
        if unknown_options:
            warnings.warn(f"Unknown backend option(s): {unknown_options}", stacklevel=2)
        if circuit_callback:
            circuit_callback(circuits)
        names = qubit_index_to_name or self._idx_to_qb
        return {
            "circuits": [serialize_circuit(c, names) for c in circuits],
            "calibration_set_id": self._calibration_set_id or None,
            "shots": int(shots),
            **compilation,
        }

    def serialize_circuit(
        self, circuit: QuantumCircuit, qubit_index_to_name: dict[int, str] | None = None
    ) -> dict[str, Any]:
        """One circuit as IQM's JSON circuit (a dict)."""
        return serialize_circuit(circuit, qubit_index_to_name or self._idx_to_qb)


class IQMProvider:
    """The job's IQM resources as Qiskit backends (``get_backend``).

    Arguments are accepted and ignored, as in the reference: the resources and their settings
    come from the job (``QRMI_JOB_QPU_RESOURCES`` / ``QRMI_JOB_QPU_TYPES``).
    """

    def __init__(self, **_args: Any) -> None:
        qpus, types = get_job_qpu_resources_and_types()
        self._iqm_resources = [
            q.strip() for q, t in zip(qpus, types, strict=False) if t == IQM_TYPE
        ]

    def get_backend(
        self,
        name: str | None = None,
        calibration_set_id: UUID | None = None,
        *,
        use_metrics: bool = False,
    ) -> QRMIBackend:
        """A backend for the IQM resource ``name`` (default: the job's first IQM resource).

        A name the job does not hold gives a warning and the first resource, as in the
        reference. ``calibration_set_id`` selects a calibration set other than the default.

        Raises:
            ResourceNotFoundError: the job holds no ``iqm-server`` resource.
        """
        resource = self._resource_name(name)
        resource_id = resource if calibration_set_id is None else f"{resource},{calibration_set_id}"
        qrmi = QuantumResource(resource_id, ResourceType.IQMServer)
        return QRMIBackend(qrmi, calibration_set_id=calibration_set_id, use_metrics=use_metrics)

    def _resource_name(self, name: str | None) -> str:
        if not self._iqm_resources:
            raise ResourceNotFoundError(
                "this job holds no iqm-server resource (QRMI_JOB_QPU_RESOURCES / "
                "QRMI_JOB_QPU_TYPES); submit the job with --qpu=<an IQM resource>"
            )
        first = self._iqm_resources[0].replace(":", "_")
        if name is None:
            return first
        wanted = name.replace(":", "_")
        if wanted in (r.replace(":", "_") for r in self._iqm_resources):
            return wanted
        warnings.warn(f"QC '{name}' is not available. Use '{first}' instead", stacklevel=3)
        return first


def quality_errors(metrics: Any) -> dict[str, float]:
    """``"<gate>:<locus>"`` -> 1 - fidelity from quality metrics observations named
    ``metrics.<method>.<gate>.<QB1>[__<QB2>].fidelity`` (a mapping or a list of
    ``{"dut_field", "value"}``)."""
    observations = metrics.get("observations") if isinstance(metrics, Mapping) else None
    if isinstance(observations, list):
        observations = {
            o.get("dut_field"): o.get("value") for o in observations if isinstance(o, Mapping)
        }
    errors: dict[str, float] = {}
    for field, value in (observations or {}).items():
        parts = str(field).split(".")
        is_fidelity = len(parts) == 5 and parts[0] == "metrics" and parts[4] == "fidelity"
        if is_fidelity and isinstance(value, int | float):
            locus = parts[3].replace("__", ",")
            errors[f"{parts[2]}:{locus}"] = max(0.0, 1.0 - float(value))
    return errors


def _compilation_options(options: Any, unknown: dict[str, Any]) -> dict[str, Any]:
    """Run request fields from ``circuit_compilation_options`` (a dataclass, an object or a
    mapping) or the older ``max_circuit_duration_over_t2`` / ``heralding_mode`` options."""
    legacy: dict[str, Any] = {
        k: unknown.pop(k)
        for k in ("max_circuit_duration_over_t2", "heralding_mode")
        if k in unknown
    }
    if legacy:
        warnings.warn(
            DeprecationWarning(
                "max_circuit_duration_over_t2 and heralding_mode are deprecated; "
                "use circuit_compilation_options instead."
            ),
            stacklevel=3,
        )
    fields: dict[str, Any]
    if options is None:
        fields = dict(legacy)
    elif dataclasses.is_dataclass(options) and not isinstance(options, type):
        fields = dataclasses.asdict(options)
    elif isinstance(options, Mapping):
        fields = dict(options)
    else:
        fields = {k: v for k, v in vars(options).items() if not k.startswith("_")}
    return {k: _plain(v) for k, v in fields.items() if v is not None}


def _plain(value: Any) -> Any:
    """Enum option values (IQM's ``HeraldingMode.NONE``) as their JSON value."""
    return getattr(value, "value", value)


def _backend_name(qrmi: Any) -> str:
    try:
        name = qrmi.metadata().get("backend_name")
    except QrmiError:
        name = None
    return str(name or qrmi.resource_id())
