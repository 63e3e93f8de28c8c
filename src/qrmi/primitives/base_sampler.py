"""``QRMIBaseSamplerV2``: Qiskit's Sampler V2 contract over any QRMI resource.

Each pub is coerced with ``SamplerPub.coerce``, its circuit exported to OpenQASM 3, and the whole
run sent as one IBM Sampler V2 input (``{"pubs": [[qasm, values|null, shots], ...], "shots",
"options", "version": 2, "support_qiskit": true}``) in a ``Payload.QiskitPrimitive`` with
``program_id="sampler"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

from qiskit.primitives import BaseSamplerV2

from qrmi.errors import InvalidInputError
from qrmi.primitives import _common
from qrmi.primitives.runtime_job_v2 import RuntimeJobV2

__all__ = ["Options", "QRMIBaseSamplerV2"]


@dataclass
class Options:
    """Options of :class:`QRMIBaseSamplerV2`."""

    default_shots: int = 1024
    """Shots per pub when neither ``run(shots=...)`` nor the pub gives them."""

    run_options: dict[str, Any] = field(default_factory=dict)
    """Sent unchanged as the input's ``options`` (IBM Sampler V2 options)."""


class QRMIBaseSamplerV2(_common.QrmiPrimitive[Options], BaseSamplerV2):  # type: ignore[misc]
    """Sampler V2 running on a QRMI resource that takes IBM primitive input.

    Args:
        qrmi: a :class:`qrmi.QuantumResource` (or any object with the same task calls).
        options: a dict of :class:`Options` fields, or an ``Options``.

    Raises:
        InvalidInputError: ``qrmi`` is not a resource, or the options are invalid.
    """

    def __init__(self, qrmi: Any, *, options: dict[str, Any] | Options | None = None) -> None:
        super().__init__(qrmi, Options, options)

    def _check_default(self, options: Options, owner: str) -> None:
        _check_shots(options.default_shots, f"{owner}: option 'default_shots'")

    def run(self, pubs: Iterable[Any], *, shots: int | None = None) -> RuntimeJobV2:
        """Submit the pubs as one task and return its job at once.

        Args:
            pubs: circuits, ``(circuit, parameter_values)`` or
                ``(circuit, parameter_values, shots)`` tuples, or ``SamplerPub`` objects.
            shots: shots for pubs that do not set their own (default: ``default_shots``).

        Raises:
            InvalidInputError: a pub, its circuit or ``shots`` is invalid.
        """
        owner = type(self).__name__
        if shots is None:
            shots = self._options.default_shots
        _check_shots(shots, f"{owner}.run: 'shots'")
        encoded = [
            self._encode_pub(pub, index, shots)
            for index, pub in enumerate(_common.pub_list(pubs, owner))
        ]
        params = {
            "pubs": encoded,
            "shots": int(shots),
            "options": self._options.run_options,
            "version": 2,
            "support_qiskit": True,
        }
        return _common.submit(self._qrmi, "sampler", params)

    def _encode_pub(self, pub: Any, index: int, shots: int) -> list[Any]:
        from qiskit.primitives.containers.sampler_pub import SamplerPub

        owner = type(self).__name__
        try:
            coerced = SamplerPub.coerce(pub, shots)
        except (TypeError, ValueError) as exc:
            raise _common.coerce_error(owner, index, exc) from exc
        _common.check_classical_registers(coerced.circuit, index, owner)
        qasm = _common.circuit_to_qasm3(coerced.circuit, index, owner)
        values = None
        if coerced.circuit.num_parameters:
            values = coerced.parameter_values.as_array(coerced.circuit.parameters).tolist()
        return [qasm, values, int(coerced.shots)]


def _check_shots(shots: Any, what: str) -> None:
    if isinstance(shots, bool) or not isinstance(shots, Integral) or shots <= 0:
        raise InvalidInputError(f"{what} must be a positive integer; got {shots!r}")
