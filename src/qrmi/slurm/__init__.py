"""Slurm integration: the helper run by the ``--qpu`` SPANK shim, and admin tools.

* :mod:`qrmi.slurm.helper`: ``python -m qrmi.slurm.helper acquire|release|epilog``, run as root
  by ``spank_qrmi.so`` in slurmstepd and by the Epilog safety net. The lifecycle itself is the
  scheduler-neutral :mod:`qrmi.lifecycle`.
* :mod:`qrmi.slurm.admin`: derive slurm.conf ``Licenses=`` and the ``job_submit.lua`` data from
  ``qrmi_config.json``; check config, plugstack.conf and slurm.conf against each other.
* :mod:`qrmi.slurm.cli`: the ``qrmi slurm ...`` commands (a typer sub-app).

Importing this package imports nothing heavy.
"""
