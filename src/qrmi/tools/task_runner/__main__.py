"""``python -m qrmi.tools.task_runner``: the same command as ``task_runner``."""

import sys

from qrmi.tools.task_runner.main import run

sys.exit(run())
