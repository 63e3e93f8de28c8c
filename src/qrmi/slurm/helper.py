"""The Slurm side of the QPU lifecycle, run as root by the SPANK shim and the Epilog.

Usage (argv comes from ``spank_qrmi.so``; users never run this)::

    python -I -m qrmi.slurm.helper acquire --config C --state-dir D --job J --step S --uid U
        --job-nodes N --qpu NAMES [--inherited NAMES] [--own-allocation] [--timeout SECONDS]
        [--job-record 'LIMIT|LICENSES|START|USER|ACCOUNT|PARTITION|RESERVATION']
    python -I -m qrmi.slurm.helper release --config C --state-dir D --job J [--lock-fd FD]
    python -I -m qrmi.slurm.helper epilog  --config C --state-dir D     # job id: $SLURM_JOB_ID

Every setting comes from the admin's config (``--config``); the helper reads nothing the job's
user set (no stdin, a clean environment from the shim, resources built with ``environ={}``),
and checks the QPUs against the licenses slurmctld granted the job: the shim (root) asks
slurmctld for the job's record and passes it as ``--job-record``, in the form of squeue's
``%l|%W|%S|%u|%a|%P|%v`` (time limit, licenses, start time, user, account, partition,
reservation); without it the helper runs ``squeue`` itself. Output, one line each, is the
shim's protocol: ``setenv KEY=VALUE``, ``info MESSAGE``, ``error MESSAGE``,
``release-at-exit``. Exit status 0 means success.

Which process acquires and which releases (the semantics documented in the user guide):

* ``sbatch --qpu``: the batch step acquires; its end releases; every ``srun`` step inherits
  the variables (any node). Steps may name a subset of the job's QPUs, nothing else.
* bare ``srun --qpu`` (the srun creates its own allocation): that one step acquires and
  releases. ``salloc --qpu``: the first ``srun`` step acquires, later steps reuse the same
  leases, and the Epilog releases at the end of the allocation.
* without a batch step, a job must fit on one node (the leases are kept on the node that
  acquired them); a multi-node one is refused before anything is acquired.
* ``epilog`` (slurm.conf ``Epilog=``) releases whatever a crashed step daemon left behind.

Gateway mode (the QPUs' config entries name ``QRMI_GATEWAY_URL``): the acquisition asks the
QRMI gateway to start the job, proving root with MUNGE, and exports what it answers (the
gateway's URL and the job's token, never a vendor setting); the release and the Epilog end the
job there. Every call fits inside the shim's ``timeout=``; a gateway that is down or refuses
fails the step at start with its message, and nothing stays held.

Usage in the job's record: when the gateway's answer to the job's end carries the job's usage,
the release writes it to the job's Slurm record, ``AdminComment=qrmi:tasks=N,qpu_seconds=S``
(``scontrol update`` while slurmctld still has the job running, else ``sacctmgr modify job``
in slurmdbd), so that ``sacct -o AdminComment`` shows it. Bounded in time; a failure is logged
and changes nothing else. Direct mode writes nothing: the helper does not see the job's tasks.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import sys
import time
from collections.abc import Sequence

from qrmi.errors import InvalidInputError, QrmiError

# Not ``typing.TYPE_CHECKING``: this module imports neither typing nor dataclasses, so that
# they load after the garbage collector is off (see the end); mypy treats the name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType

    from qrmi.config import ResourceDef
    from qrmi.lifecycle import JobLifecycle, JobUsage

INFINITE = "UNLIMITED"


class HelperTimeout(BaseException):
    """The helper's own deadline passed (the shim's kill comes right after).

    A ``BaseException``, like ``KeyboardInterrupt``: the ``except Exception`` of a retry loop,
    a best-effort cleanup or a log handler must not swallow the deadline."""


_log_to_file = False


def emit(kind: str, text: str) -> None:
    """One protocol line; messages are redacted and kept on one line (with a timestamp when
    the output is a log file rather than the shim)."""
    if kind in ("info", "error"):
        from qrmi.log import redact

        text = redact(" ".join(text.split()))
    line = f"{kind} {text}" if text else kind
    if _log_to_file:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _forward_log(level: str, target: str, message: str) -> None:
    emit(
        "error" if level == "ERROR" else "info",
        f"{target}: {message}" if level != "INFO" else message,
    )


def parse_time_limit(text: str) -> int | None:
    """Seconds of a Slurm time limit (``squeue %l``: ``[days-]hours:minutes:seconds`` or
    ``minutes``); ``None`` for UNLIMITED or INFINITE.

    Raises:
        InvalidInputError: the text is not a Slurm time limit.
    """
    text = text.strip()
    if text.upper() in (INFINITE, "INFINITE", "NOT_SET", "NONE"):
        return None
    days, _, clock = text.rpartition("-")
    try:
        parts = [int(p) for p in clock.split(":")]
        day_seconds = int(days) * 86400 if days else 0
    except ValueError:
        raise InvalidInputError(f"{text!r} is not a Slurm time limit") from None
    if len(parts) == 1:
        return day_seconds + parts[0] * 60
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts[-3:]
    return day_seconds + hours * 3600 + minutes * 60 + seconds


#: What Slurm's backfill scheduler writes as the limit of a job that has none (in a partition
#: without MaxTime): 365 days. Such a job is unlimited.
BACKFILL_YEAR_SECONDS = 365 * 86400


class JobRecord:
    """What slurmctld says about the job: its time limit (``None`` if unlimited), the
    licenses it was granted (name -> count), its start time (which tells one run of a
    requeued job from the next; ``None`` if squeue gave none) and, for usage records, its
    user, account and partition (the ones Slurm has, never the job's environment), and the
    reservation it runs in (``None`` when none)."""

    __slots__ = ("accounting", "licenses", "reservation", "start_time", "time_limit_seconds")

    def __init__(
        self,
        time_limit_seconds: int | None,
        licenses: dict[str, int],
        start_time: str | None = None,
        accounting: dict[str, str] | None = None,
        reservation: str | None = None,
    ) -> None:
        self.time_limit_seconds = time_limit_seconds
        self.licenses = licenses
        self.start_time = start_time
        self.accounting = accounting or {}
        self.reservation = reservation


def parse_licenses(text: str) -> dict[str, int]:
    """``squeue %W`` (``emu:1,qa:2``, ``qa`` meaning one, ``(null)`` or empty for none)."""
    licenses: dict[str, int] = {}
    text = text.strip()
    if text in ("", "(null)", "N/A"):
        return licenses
    for item in text.split(","):
        name, _, count = item.strip().partition(":")
        name = name.split("@")[0]  # a remote license: name@server
        try:
            licenses[name] = licenses.get(name, 0) + (int(count) if count else 1)
        except ValueError:
            continue
    return licenses


def parse_job_record(line: str) -> JobRecord:
    """One ``squeue -o '%l|%W|%S|%u|%a|%P|%v'`` line (the fields after ``%W`` may be missing).

    Raises:
        InvalidInputError: the time limit is not a Slurm time limit.
    """
    limit, licenses, start, *names = [*line.split("|"), "", ""]
    seconds = parse_time_limit(limit)
    if seconds == BACKFILL_YEAR_SECONDS:
        seconds = None
    accounting = {
        key: value.strip()
        for key, value in zip(("user", "account", "partition"), names, strict=False)
        if _is_slurm_name(value.strip())  # else left out: it never fails the job
    }
    reservation = names[3].strip() if len(names) > 3 else ""
    return JobRecord(
        seconds,
        parse_licenses(licenses),
        _start_time(start),
        accounting,
        reservation if _is_slurm_name(reservation) else None,
    )


#: The characters of a user, account or partition name the gateway takes for usage records.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@+-")


def _is_slurm_name(text: str) -> bool:
    return 0 < len(text) <= 64 and set(text) <= _NAME_CHARS


def _start_time(text: str) -> str | None:
    """squeue's ``%S`` of a running job (``2026-12-01T07:05:12``), else None (``N/A`` ...)."""
    text = text.strip()
    shape_ok = len(text) == 19 and text[10] == "T"
    return text if shape_ok and all(c.isdigit() or c in "-:T" for c in text) else None


#: How long squeue may take to answer.
SQUEUE_TIMEOUT_SECONDS = 10.0


class JobRecordQuery:
    """One ``squeue`` call for the job's time limit and granted licenses, started at once and
    read when needed, so that it overlaps with loading the config.

    Started with ``posix_spawn`` and read with ``poll``: the ``subprocess`` module (with
    ``locale`` and ``selectors``) would cost every ``--qpu`` step more than squeue itself.
    """

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.pid = 0
        self.problem = ""
        self.pipes: dict[int, bytearray] = {}
        write_ends: list[int] = []
        try:
            for _ in ("stdout", "stderr"):
                read_end, write_end = os.pipe()  # both ends close on exec
                self.pipes[read_end] = bytearray()
                write_ends.append(write_end)
            self.pid = os.posix_spawnp(
                "squeue",
                ["squeue", "-h", "-j", job_id, "-o", "%l|%W|%S|%u|%a|%P|%v"],
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, write_ends[0], 1),
                    (os.POSIX_SPAWN_DUP2, write_ends[1], 2),
                ],
                setsigdef=(signal.SIGPIPE,),  # Python ignores it; squeue must not
            )
        except OSError as exc:
            self.problem = str(exc)
            self._close()
        finally:
            for fd in write_ends:
                os.close(fd)

    def _close(self) -> None:
        for fd in self.pipes:
            os.close(fd)
        self.pipes = {}

    def _read_all(self, deadline: float) -> tuple[str, str] | None:
        """squeue's stdout and stderr once both are closed, or None at the deadline."""
        outputs = list(self.pipes.values())
        poller = select.poll()
        for fd in self.pipes:
            poller.register(fd, select.POLLIN)
        open_fds = set(self.pipes)
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            for fd, _ in poller.poll(left * 1000):
                chunk = os.read(fd, 65536)
                if chunk:
                    self.pipes[fd] += chunk
                else:
                    poller.unregister(fd)
                    open_fds.discard(fd)
        out, err = (data.decode("utf-8", errors="replace") for data in outputs)
        return out, err

    def record(self) -> JobRecord:
        """The job's record.

        Raises:
            QrmiError: squeue failed or did not answer within 10 s.
        """
        if not self.pid:
            raise self._error(self.problem)
        try:
            outputs = self._read_all(time.monotonic() + SQUEUE_TIMEOUT_SECONDS)
            if outputs is None:
                os.kill(self.pid, signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
        finally:
            self._close()
        if outputs is None:
            raise self._error(f"no answer within {SQUEUE_TIMEOUT_SECONDS:g} s")
        out, err = outputs
        if os.waitstatus_to_exitcode(status) != 0 or not out.strip():
            raise self._error(err.strip() or "no answer")
        return parse_job_record(out.splitlines()[0])

    def _error(self, why: str) -> QrmiError:
        return QrmiError(f"cannot read the record of job {self.job_id} with squeue: {why}")


def check_licenses(job_id: str, names: Sequence[str], granted: dict[str, int]) -> None:
    """Refuse QPUs whose license slurmctld did not grant the job.

    Raises:
        InvalidInputError: a QPU of ``names`` has no license in the job; nothing is acquired.
    """
    missing = [name for name in names if granted.get(name, 0) < 1]
    if missing:
        held = ",".join(f"{n}:{c}" for n, c in granted.items()) or "none"
        raise InvalidInputError(
            f"job {job_id} holds no license for QPU {','.join(missing)} (its licenses: {held}); "
            f"a QPU is used only by a job submitted with --qpu: submit with "
            f"sbatch --qpu={','.join(names)} (or salloc/srun --qpu) and use srun inside the job"
        )


class GivenJobRecord:
    """The job's record as the shim read it from slurmctld (``--job-record``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def record(self) -> JobRecord:
        """The job's record (the same parser as squeue's answer).

        Raises:
            InvalidInputError: the time limit is not a Slurm time limit.
        """
        return parse_job_record(self.text)


def _record_source(args: Args) -> GivenJobRecord | JobRecordQuery:
    """The shim's record when it passed one (no squeue process on the step's critical path),
    else a squeue call started at once."""
    if args.job_record is not None:
        return GivenJobRecord(args.job_record)
    return JobRecordQuery(args.job)


def _lifecycle(args: Args) -> JobLifecycle:
    from qrmi.config import Config
    from qrmi.lifecycle import JobLifecycle, JobStateStore

    return JobLifecycle(Config.load(args.config), JobStateStore(args.state_dir))


def _step_plan(args: Args, names: list[str]) -> str:
    """What this step does: ``inherit`` (nothing to do), ``acquire``, or ``acquire-own``.

    Raises:
        InvalidInputError: the request cannot be served correctly; nothing is acquired.
    """
    if args.step == "batch":
        return "acquire-own"
    if args.inherited is not None:
        from qrmi.lifecycle import parse_qpu_list

        held = parse_qpu_list(args.inherited) if args.inherited else []
        extra = [n for n in names if n not in held]
        if extra:
            raise InvalidInputError(
                f"this step asks for --qpu={args.qpu} but job {args.job} holds "
                f"{args.inherited or 'no QPU'}; a step can use only the QPUs of its job (give "
                "every QPU to sbatch --qpu)"
            )
        return "inherit"
    if args.job_nodes > 1:
        raise InvalidInputError(
            f"--qpu on a job without a batch script (salloc, or srun creating its own "
            f"allocation) is supported on one node only, and job {args.job} has "
            f"{args.job_nodes} nodes; submit a batch job instead: sbatch -N{args.job_nodes} "
            f"--qpu={args.qpu} script.sh, with srun inside the script"
        )
    return "acquire-own" if args.own_allocation else "acquire"


def _import_backends(definitions: Sequence[ResourceDef]) -> None:
    """Import the QPUs' backend modules now, so that the import overlaps with the squeue call
    when there is one (a failure is left to the acquisition, which reports it with the QPU's
    name)."""
    from qrmi.lifecycle import type_string
    from qrmi.registry import backend_class

    for rdef in definitions:
        with contextlib.suppress(QrmiError):
            backend_class(type_string(rdef.resource_type))


#: When the helper's own deadline (the shim's ``timeout=`` less one second) passes, as a
#: ``time.monotonic()`` value; ``None`` without a timeout.
_deadline_at: float | None = None


def _seconds_left(share: float, default: float) -> float:
    """``share`` of the time left before the helper's deadline (``default`` without one)."""
    if _deadline_at is None:
        return default
    return max(0.0, (_deadline_at - time.monotonic()) * share)


