"""Estimate expectation values of a Bell state on a QPU through QRMI.

    python examples/estimator.py               # local emulator outside a Slurm job
    sbatch --qpu=ibm_fez --wrap "python examples/estimator.py"

An ideal Bell state gives <ZZ> = <XX> = 1, <YY> = -1 and <ZI> = 0.
"""

import sys

from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager

from qrmi.primitives import QRMIService
from qrmi.primitives.ibm import EstimatorV2, get_target


def main() -> None:
    resources = QRMIService().resources()
    if not resources:
        sys.exit("no accessible QPU resource")
    qrmi = resources[0]
    kind = qrmi.resource_type()
    print(f"resource: {qrmi.resource_id()} ({getattr(kind, 'type_string', kind)})")

    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)

    isa = generate_preset_pass_manager(optimization_level=1, target=get_target(qrmi)).run(bell)
    labels = ["ZZ", "XX", "YY", "ZI"]
    # Observables act on the circuit's qubits: map them to the device qubits the layout chose.
    observables = [SparsePauliOp(label).apply_layout(isa.layout) for label in labels]

    job = EstimatorV2(qrmi).run([(isa, observables)], precision=0.02)
    data = job.result()[0].data
    for label, value, std in zip(labels, data.evs, data.stds, strict=True):
        print(f"<{label}> = {value:+.3f} ± {std:.3f}")


if __name__ == "__main__":
    main()
