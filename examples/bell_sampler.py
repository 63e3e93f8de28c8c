"""Sample a Bell circuit on a QPU through QRMI, and print the counts.

Runs unchanged on a laptop and in a Slurm job:

    python examples/bell_sampler.py            # outside a job: the local emulator (or the config)
    sbatch --qpu=ibm_fez --wrap "python examples/bell_sampler.py"   # inside a job: its QPU

An optional argument picks a resource by name: python examples/bell_sampler.py ibm_fez
"""

import sys

from qiskit import QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager

from qrmi.primitives import QRMIService
from qrmi.primitives.ibm import SamplerV2, get_target


def pick_resource(service: QRMIService, name: str | None):
    resources = service.resources()
    if name is not None:
        resources = [r for r in resources if r.resource_id() == name]
    if not resources:
        sys.exit(f"no accessible QPU resource{f' named {name!r}' if name else ''}")
    return resources[0]


def main() -> None:
    qrmi = pick_resource(QRMIService(), sys.argv[1] if len(sys.argv) > 1 else None)
    kind = qrmi.resource_type()
    print(f"resource: {qrmi.resource_id()} ({getattr(kind, 'type_string', kind)})")

    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()

    # Rewrite the circuit for the device's gates and connectivity (an "ISA" circuit).
    isa = generate_preset_pass_manager(optimization_level=1, target=get_target(qrmi)).run(bell)

    job = SamplerV2(qrmi).run([isa], shots=1000)
    counts = job.result()[0].data.meas.get_counts()
    print(f"task: {job.job_id()}")
    print("counts:", dict(sorted(counts.items())))


if __name__ == "__main__":
    main()
