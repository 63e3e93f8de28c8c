"""Qiskit primitives, target and backend for resources that speak IBM's primitive protocol.

That is IBM Quantum (Direct Access, Quantum Compute Service) and the local emulator.
"""

from qrmi.primitives.ibm.backend import QRMIBackend, get_backend
from qrmi.primitives.ibm.estimator import EstimatorV2
from qrmi.primitives.ibm.sampler import SamplerV2
from qrmi.primitives.ibm.target import get_target

__all__ = ["EstimatorV2", "QRMIBackend", "SamplerV2", "get_backend", "get_target"]
