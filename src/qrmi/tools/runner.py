"""Run one task to its end: start, wait, cancel on a signal, fetch the result or the reason.

:func:`run_task` is the one implementation behind ``qrmi run`` and ``task_runner``. It

* waits with the base class's adaptive polling (a few milliseconds at first, backing off to
  about a second), under an optional deadline;
* on Ctrl-C (SIGINT) or SIGTERM (what ``scancel`` sends) stops the task before returning;
  a signal that arrives while the task is being submitted is held until the task id is known,
  so that no task is left running unseen;
* never stops a task that completed: its result must not be lost.

Exit codes (:data:`EXIT_CODES`) are shared by every command of the CLI.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar, cast

from qrmi.backends.base import poll_intervals
from qrmi.config import Config, ResourceDef, file_kind
from qrmi.errors import (
    ConfigError,
    InvalidInputError,
    QrmiError,
    ResourceNotFoundError,
    ServiceUnavailableError,
    TaskNotFoundError,
    TaskTimeoutError,
    UnsupportedPayloadError,
    UnsupportedResourceTypeError,
)
from qrmi.models import Payload, ResourceType, TaskStatus
from qrmi.protocol import QuantumResourceProtocol

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_CODES",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "Interrupted",
    "RunOutcome",
    "SignalGuard",
    "build_resource",
    "check_output_writable",
    "exit_code_for_error",
    "exit_code_for_status",
    "resolve_resource",
    "run_task",
    "wait_for_final",
    "write_result",
]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention

#: Exit code -> meaning, for help texts and docs.
EXIT_CODES: Mapping[int, str] = {
    EXIT_OK: "the task completed (or the command succeeded)",
    EXIT_FAILED: "the task failed, or a call to the resource failed",
    EXIT_USAGE: "bad command line, configuration, input file, resource name or task id",
    EXIT_CANCELLED: "the task was cancelled",
    EXIT_TIMEOUT: "the task is not finished (--timeout reached, or its result was asked too "
    "early); it keeps running",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C (SIGTERM gives 143); the task was cancelled",
}

# Consecutive transient failures tolerated while polling before giving up.
_MAX_POLL_FAILURES = 10

_USAGE_ERRORS = (
    ConfigError,
    InvalidInputError,
    ResourceNotFoundError,
    TaskNotFoundError,
    UnsupportedPayloadError,
    UnsupportedResourceTypeError,
)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A ``BaseException`` so that retry loops do not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM."""
        return 128 + self.signum


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended.

    ``status`` is the last status seen (``None`` if the task never reported one); ``result``
    the result text of a completed task; ``reason`` the task logs of a failed task;
    ``interrupted_by`` the signal number that stopped the wait.
    """

    task_id: str
    status: TaskStatus | None
    exit_code: int
    result: str | None = None
    reason: str | None = None
    interrupted_by: int | None = None
    timed_out: bool = False


def exit_code_for_status(status: TaskStatus) -> int:
    """0 for Completed, 1 for Failed, 3 for Cancelled, 4 for a task still queued or running."""
    return {
        TaskStatus.Completed: EXIT_OK,
        TaskStatus.Failed: EXIT_FAILED,
        TaskStatus.Cancelled: EXIT_CANCELLED,
    }.get(status, EXIT_TIMEOUT)


def exit_code_for_error(error: BaseException) -> int:
    """The exit code for an error that ended a command."""
    if isinstance(error, Interrupted):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, TaskTimeoutError):
        return EXIT_TIMEOUT
    if isinstance(error, _USAGE_ERRORS):
        return EXIT_USAGE
    return EXIT_FAILED


# ----- resources ---------------------------------------------------------------------------


def resolve_resource(
    name: str,
    *,
    config_path: str | os.PathLike[str] | None = None,
    job_only: bool = False,
    environ: Mapping[str, str] | None = None,
) -> tuple[ResourceDef, bool]:
    """Find the definition of resource ``name`` and whether the current job holds it.

    Order: an explicit config file; the job's resources (``QRMI_JOB_QPU_RESOURCES``, settings
    from the job environment); the config found by :meth:`Config.find`, or the implicit
    ``local`` emulator. With ``job_only`` (``task_runner``), a job may use only its own
    resources.

    Raises:
        ConfigError: no such resource; the message lists the ones available.
    """
    from qrmi.job import get_job_qpu_resources_and_types

    env = os.environ if environ is None else environ
    if config_path is not None:
        return Config.load(config_path).get(name), False
    job = _job_resources(env, get_job_qpu_resources_and_types)
    if job is not None and name in job:
        return ResourceDef(name, job[name]), True
    if job is not None and job_only:
        held = ", ".join(job) or "(none)"
        raise ConfigError(
            f"resource {name!r} is not one of this job's resources ({held}); submit the job "
            f"with --qpu={name}"
        )
    return (Config.find() or Config.default()).get(name), False


def _job_resources(
    env: Mapping[str, str], reader: Callable[[Mapping[str, str]], tuple[list[str], list[str]]]
) -> dict[str, ResourceType | str] | None:
    try:
        names, types = reader(env)
    except RuntimeError:  # not inside a QPU job
        return None
    from qrmi.registry import parse_type

    return {n: parse_type(t) for n, t in zip(names, types, strict=True)}


def build_resource(rdef: ResourceDef) -> QuantumResourceProtocol:
    """The resource for a definition: its ``environment`` first, then ``{name}_{KEY}`` vars."""
    from qrmi.resource import QuantumResource

    return QuantumResource(rdef.name, rdef.resource_type, config=rdef.environment)


# ----- signals -----------------------------------------------------------------------------


class SignalGuard:
    """Turns SIGINT and SIGTERM into :class:`Interrupted`, or holds them during critical calls.

    Outside the main thread signal handlers cannot be installed; the guard then does nothing
    and Ctrl-C arrives as :class:`KeyboardInterrupt`.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._holding = False
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # While holding, a second Ctrl-C means "really stop now". Repeated SIGTERMs do not:
        # Slurm delivers one through srun and one from the step daemon, and its SIGKILL after
        # KillWait is the real deadline.
        if self._holding and (self._pending is None or signum == signal.SIGTERM):
            self._pending = self._pending or signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def hold(self, *, answering: int | None = None) -> Iterator[None]:
        """Hold signals during the block and raise :class:`Interrupted` after it if one came.

        ``answering`` names the signal the block is already the answer to: nothing is raised
        after it, and a Ctrl-C during it counts as the second one.
        """
        self._holding, self._pending = True, answering
        try:
            yield
        finally:
            self._holding = False
        pending, self._pending = self._pending, None
        if pending is not None and answering is None:
            raise Interrupted(pending)


