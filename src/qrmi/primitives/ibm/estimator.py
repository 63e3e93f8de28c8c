"""``EstimatorV2`` for resources that take IBM primitive input (IBM Quantum, local emulator)."""

from __future__ import annotations

from typing import Any

from qrmi.primitives.base_estimator import Options, QRMIBaseEstimatorV2

__all__ = ["EstimatorV2"]


class EstimatorV2(QRMIBaseEstimatorV2):
    """Qiskit Estimator V2 on a QRMI resource.

    Args:
        qrmi: a :class:`qrmi.QuantumResource` (or a backend from :func:`get_backend`).
        options: ``{"default_precision": 0.015625, "run_options": {}}`` or a subset.

    Example::

        observable = SparsePauliOp("ZZ").apply_layout(isa_circuit.layout)
        job = EstimatorV2(qrmi).run([(isa_circuit, observable)])
        value = job.result()[0].data.evs
    """

    def __init__(self, qrmi: Any, *, options: dict[str, Any] | Options | None = None) -> None:
        super().__init__(qrmi, options=options)
