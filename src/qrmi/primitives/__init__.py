"""Qiskit primitives (Sampler V2, Estimator V2) that run on QRMI resources.

Programs written for the reference's ``qrmi.primitives`` run unchanged::

    from qrmi.primitives import QRMIService
    from qrmi.primitives.ibm import SamplerV2, get_target

    qrmi = QRMIService().resources()[0]
    isa = generate_preset_pass_manager(target=get_target(qrmi)).run(circuit)
    counts = SamplerV2(qrmi).run([isa]).result()[0].data.meas.get_counts()

Importing this package imports Qiskit; ``import qrmi`` alone does not.
"""

from qrmi.primitives.base_estimator import QRMIBaseEstimatorV2
from qrmi.primitives.base_sampler import QRMIBaseSamplerV2
from qrmi.primitives.runtime_job_v2 import RuntimeJobV2, TaskFailedError
from qrmi.primitives.service import QRMIService

__all__ = [
    "QRMIBaseEstimatorV2",
    "QRMIBaseSamplerV2",
    "QRMIService",
    "RuntimeJobV2",
    "TaskFailedError",
]
