"""Qiskit on IQM through QRMI, as in the reference's ``qrmi.qiskit_iqm``::

    from qiskit import QuantumCircuit, transpile
    from qrmi.qiskit_iqm import IQMProvider

    backend = IQMProvider().get_backend()        # the job's iqm-server resource
    job = backend.run(transpile(circuit, backend), shots=1000)
    print(job.result().get_counts())

IQM's client libraries are not needed (they pin a Qiskit that conflicts with
qiskit-ibm-runtime): circuits are serialized here and sent as ``Payload.IQMServer`` tasks
through the ``iqm-server`` backend, which speaks IQM Server's REST API.
"""

from __future__ import annotations

from qrmi.qiskit_iqm.iqm_provider import IQMJobCustom, IQMProvider, QRMIBackend

__all__ = ["IQMJobCustom", "IQMProvider", "QRMIBackend"]