# ----- waiting -----------------------------------------------------------------------------

StatusCallback = Callable[[TaskStatus], None]


def wait_for_final(
    resource: QuantumResourceProtocol,
    task_id: str,
    *,
    timeout: float | None = None,
    on_status: StatusCallback | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> TaskStatus:
    """Poll ``task_id`` with the base class's adaptive intervals until it is final.

    ``on_status`` is called once per status change. A few transient service failures in a row
    are logged and polled through.

    Raises:
        TaskTimeoutError: ``timeout`` seconds passed first; the task keeps running.
    """
    deadline = None if timeout is None else clock() + timeout
    last: TaskStatus | None = None
    failures = 0
    for delay in poll_intervals():
        status = _poll_once(resource, task_id, failures)
        failures = 0 if status is not None else failures + 1
        if status is not None and status != last:
            last = status
            if on_status is not None:
                on_status(status)
        if status is not None and status.is_final:
            return status
        if deadline is not None:
            remaining = deadline - clock()
            if remaining <= 0:
                state = last.name if last is not None else "not reporting its status"
                raise TaskTimeoutError(
                    f"task {task_id} on {resource.resource_id()} is still {state} after "
                    f"{timeout:g} s; it keeps running"
                )
            delay = min(delay, remaining)
        sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _poll_once(resource: QuantumResourceProtocol, task_id: str, failures: int) -> TaskStatus | None:
    """The task's status, or ``None`` after a transient failure (raised once too many)."""
    try:
        return resource.task_status(task_id)
    except ServiceUnavailableError as exc:
        if failures + 1 > _MAX_POLL_FAILURES:
            raise
        logger.warning("polling task %s failed (%s); retrying", task_id, exc)
        return None


def run_task(
    resource: QuantumResourceProtocol,
    payload: Payload,
    *,
    timeout: float | None = None,
    on_started: Callable[[str], None] | None = None,
    on_status: StatusCallback | None = None,
) -> RunOutcome:
    """Start ``payload`` on ``resource``, wait until the task ends and collect what it left.

    ``timeout`` bounds the whole run: the submission, the wait and the fetching of the result.
    When it passes, the task is left running and the outcome says ``timed_out`` (a completed
    task whose result did not arrive in time keeps its result). On SIGINT/SIGTERM the task is
    stopped (unless already final) and the outcome says which signal. Errors of the start call
    propagate.

    Raises:
        TaskTimeoutError: ``timeout`` passed before the submission answered with a task id.
    """
    seen: list[TaskStatus] = []

    def record(status: TaskStatus) -> None:
        seen.append(status)
        if on_status is not None:
            on_status(status)

    deadline = _Deadline(timeout)
    bounded = deadline.bind(resource)
    started: list[str] = []
    with SignalGuard() as guard:
        try:
            with guard.hold():  # a signal now would leave a task running that we cannot name
                started.append(bounded.task_start(payload))
            if on_started is not None:
                on_started(started[0])
            status = wait_for_final(
                bounded, started[0], timeout=deadline.remaining(), on_status=record
            )
        except (Interrupted, KeyboardInterrupt) as exc:
            if not started:
                raise
            return _stop_after_signal(resource, started[0], _signum(exc), guard)
        except TaskTimeoutError:
            if not started:
                raise TaskTimeoutError(
                    f"submitting the task to {resource.resource_id()} did not answer within "
                    f"{timeout:g} s; no task id came back, so a task may still have been "
                    "created: check the resource's queue before running again"
                ) from None
            last = seen[-1] if seen else None
            return RunOutcome(started[0], last, EXIT_TIMEOUT, timed_out=True)
        try:
            return _collect(bounded, started[0], status)
        except (Interrupted, KeyboardInterrupt) as exc:
            # The task completed: leave it (and its result) alone.
            signum = _signum(exc)
            return RunOutcome(started[0], status, 128 + signum, interrupted_by=signum)
        except TaskTimeoutError:
            return RunOutcome(started[0], status, EXIT_TIMEOUT, timed_out=True)


_T = TypeVar("_T")

# The calls of a run that talk to the vendor and may hang; a deadline bounds each of them.
_BOUNDED_CALLS = frozenset({"task_start", "task_status", "task_result", "task_logs"})


class _Deadline:
    """One deadline for a whole run; vendor calls past it are abandoned, not awaited.

    A call that may hang (a vendor that accepts the connection and never answers, retries
    with backoff) runs in a daemon thread that the caller stops waiting for at the deadline.
    Without a timeout, calls run directly.
    """

    def __init__(self, timeout: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._at = None if timeout is None else clock() + timeout

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a deadline."""
        return None if self._at is None else max(0.0, self._at - self._clock())

    def bind(self, resource: QuantumResourceProtocol) -> QuantumResourceProtocol:
        """``resource`` whose vendor calls give up at the deadline."""
        if self._at is None:
            return resource
        return cast(QuantumResourceProtocol, _BoundedResource(resource, self))

    def call(self, what: str, function: Callable[[], _T]) -> _T:
        """``function()``, or :class:`TaskTimeoutError` if it has not returned by the deadline."""
        remaining = self.remaining()
        if remaining is None:
            return function()
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                outcome["value"] = function()
            except BaseException as exc:  # handed to the waiting thread below
                outcome["error"] = exc

        worker = threading.Thread(target=target, name=f"qrmi-{what}", daemon=True)
        worker.start()
        worker.join(remaining)
        if worker.is_alive():
            raise TaskTimeoutError(f"{what} did not answer within the {self.timeout:g} s timeout")
        if "error" in outcome:
            raise outcome["error"]
        return cast(_T, outcome["value"])


class _BoundedResource:
    """A resource whose vendor calls (:data:`_BOUNDED_CALLS`) are bounded by a deadline."""

    def __init__(self, resource: QuantumResourceProtocol, deadline: _Deadline) -> None:
        self._resource = resource
        self._deadline = deadline

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._resource, name)
        if name not in _BOUNDED_CALLS:
            return attribute

        def bounded(*args: Any, **kwargs: Any) -> Any:
            return self._deadline.call(name, lambda: attribute(*args, **kwargs))

        return bounded


def _signum(exc: BaseException) -> int:
    return exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT)


def _stop_after_signal(
    resource: QuantumResourceProtocol, task_id: str, signum: int, guard: SignalGuard
) -> RunOutcome:
    logger.info("%s received: stopping task %s", signal.Signals(signum).name, task_id)
    status: TaskStatus | None = None
    try:
        with guard.hold(answering=signum):
            resource.task_stop(task_id)  # a no-op for a final task: results are kept
            status = resource.task_status(task_id)
    except QrmiError as exc:
        logger.error("could not stop task %s: %s", task_id, exc)
    except (Interrupted, KeyboardInterrupt):
        logger.error("interrupted again: stopped waiting for task %s to be cancelled", task_id)
    return RunOutcome(task_id, status, 128 + signum, interrupted_by=signum)


def _collect(resource: QuantumResourceProtocol, task_id: str, status: TaskStatus) -> RunOutcome:
    if status == TaskStatus.Completed:
        return RunOutcome(task_id, status, EXIT_OK, result=resource.task_result(task_id).value)
    reason = None
    if status == TaskStatus.Failed:
        try:
            reason = resource.task_logs(task_id)
        except QrmiError as exc:
            reason = f"(the task logs could not be read: {exc})"
    return RunOutcome(task_id, status, exit_code_for_status(status), reason=reason)


# ----- output ------------------------------------------------------------------------------


def check_output_writable(output: str | os.PathLike[str] | None) -> None:
    """Fail before any task starts when the result could not be written safely.

    Raises:
        InvalidInputError: the output's directory is missing or not writable; the output
            exists and is not a regular file (a directory, FIFO, device or socket); or,
            as root, the output or one of its directories is a symbolic link a user controls.
    """
    if output is None:
        return
    path = Path(output)
    directory = path.parent if str(path.parent) else Path(".")
    _safe_target(path)
    if not directory.is_dir():
        raise InvalidInputError(f"output directory {directory} does not exist; create it first")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InvalidInputError(f"output directory {directory} is not writable")


def write_result(text: str, output: str | os.PathLike[str] | None) -> None:
    """Write ``text`` to ``output``, or to stdout when ``output`` is ``None``.

    The file is written whole (a temporary file in the same directory, then renamed), and
    only ever replaces a regular file: an existing FIFO, device, socket or directory is
    refused, never written into or replaced. A symbolic link is followed to the file it names,
    except as root, where it is refused (a user could point it at any file).

    Raises:
        InvalidInputError: the target is not a regular file, or is a symbolic link as root.
    """
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return
    path = _safe_target(Path(output))
    existing = _lstat(path)
    mode = stat.S_IMODE(existing.st_mode) if existing else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
        _safe_target(path)  # again, just before the rename: it may have changed meanwhile
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _safe_target(path: Path) -> Path:
    """The file to replace for ``path``: ``path`` itself, or the file its symlink names.

    Raises:
        InvalidInputError: see :func:`write_result`.
    """
    as_root = os.geteuid() == 0
    if as_root:
        _refuse_user_symlinks(path)
    info = _lstat(path)
    if info is not None and stat.S_ISLNK(info.st_mode):
        path = Path(os.path.realpath(path))
        info = _lstat(path)
    if info is not None and not stat.S_ISREG(info.st_mode):
        kind = file_kind(info.st_mode)
        hint = "name a file to write" if stat.S_ISDIR(info.st_mode) else "name a regular file"
        raise InvalidInputError(f"output {path} is {kind}; {hint}")
    return path


def _refuse_user_symlinks(path: Path) -> None:
    """As root, refuse a symlink as the output, and any directory on the way a user can swap."""
    info = _lstat(path)
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise InvalidInputError(
            f"output {path} is a symbolic link; as root, name the file itself (a link could "
            "point at any file on the system)"
        )
    for parent in Path(os.path.abspath(path)).parents:
        found = _lstat(parent)
        if found is not None and stat.S_ISLNK(found.st_mode) and found.st_uid != 0:
            raise InvalidInputError(
                f"output directory {parent} is a symbolic link owned by uid {found.st_uid}; "
                "as root, write into a directory reached without links users own"
            )


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current
