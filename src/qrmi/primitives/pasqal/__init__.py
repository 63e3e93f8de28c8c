"""Qiskit primitives for Pasqal resources (``pasqal-cloud``, ``pasqal-local``), as in the
reference's ``qrmi.primitives.pasqal``::

    from qrmi.primitives import QRMIService
    from qrmi.primitives.pasqal import SamplerV2

    qrmi = QRMIService().resources()[0]
    job = SamplerV2(qrmi).run([analog_circuit], shots=500)
    print(job.result()[0].data.counts)

``SamplerV2`` (an alias of ``QPPSamplerV2``) needs qiskit-pasqal-provider
(``pip install 'pyqrmi[pasqal]'``); it is imported when first used.
"""

from __future__ import annotations

from typing import Any

from qrmi.primitives.pasqal.sampler import QRMIPasqalBackend, QRMIPasqalJob
from qrmi.primitives.pasqal.target import get_device, get_target

__all__ = [
    "QPPSamplerV2",
    "QRMIPasqalBackend",
    "QRMIPasqalJob",
    "SamplerV2",
    "get_device",
    "get_target",
]


def __getattr__(name: str) -> Any:
    # The samplers subclass qiskit-pasqal-provider's: resolved (and imported) on first use.
    if name in ("SamplerV2", "QPPSamplerV2"):
        from qrmi.primitives.pasqal import sampler

        cls = sampler.QPPSamplerV2
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
