"""``SamplerV2`` for QRMI resources that take IBM primitive input (IBM Quantum, local emulator)."""

from __future__ import annotations

from typing import Any

from qrmi.primitives.base_sampler import Options, QRMIBaseSamplerV2

__all__ = ["SamplerV2"]


class SamplerV2(QRMIBaseSamplerV2):
    """Qiskit Sampler V2 on a QRMI resource.

    Args:
        qrmi: a :class:`qrmi.QuantumResource` (or a backend from :func:`get_backend`).
        options: ``{"default_shots": 1024, "run_options": {}}`` or a subset.

    Example::

        job = SamplerV2(qrmi).run([isa_circuit], shots=1000)
        counts = job.result()[0].data.meas.get_counts()
    """

    def __init__(self, qrmi: Any, *, options: dict[str, Any] | Options | None = None) -> None:
        super().__init__(qrmi, options=options)