def _user_of(uid: int) -> dict[str, str]:
    """``{"user": name}`` of ``uid`` for the usage records (nothing when it has no name)."""
    import pwd

    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return {}
    return {"user": name} if _is_slurm_name(name) else {}


def cmd_acquire(args: Args) -> int:
    """Acquire (or reuse) the job's QPUs and print the variables for the shim to export."""
    from qrmi.lifecycle import JobContext, gateway_site, parse_qpu_list, resolve

    names = parse_qpu_list(args.qpu)
    plan = _step_plan(args, names)
    if plan == "inherit":
        return 0
    query = _record_source(args)
    lifecycle = _lifecycle(args)
    definitions = resolve(lifecycle.config, names)  # an unknown name first: it lists the known
    site = gateway_site(definitions)
    if site is None:
        _import_backends(definitions)  # while squeue runs, if it does
    else:
        import qrmi.gateway.client  # noqa: F401  (while squeue runs, if it does)
    record = query.record()
    check_licenses(args.job, names, record.licenses)
    if site is not None and "user" not in record.accounting:  # the shim names no user
        record.accounting.update(_user_of(args.uid))
    ctx = JobContext(
        args.job,
        args.uid,
        record.time_limit_seconds,
        record.start_time,
        record.accounting,
        record.reservation,
    )
    if site is None:
        variables = lifecycle.variables(lifecycle.acquire(ctx, names), ctx)
    else:  # leave time to end a failed start on the gateway before the shim's kill
        variables = lifecycle.start_gateway(
            ctx,
            names,
            site,
            deadline=_seconds_left(0.6, 30.0),
            cleanup_deadline=lambda: _seconds_left(0.9, 10.0),
        )
    try:
        for key, value in variables.items():  # a vendor's token, too, must stay on one line
            if any(c in key + value for c in "\n\r\0"):
                raise InvalidInputError(f"the value of {key} contains a line break")
        for key, value in variables.items():
            emit("setenv", f"{key}={value}")
    except BaseException:  # the job will not run: nothing may stay held
        lifecycle.finish(args.job, gateway_deadline=_seconds_left(0.9, 10.0))
        raise
    if plan == "acquire-own":
        emit("release-at-exit", "")
    emit("info", f"job {args.job} step {args.step}: QPUs {','.join(names)} ready")
    return 0


