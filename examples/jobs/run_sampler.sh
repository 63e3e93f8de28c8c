#!/bin/bash
# A QPU job as users of the reference plugin write them: the QPU is named by an #SBATCH line,
# the program finds it in the job's environment. The script is the same in direct and in
# gateway mode (only the admin's qrmi_config.json differs).
#
#   sbatch examples/jobs/run_sampler.sh                  # on the QPU named below
#   sbatch --qpu=ibm_torino examples/jobs/run_sampler.sh # on another QPU
#
# PYQRMI_VENV (a virtual environment with pyqrmi) and PYQRMI_EXAMPLES (this checkout's
# examples/) default to the paths of a shared file system.

#SBATCH --job-name=sampler_job
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --qpu=ibm_fez

source "${PYQRMI_VENV:-/shared/pyqrmi}/bin/activate"
srun python "${PYQRMI_EXAMPLES:-/shared/pyqrmi-examples}/bell_sampler.py"
