"""``QRMIService``: the resources this program may use (re-exported from :mod:`qrmi.job`).

Kept here because programs written for the reference import it as
``from qrmi.primitives import QRMIService``.
"""

from qrmi.job import QRMIService

__all__ = ["QRMIService"]
