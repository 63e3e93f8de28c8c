#!/bin/bash
# Estimate expectation values on the job's QPU (see run_sampler.sh for the variables).
#
#   sbatch examples/jobs/run_estimator.sh

#SBATCH --job-name=estimator_job
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --qpu=ibm_fez

source "${PYQRMI_VENV:-/shared/pyqrmi}/bin/activate"
srun python "${PYQRMI_EXAMPLES:-/shared/pyqrmi-examples}/estimator.py"
