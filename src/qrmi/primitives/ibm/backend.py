"""``get_backend``: a Qiskit ``BackendV2`` view of a QRMI resource, for transpilation.

It carries the resource's target, configuration and properties; it does not execute circuits
(``run()`` raises; use :class:`qrmi.primitives.ibm.SamplerV2`).
"""

from __future__ import annotations

from typing import Any

from qiskit.providers import BackendV2, Options

from qrmi.errors import UnsupportedFunctionError
from qrmi.primitives.ibm.target import DeviceDescription, describe

__all__ = ["QRMIBackend", "get_backend"]


def get_backend(qrmi: Any, use_fractional_gates: bool = False) -> QRMIBackend:
    """A ``BackendV2`` for ``qrmi`` (fetches its target, or reuses the cached one).

    Args:
        qrmi: a resource whose ``target()`` is an IBM configuration/properties pair.
        use_fractional_gates: keep the device's fractional gates in the target.
    """
    return QRMIBackend(qrmi, use_fractional_gates=bool(use_fractional_gates))


class QRMIBackend(BackendV2):  # type: ignore[misc]
    """A QRMI resource seen as a Qiskit backend (target, configuration, properties, status).

    Attributes of the IBM backend configuration (``basis_gates``, ``n_qubits``, ...) are
    reachable as attributes of the backend, as on qiskit-ibm-runtime's ``IBMBackend``.
    """

    def __init__(self, qrmi: Any, **fields: Any) -> None:
        self._qrmi = qrmi
        use_fractional = bool(fields.get("use_fractional_gates", False))
        self._description: DeviceDescription = describe(qrmi, use_fractional_gates=use_fractional)
        configuration = self._description.configuration
        super().__init__(
            name=_backend_name(qrmi, configuration),
            online_date=getattr(configuration, "online_date", None),
            backend_version=getattr(configuration, "backend_version", None),
        )
        if fields:
            self.set_options(**fields)

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the backend lacks; fall back to the configuration.
        if name.startswith("_"):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        try:
            return getattr(self._description.configuration, name)
        except AttributeError:
            raise AttributeError(
                f"'{type(self).__name__}' object has no attribute '{name}'"
            ) from None

    @classmethod
    def _default_options(cls) -> Options:
        from qiskit.result import MeasLevel, MeasReturnType

        return Options(
            shots=4000,
            memory=False,
            meas_level=MeasLevel.CLASSIFIED,
            meas_return=MeasReturnType.AVERAGE,
            memory_slots=None,
            memory_slot_size=100,
            rep_time=None,
            rep_delay=None,
            init_qubits=True,
            use_measure_esp=None,
            use_fractional_gates=False,
            noise_model=None,
            seed_simulator=None,
        )

    @property
    def qrmi(self) -> Any:
        """The resource this backend describes."""
        return self._qrmi

    @property
    def target(self) -> Any:
        """The Qiskit ``Target`` of the resource."""
        return self._description.target

    @property
    def max_circuits(self) -> None:
        """No fixed limit is advertised (as for IBM backends)."""
        return None

    @property
    def meas_map(self) -> Any:
        """Groups of qubits measured together."""
        return self._description.configuration.meas_map

    @property
    def dtm(self) -> Any:
        """The output signal time step, in seconds."""
        return self._description.configuration.dtm

    def configuration(self) -> Any:
        """The IBM backend configuration (``QasmBackendConfiguration``)."""
        return self._description.configuration

    def properties(self, refresh: bool = False) -> Any:
        """The IBM backend properties (``BackendProperties``), or ``None``."""
        if refresh:
            self.refresh()
        return self._description.properties

    def refresh(self) -> None:
        """Fetch the resource's description again and rebuild the target."""
        self._description = describe(
            self._qrmi, use_fractional_gates=bool(self.options.use_fractional_gates), refresh=True
        )

    def status(self) -> Any:
        """A ``BackendStatus`` whose ``operational`` is the resource's ``is_accessible()``."""
        from qiskit_ibm_runtime.models import BackendStatus

        configuration = self._description.configuration
        return BackendStatus.from_dict(
            {
                "backend_name": self.name,
                "backend_version": getattr(configuration, "backend_version", "") or "",
                "status_msg": "",
                "operational": bool(self._qrmi.is_accessible()),
                "pending_jobs": 0,
            }
        )

    def check_faulty(self, circuit: Any) -> None:
        """Refuse a circuit that uses a qubit or a two-qubit edge the properties mark faulty.

        Barriers are ignored. Without properties nothing is checked.

        Raises:
            ValueError: an instruction acts on a faulty qubit or edge (the message names both).
        """
        properties = self.properties()
        if not properties:
            return
        faulty_qubits = set(properties.faulty_qubits())
        faulty_edges = {
            tuple(gate.qubits) for gate in properties.faulty_gates() if len(gate.qubits) > 1
        }
        for instruction in circuit.data:
            if instruction.operation.name == "barrier":
                continue
            qubits = tuple(circuit.find_bit(q).index for q in instruction.qubits)
            _refuse_faulty(circuit, instruction, qubits, faulty_qubits, faulty_edges)

    def get_translation_stage_plugin(self) -> str:
        """The translation plugin IBM backends use (from qiskit-ibm-runtime)."""
        if self.options.use_fractional_gates:
            return "ibm_dynamic_and_fractional"
        return "ibm_dynamic_circuits"

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported: QRMI resources run primitives.

        Raises:
            UnsupportedFunctionError: always.
        """
        raise UnsupportedFunctionError(
            f"{type(self).__name__}.run() is not supported: run circuits with the primitives, "
            "e.g. qrmi.primitives.ibm.SamplerV2(qrmi).run([isa_circuit]).result() "
            "(SamplerV2 also accepts this backend)"
        )


def _refuse_faulty(
    circuit: Any,
    instruction: Any,
    qubits: tuple[int, ...],
    faulty_qubits: set[int],
    faulty_edges: set[tuple[int, ...]],
) -> None:
    for qubit in qubits:
        if qubit in faulty_qubits:
            raise ValueError(
                f"Circuit {circuit.name} contains instruction {instruction} operating on a "
                f"faulty qubit {qubit}; transpile it for this backend again to avoid that qubit."
            )
    if len(qubits) == 2 and qubits in faulty_edges:
        raise ValueError(
            f"Circuit {circuit.name} contains instruction {instruction} operating on a faulty "
            f"edge {qubits}; transpile it for this backend again to avoid that edge."
        )


def _backend_name(qrmi: Any, configuration: Any) -> str:
    try:
        name = qrmi.metadata().get("backend_name")
    except Exception:  # metadata is a nicety; fall back below
        name = None
    if not name:
        name = getattr(configuration, "backend_name", None) or qrmi.resource_id()
    return str(name)