def cmd_release(args: Args) -> int:
    """Release what the job still holds; a second call finds nothing and succeeds. The job's
    usage, when its gateway reported it, goes into its Slurm record (:func:`record_usage`)."""
    report = _lifecycle(args).finish(
        args.job, held_lock_fd=args.lock_fd, gateway_deadline=_seconds_left(0.9, 30.0)
    )
    if report.released:
        emit("info", f"job {args.job}: released {','.join(report.released)} ({args.command})")
    for name, reason in report.failed.items():
        emit("error", f"job {args.job}: release of QPU {name} failed: {reason}")
    if report.usage is not None:
        _record_usage_logged(args.job, report.usage)
    return 1 if report.failed else 0


#: What the helper writes into a job's AdminComment starts with this.
USAGE_COMMENT_PREFIX = "qrmi:"
#: How long recording a job's usage may take at most (both Slurm commands, retries included).
RECORD_USAGE_SECONDS = 10.0


def usage_comment(usage: JobUsage) -> str:
    """The AdminComment for ``usage``: ``qrmi:tasks=3,qpu_seconds=1.500`` (an unknown part is
    left out)."""
    parts = []
    if usage.tasks is not None:
        parts.append(f"tasks={usage.tasks}")
    if usage.qpu_seconds is not None:
        parts.append(f"qpu_seconds={usage.qpu_seconds:.3f}")
    return USAGE_COMMENT_PREFIX + ",".join(parts)


