"""Pulser front-end: run Pulser sequences on QRMI Pasqal resources.

``from qrmi.pulser import PulserQRMIConnection`` needs Pulser (``pip install 'pyqrmi[pulser]'``)::

    from pulser import QPUBackend
    connection = PulserQRMIConnection(QuantumResource("FRESNEL", "pasqal-cloud"))
    results = QPUBackend(sequence, connection=connection).run([{"runs": 100}], wait=True)
"""

from __future__ import annotations

from qrmi.pulser.connection import PulserQRMIConnection, batch_status

__all__ = ["PulserQRMIConnection", "batch_status"]
