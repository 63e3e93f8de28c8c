"""``QRMIBaseEstimatorV2``: Qiskit's Estimator V2 contract over any QRMI resource.

Each pub is coerced with ``EstimatorPub.coerce`` and sent as ``[qasm, observables, values,
precision]`` in one IBM Estimator V2 input (``{"pubs", "options", "version": 2,
"support_qiskit": true, "precision"}``), ``program_id="estimator"``. Observables are given on
the circuit's qubits: for a transpiled circuit, map them with
``observable.apply_layout(isa_circuit.layout)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from qiskit.primitives import BaseEstimatorV2

from qrmi.errors import InvalidInputError
from qrmi.primitives import _common
from qrmi.primitives.runtime_job_v2 import RuntimeJobV2

__all__ = ["Options", "QRMIBaseEstimatorV2"]


@dataclass
class Options:
    """Options of :class:`QRMIBaseEstimatorV2`."""

    default_precision: float = 0.015625
    """Target standard error when neither ``run(precision=...)`` nor the pub gives one
    (1/sqrt(4096))."""

    run_options: dict[str, Any] = field(default_factory=dict)
    """Sent unchanged as the input's ``options`` (IBM Estimator V2 options)."""


class QRMIBaseEstimatorV2(_common.QrmiPrimitive[Options], BaseEstimatorV2):  # type: ignore[misc]
    """Estimator V2 running on a QRMI resource that takes IBM primitive input.

    Args:
        qrmi: a :class:`qrmi.QuantumResource` (or any object with the same task calls).
        options: a dict of :class:`Options` fields, or an ``Options``.

    Raises:
        InvalidInputError: ``qrmi`` is not a resource, or the options are invalid.
    """

    def __init__(self, qrmi: Any, *, options: dict[str, Any] | Options | None = None) -> None:
        super().__init__(qrmi, Options, options)

    def _check_default(self, options: Options, owner: str) -> None:
        _check_precision(options.default_precision, f"{owner}: option 'default_precision'")

    def run(self, pubs: Iterable[Any], *, precision: float | None = None) -> RuntimeJobV2:
        """Submit the pubs as one task and return its job at once.

        Args:
            pubs: ``(circuit, observables)``, ``(circuit, observables, parameter_values)`` or
                ``(circuit, observables, parameter_values, precision)`` tuples, or
                ``EstimatorPub`` objects.
            precision: target precision for pubs that do not set their own (default:
                ``default_precision``).

        Raises:
            InvalidInputError: a pub, its circuit or observables, or ``precision`` is invalid.
        """
        owner = type(self).__name__
        if precision is None:
            precision = self._options.default_precision
        _check_precision(precision, f"{owner}.run: 'precision'")
        encoded = [
            self._encode_pub(pub, index, precision)
            for index, pub in enumerate(_common.pub_list(pubs, owner))
        ]
        params = {
            "pubs": encoded,
            "options": self._options.run_options,
            "version": 2,
            "support_qiskit": True,
            "precision": float(precision),
        }
        return _common.submit(self._qrmi, "estimator", params)

    def _encode_pub(self, pub: Any, index: int, precision: float) -> list[Any]:
        from qiskit.primitives.containers.estimator_pub import EstimatorPub

        owner = type(self).__name__
        try:
            coerced = EstimatorPub.coerce(pub, precision)
        except (TypeError, ValueError) as exc:
            raise _common.coerce_error(owner, index, exc) from exc
        if coerced.observables.size == 0:
            raise InvalidInputError(
                f"{owner}.run: pubs[{index}] has no observables; give at least one"
            )
        _check_precision(coerced.precision, f"{owner}.run: pubs[{index}]'s precision")
        qasm = _common.circuit_to_qasm3(coerced.circuit, index, owner)
        observables = coerced.observables.tolist()
        values = coerced.parameter_values.as_array(coerced.circuit.parameters).tolist()
        return [qasm, observables, values, float(coerced.precision)]


def _check_precision(precision: Any, what: str) -> None:
    if isinstance(precision, bool) or not isinstance(precision, Real) or not float(precision) > 0:
        raise InvalidInputError(f"{what} must be a positive number; got {precision!r}")
