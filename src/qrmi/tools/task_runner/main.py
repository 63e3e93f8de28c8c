"""``task_runner NAME INPUT [OUTPUT]``: run one task file on a resource, the reference's way.

The command line, the input formats and the ``Task ID: <id>`` line are the reference's, so job
scripts written for it keep working. Fixed on purpose:

* the exit code is non-zero when the task failed (1) or was cancelled (3), and 130/143 when
  Ctrl-C or SIGTERM (``scancel``) stopped it; the reference always exits 0;
* a completed task is never stopped, so its result stays readable (the reference stops, and on
  IBM Quantum System deletes, every task at exit);
* waiting uses adaptive polling (milliseconds at first) instead of a fixed one-second sleep;
* ``pasqal-local`` works, IQM's optional keys are optional and a Felis QIR text is not
  JSON-encoded twice;
* log lines and ``Task ID`` go to stderr, so that stdout holds only the result.

Like the reference, it prints the task id and, at the default level, nothing per poll: the
HTTP client's request lines and status changes appear only with ``SRUN_DEBUG`` 4 or more.
``python -m qrmi.tools.task_runner.main`` (the reference's module) and
``python -m qrmi.tools.task_runner`` run it too.

The resource's type comes from the job (``QRMI_JOB_QPU_RESOURCES`` / ``QRMI_JOB_QPU_TYPES``);
outside a job, from the QRMI config file (``$QRMI_CONFIG_FILE``), or the implicit ``local``
emulator. Log level from ``SRUN_DEBUG`` as in the reference: 2 -> ERROR, 4 or more -> DEBUG,
anything else -> INFO.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

# The rest of qrmi is imported when a task runs, not at start-up: ``task_runner --help`` (and a
# bad command line) answers without loading the models, the backends or the runner.
if TYPE_CHECKING:
    import logging

    from qrmi.tools.runner import RunOutcome

__all__ = ["main", "run"]

LOGGER_NAME = "qrmi.task_runner"

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
"""The reference's log line format."""

OWN_LOGGERS = (LOGGER_NAME, "qrmi.tools")
"""Loggers shown at INFO; every other one (HTTP clients, backends) starts at WARNING."""


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``task_runner`` with ``argv`` (default: the process arguments); return the exit code.

    The reference's entry point name (``qrmi.tools.task_runner.main:run``). As a console script
    the return value becomes the process exit status.
    """
    args = _parser().parse_args(argv)
    from qrmi.errors import QrmiError
    from qrmi.log import redact
    from qrmi.tools.runner import Interrupted, exit_code_for_error

    _load_dotenv()
    _configure_logging(os.environ.get("SRUN_DEBUG"))
    try:
        return _run(args.name, args.input, args.output)
    except (QrmiError, Interrupted, KeyboardInterrupt) as exc:
        _logger().error("%s", redact(str(exc)) or type(exc).__name__)
        return exit_code_for_error(exc)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="task_runner",
        description="Run one task input file on a QPU resource and write its result.",
        epilog="Exit codes: 0 completed, 1 failed, 2 bad input, 3 cancelled, 130/143 "
        "interrupted (the task is cancelled).",
    )
    parser.add_argument("name", help="resource name, e.g. ibm_fez (one of the job's --qpu)")
    parser.add_argument("input", help="task input file (JSON; see docs/cli.md)")
    parser.add_argument("output", nargs="?", help="result file (default: stdout)")
    return parser


def _run(name: str, input_file: str, output: str | None) -> int:
    from qrmi.tools.inputs import load_payload
    from qrmi.tools.runner import build_resource, check_output_writable, resolve_resource, run_task

    check_output_writable(output)
    rdef, _ = resolve_resource(name, job_only=True)
    payload = load_payload(input_file, rdef.resource_type)
    resource = build_resource(rdef)
    outcome = run_task(
        resource,
        payload,
        on_started=lambda task_id: print(f"Task ID: {task_id}", file=sys.stderr, flush=True),
        on_status=lambda status: _logger().debug("task status: %s", status.name),
    )
    return _report(outcome, output)


def _report(outcome: RunOutcome, output: str | None) -> int:
    from qrmi.models import TaskStatus
    from qrmi.tools.runner import write_result

    if outcome.interrupted_by is not None:
        after = outcome.status.name if outcome.status else "unknown"
        _logger().error("interrupted; task %s is now %s", outcome.task_id, after)
    elif outcome.status == TaskStatus.Completed and outcome.result is not None:
        write_result(outcome.result, output)
        if output is not None:
            _logger().info("wrote the result of task %s to %s", outcome.task_id, output)
    elif outcome.status == TaskStatus.Failed:
        _logger().error("task %s failed: %s", outcome.task_id, outcome.reason)
    elif outcome.status == TaskStatus.Cancelled:
        _logger().error("task %s was cancelled", outcome.task_id)
    return outcome.exit_code


def _logger() -> logging.Logger:
    import logging  # not at start-up (see the imports)

    return logging.getLogger(LOGGER_NAME)


def _configure_logging(srun_debug: str | None) -> None:
    import logging

    try:
        verbosity = int(srun_debug) if srun_debug else None
    except ValueError:
        verbosity = None
    if verbosity == 2:  # srun --quiet
        level = logging.ERROR
    elif verbosity is not None and verbosity >= 4:
        level = logging.DEBUG
    else:
        level = logging.INFO
    # At INFO only our own lines show: httpx logs every request at INFO, one line per poll,
    # which the reference (whose HTTP client logs nothing at INFO) never printed.
    logging.basicConfig(
        level=logging.WARNING if level == logging.INFO else level,
        stream=sys.stderr,
        format=LOG_FORMAT,
    )
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _load_dotenv() -> None:
    """Read ``.env`` (searched from the working directory up) when python-dotenv is installed.

    Variables already set win. The reference calls ``load_dotenv()`` too, but from its module,
    so it searches from the install directory; the working directory is what users expect.
    """
    try:
        from dotenv import find_dotenv, load_dotenv
    except ImportError:
        return
    load_dotenv(find_dotenv(usecwd=True), override=False)


main = run
"""Alias of :func:`run` (pyqrmi's name before the reference's module layout was adopted)."""


if __name__ == "__main__":
    sys.exit(run())