def _record_usage_logged(job_id: str, usage: JobUsage) -> None:
    """:func:`record_usage` within the helper's deadline; a failure is only logged."""
    comment = usage_comment(usage)
    try:
        where = record_usage(job_id, usage, min(RECORD_USAGE_SECONDS, _seconds_left(0.8, 10.0)))
    except NoAccountingError as exc:  # a site without slurmdbd: expected, not an error
        emit("info", f"job {job_id}: usage {comment} not recorded: {exc}")
        return
    except QrmiError as exc:
        emit("error", f"job {job_id}: usage {comment} not recorded in Slurm: {exc}")
        return
    emit("info", f"job {job_id}: usage {comment} recorded as its AdminComment ({where})")


class NoAccountingError(QrmiError):
    """The job has ended and Slurm keeps no accounting (no slurmdbd): no record to write."""


#: What sacctmgr says when slurm.conf's AccountingStorageType is not slurmdbd.
_NO_SLURMDBD = "not running a supported accounting_storage plugin"


def record_usage(job_id: str, usage: JobUsage, seconds: float) -> str:
    """Write ``usage`` to the job's Slurm record as its AdminComment, within ``seconds``.

    ``scontrol update`` first: it reaches slurmctld's record (and slurmdbd's, with accounting)
    while the job is not finished. The release usually runs as the job ends, when slurmctld
    refuses updates ("Job has already finished"); then ``sacctmgr modify job`` writes the
    record slurmdbd keeps, retried while the job's record is not there yet. Needs root (an
    AdminComment is an administrator's field). Returns ``"slurmctld"`` or ``"slurmdbd"``.

    Raises:
        InvalidInputError: ``job_id`` is not a Slurm job id.
        NoAccountingError: the job has ended and there is no slurmdbd to write to.
        QrmiError: neither command succeeded in time (their messages are in the error).
    """
    if not job_id.isdigit() or len(job_id) > 12:
        raise InvalidInputError(f"job id {job_id!r} is not a Slurm job id")
    comment = usage_comment(usage)
    deadline = time.monotonic() + seconds
    ok, why = _slurm_command(
        ["scontrol", "update", f"JobId={job_id}", f"AdminComment={comment}"], deadline
    )
    if ok:
        return "slurmctld"
    modify = ["sacctmgr", "-i", "modify", "job", "where", f"jobid={job_id}"]
    modify += ["set", f"AdminComment={comment}"]
    while True:
        done, dbd_why = _slurm_command(modify, deadline, expect="Modified jobs")
        if done:
            return "slurmdbd"
        if _NO_SLURMDBD in dbd_why:
            raise NoAccountingError(f"slurmctld: {why}; and Slurm has no accounting (slurmdbd)")
        if "Nothing modified" not in dbd_why or time.monotonic() + 0.5 >= deadline:
            raise QrmiError(f"scontrol: {why}; sacctmgr: {dbd_why}")
        time.sleep(0.5)  # slurmctld has not sent the job's record to slurmdbd yet


