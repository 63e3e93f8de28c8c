"""``task_runner NAME INPUT [OUTPUT]``: run one task file on a resource, the reference's way.

The command lives in :mod:`qrmi.tools.task_runner.main` (entry point ``run``), the module path
of the reference's wheel, so ``python -m qrmi.tools.task_runner.main`` works as it does there.
"""