def _slurm_command(argv: list[str], deadline: float, expect: str = "") -> tuple[bool, str]:
    """Run a Slurm command until ``deadline``: ``(succeeded, its message on one line)``;
    ``expect``: text its output must hold to count as a success."""
    import subprocess

    left = deadline - time.monotonic()
    if left <= 0:
        return False, "no time left"
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=left,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return False, f"no answer within {left:.1f} s"
    except OSError as exc:
        return False, f"cannot run {argv[0]}: {exc.strerror}"
    message = " ".join((result.stderr + " " + result.stdout).split())[:300]
    return result.returncode == 0 and expect in result.stdout, message or "no message"


def cmd_epilog(args: Args) -> int:
    """The Epilog safety net: release leftovers of ``$SLURM_JOB_ID`` if state exists."""
    args.job = args.job or os.environ.get("SLURM_JOB_ID", "")
    if not args.job:
        emit("error", "epilog: SLURM_JOB_ID is not set")
        return 1
    from qrmi.lifecycle import JobStateStore

    if not JobStateStore(args.state_dir).path(args.job).exists():
        return 0
    return cmd_release(args)


class UsageError(InvalidInputError):
    """The helper's command line is wrong (the shim or the Epilog script is out of date)."""


class Args:
    """The parsed command line: one attribute per option (``--state-dir`` is ``state_dir``)."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.config = "/etc/slurm/qrmi_config.json"
        self.state_dir = "/var/lib/qrmi-slurm"
        self.job = ""
        self.timeout = 0
        self.log = False
        self.step = ""
        self.uid = -1
        self.qpu = ""
        self.job_nodes = 1
        self.inherited: str | None = None
        self.own_allocation = False
        self.job_record: str | None = None
        self.lock_fd: int | None = None


#: Options of every command, and those of ``acquire`` only: name -> kind (str, int or flag).
_COMMON_OPTIONS = {"--config": "str", "--state-dir": "str", "--job": "str", "--timeout": "int"}
_COMMON_OPTIONS["--log"] = "flag"  # output goes to a log file (timestamps)
_ACQUIRE_OPTIONS = {"--step": "str", "--uid": "int", "--qpu": "str", "--job-nodes": "int"}
_ACQUIRE_OPTIONS.update({"--inherited": "str", "--own-allocation": "flag"})
_ACQUIRE_OPTIONS["--job-record"] = "str"  # from the shim
_RELEASE_OPTIONS = {"--lock-fd": "int"}  # the job's lock, taken by the shim (see the shim)
_REQUIRED = {"acquire": ("--job", "--step", "--uid", "--qpu"), "release": ("--job",), "epilog": ()}


def parse_args(argv: Sequence[str]) -> Args:
    """The command line (see the module docstring); a few lines instead of ``argparse``, whose
    import (with shutil, gettext, bz2 and lzma) is a large part of every ``--qpu`` step.

    Raises:
        UsageError: an unknown command or option, a missing value, a value that is not a
            number, or a required option left out.
    """
    if not argv or argv[0] not in _REQUIRED:
        raise UsageError(
            f"the QRMI helper's command must be one of {', '.join(_REQUIRED)}, not "
            f"{argv[0] if argv else 'nothing'!r}; usage: python -I -m qrmi.slurm.helper --help"
        )
    args = Args(argv[0])
    options = {**_COMMON_OPTIONS}
    options.update(_ACQUIRE_OPTIONS if args.command == "acquire" else {})
    options.update(_RELEASE_OPTIONS if args.command == "release" else {})
    seen: set[str] = set()
    rest = list(argv[1:])
    while rest:
        option, has_value, value = rest.pop(0).partition("=")
        kind = options.get(option)
        if kind is None:
            raise UsageError(
                f"unknown option {option!r} for the QRMI helper's {args.command}; it takes "
                f"{', '.join(options)}"
            )
        if kind != "flag" and not has_value:
            if not rest:
                raise UsageError(f"option {option} of the QRMI helper needs a value")
            value = rest.pop(0)
        attribute = option[2:].replace("-", "_")
        if kind == "flag":
            setattr(args, attribute, True)
        elif kind == "int":
            try:
                setattr(args, attribute, int(value))
            except ValueError:
                raise UsageError(
                    f"option {option} of the QRMI helper needs a whole number, not {value!r}"
                ) from None
        else:
            setattr(args, attribute, value)
        seen.add(option)
    missing = [option for option in _REQUIRED[args.command] if option not in seen]
    if missing:
        raise UsageError(f"the QRMI helper's {args.command} needs {', '.join(missing)}")
    return args


COMMANDS = {"acquire": cmd_acquire, "release": cmd_release, "epilog": cmd_epilog}


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise HelperTimeout


def main(argv: Sequence[str] | None = None) -> int:
    """Run one helper command; every failure becomes an ``error`` line and exit status 1
    (2 for a wrong command line)."""
    global _log_to_file, _deadline_at
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__ or "")
        return 0
    try:
        args = parse_args(argv)
    except UsageError as exc:
        emit("error", str(exc))
        return 2
    _log_to_file = args.log
    from qrmi.log import set_log_callback

    set_log_callback(_forward_log)
    if args.timeout > 2:
        # finish (and release a partial acquisition) before the shim's SIGKILL
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.alarm(args.timeout - 1)
        _deadline_at = time.monotonic() + args.timeout - 1
    try:
        return COMMANDS[args.command](args)
    except HelperTimeout:
        what = f"acquiring QPUs {args.qpu}" if args.command == "acquire" else "releasing QPUs"
        emit(
            "error",
            f"{what} for job {args.job} did not finish within {args.timeout - 1} s "
            "(the QPU backend may be hanging); nothing is held",
        )
    except QrmiError as exc:
        emit("error", str(exc))
    except Exception as exc:  # never a traceback instead of a reason
        emit("error", f"unexpected {type(exc).__name__} in QPU {args.command}: {exc}")
    finally:
        signal.alarm(0)
    return 1


def _exit_now(code: int) -> None:
    """Exit without Python's teardown: every line is written and flushed, every lease is
    committed and the job's lock is released by the kernel, and the shim (which waits for the
    helper's end) need not wait for modules and objects to be torn down."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    # A process of well under a second that ends with os._exit: collecting garbage while
    # the imports build thousands of objects only costs time (~2.5 ms of every --qpu step).
    gc.disable()
    _exit_now(main())
