"""The QPU lifecycle of a batch job, independent of the workload manager.

A workload-manager integration (the Slurm helper today; PBS or Flux hooks tomorrow) calls
:meth:`JobLifecycle.start` when a job begins and :meth:`JobLifecycle.finish` when it ends::

    names -> resolve in qrmi_config.json -> per-resource settings (the admin's values only)
    -> status / is_accessible -> acquire -> persisted per-job state -> the job's variables
    ... job runs ... -> release, exactly once

The integration runs as root: every setting a resource is built with (endpoints, credentials,
paths, limits) comes from the admin's ``qrmi_config.json``, never from the job's environment,
and resources are built with an empty process environment (``environ={}``).

Acquisition is all or nothing: when one QPU of the list cannot be acquired, those already
acquired are released and the job fails with the reason. The per-job state (root-only JSON,
one file per job, written after every acquisition and guarded by a lock) lets any later
process (the step that ends the job, an epilog, an admin's cleanup) release what is left, and
makes release idempotent. What the job receives per resource is decided in one place,
:func:`resource_variables`.

Gateway mode: a QPU whose ``environment`` names ``QRMI_GATEWAY_URL`` is held by the QRMI
gateway there (``docs/gateway.md``). :meth:`JobLifecycle.start_gateway` asks the gateway to
start the job (the job receives the gateway's URL and a job token, no vendor setting) and
records the gateway in the job's state, so that :meth:`JobLifecycle.finish` ends the job there
instead of releasing leases itself (the gateway also stops the job's leftover tasks). The
gateway's answer may carry the job's QPU usage (:class:`JobUsage`), which the finish reports so
that the workload manager can record it (the Slurm helper writes it to the job's record).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from qrmi.config import Config, ResourceDef
from qrmi.errors import (
    ConfigError,
    InvalidInputError,
    QrmiError,
    ResourceNotFoundError,
    ServiceUnavailableError,
)
from qrmi.models import ResourceStatusCode, ResourceType

__all__ = [
    "EXCLUSIVE_SETTINGS",
    "GATEWAY_URL_KEY",
    "INFINITE_TIMEOUT_SECONDS",
    "TASK_LOG_VAR",
    "GatewaySite",
    "JobContext",
    "JobLifecycle",
    "JobState",
    "JobStateStore",
    "JobUsage",
    "Lease",
    "ReleaseReport",
    "check_exportable",
    "dedicated_window_prefix",
    "exclusive_settings",
    "gateway_site",
    "job_variables",
    "parse_qpu_list",
    "resource_settings",
    "resource_variables",
]

logger = logging.getLogger(__name__)

#: ``{name}_QRMI_JOB_TIMEOUT_SECONDS`` of a job without a time limit (the reference's value).
INFINITE_TIMEOUT_SECONDS = 4294967295
#: The job's task log: ``QuantumResource.task_start`` appends ``name<TAB>task id`` lines to it,
#: and the job's end stops those tasks that are still running.
TASK_LOG_VAR = "QRMI_JOB_TASK_LOG"
#: How much of a job's (user-written) task log root reads at the job's end, and how many of
#: its tasks are stopped at most.
TASK_LOG_MAX_BYTES = 256 * 1024
TASK_LOG_MAX_TASKS = 1000

_QPU_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

#: A QPU's ``environment`` key that puts it in gateway mode; its value is the gateway's URL.
GATEWAY_URL_KEY = "QRMI_GATEWAY_URL"
#: Optional, with it: the CA bundle of a gateway with a private TLS certificate, and the
#: socket of the ``munged`` that proves root to the gateway (default: munge's own default).
GATEWAY_CA_KEY = "QRMI_GATEWAY_CA_FILE"
GATEWAY_MUNGE_KEY = "QRMI_GATEWAY_MUNGE_SOCKET"
#: How long a job's end waits for the gateway by default (seconds).
GATEWAY_FINISH_SECONDS = 30.0


class _Resource(Protocol):
    def status(self) -> Any: ...
    def acquire(self) -> str: ...
    def release(self, acquisition_token: str) -> None: ...
    def task_stop(self, task_id: str) -> None: ...


#: Builds a resource from ``(name, type string, unprefixed settings)``.
ResourceFactory = Callable[[str, str, Mapping[str, str]], _Resource]


def _default_factory(name: str, kind: str, settings: Mapping[str, str]) -> _Resource:
    from qrmi.resource import QuantumResource

    return QuantumResource(name, kind, config=settings, environ={})


@dataclass(frozen=True)
class JobContext:
    """What the workload manager knows about the job (never anything the user set):
    ``time_limit_seconds`` is ``None`` for an unlimited job; ``run_id`` (its start time) tells
    one run of a requeued job from the next, ``None`` when unknown; ``accounting`` has its
    ``user``, ``account`` and ``partition`` where known (for the gateway's usage records);
    ``reservation`` is the Slurm reservation it runs in (see :func:`exclusive_settings`)."""

    job_id: str
    uid: int
    time_limit_seconds: int | None = None
    run_id: str | None = None
    accounting: dict[str, str] = field(default_factory=dict)
    reservation: str | None = None


@dataclass
class Lease:
    """One acquired resource: its name, type string, token and the settings it was built with."""

    name: str
    type: str
    token: str
    settings: dict[str, str]
    released: bool = False


@dataclass
class JobState:
    """The persisted record of a job's leases."""

    job_id: str
    uid: int
    names: list[str]
    time_limit_seconds: int | None = None
    leases: list[Lease] = field(default_factory=list)
    #: The gateway holding the job's QPUs (:class:`GatewaySite` as a dict), None in direct mode.
    gateway: dict[str, str | None] | None = None
    #: The run the gateway started (:attr:`JobContext.run_id`), so that its end ends that run.
    run_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @staticmethod
    def from_json(text: str) -> JobState:
        data = json.loads(text)
        leases = [Lease(**item) for item in data.pop("leases", [])]
        return JobState(**data, leases=leases)


#: Bounds of a usage report the job's end accepts (a larger number is not a real job's).
MAX_USAGE_TASKS = 10**9
MAX_USAGE_SECONDS = 1e10


@dataclass(frozen=True)
class JobUsage:
    """What a job used of its QPUs, as its gateway counted it: how many tasks it ran and their
    QPU seconds (either may be unknown: ``None``)."""

    tasks: int | None = None
    qpu_seconds: float | None = None

    @staticmethod
    def from_answer(answer: object) -> JobUsage | None:
        """The ``usage`` of a gateway's finish answer, ``{"tasks": 3, "qpu_seconds": 1.5}``;
        ``None`` when it is missing or holds nothing valid. A value that is not a number in
        range (negative, NaN, too large, a bool) is dropped: the answer is not trusted blindly,
        and a bad value must never end up in a job's accounting record."""
        usage = answer.get("usage") if isinstance(answer, dict) else None
        if not isinstance(usage, dict):
            return None
        found = JobUsage(_count(usage.get("tasks")), _seconds(usage.get("qpu_seconds")))
        return None if found == JobUsage() else found


def _count(value: object) -> int | None:
    """``value`` if it is a whole number of tasks in range (a bool is not)."""
    return value if type(value) is int and 0 <= value <= MAX_USAGE_TASKS else None


def _seconds(value: object) -> float | None:
    """``value`` as seconds if it is a finite number in range (a bool is not)."""
    if type(value) not in (int, float):
        return None
    seconds = float(value)  # type: ignore[arg-type]
    return seconds if math.isfinite(seconds) and 0 <= seconds <= MAX_USAGE_SECONDS else None


@dataclass(frozen=True)
class ReleaseReport:
    """What :meth:`JobLifecycle.finish` did; ``usage``: what the job used, when its gateway
    reported it (never in direct mode)."""

    released: list[str]
    failed: dict[str, str]
    had_state: bool
    usage: JobUsage | None = None


def _earlier_run(state: JobState, ctx: JobContext) -> bool:
    """Whether ``state`` was left on this node by an earlier run of the job (Slurm requeued
    it, and that run's end never came: its node failed or was rebooted)."""
    return None not in (state.run_id, ctx.run_id) and state.run_id != ctx.run_id


def parse_qpu_list(text: str) -> list[str]:
    """The names of a ``--qpu`` value, in order, without duplicates.

    Raises:
        InvalidInputError: empty, an empty item, or a character outside ``[A-Za-z0-9_.-]``.
    """
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise InvalidInputError(
            f"--qpu={text!r} must be a comma separated list of QPU names without empty items, "
            "e.g. --qpu=ibm_fez,ibm_torino"
        )
    for item in items:
        if not _QPU_NAME.match(item):
            raise InvalidInputError(
                f"QPU name {item!r} in --qpu contains a character other than letters, digits, "
                "'_', '.' and '-'"
            )
    return list(dict.fromkeys(items))


def resolve(config: Config, names: Sequence[str]) -> list[ResourceDef]:
    """The definitions of ``names``.

    Raises:
        ResourceNotFoundError: a name is not configured (or is a dynamic provider entry); the
            message lists the QPUs that are.
    """
    usable = {n: r for n, r in config.resource_map.items() if not r.is_dynamic}
    unknown = [n for n in names if n not in usable]
    if unknown:
        known = ", ".join(sorted(usable)) or "(none)"
        raise ResourceNotFoundError(
            f"unknown QPU {', '.join(repr(n) for n in unknown)} in --qpu; the QPUs configured "
            f"on this cluster are: {known}"
        )
    return [usable[n] for n in names]


def _naming_qpu(exc: QrmiError, name: str, kind: str) -> QrmiError:
    """``exc`` with a message that starts with the QPU it concerns (same error type)."""
    message = str(exc)
    if f"QPU {name!r}" in message:
        return exc
    try:
        return type(exc)(f"QPU {name!r} ({kind}): {message}")
    except TypeError:  # an error type with its own constructor keeps its message
        return exc


def type_string(kind: ResourceType | str) -> str:
    """The type string of a resource type."""
    return kind.type_string if isinstance(kind, ResourceType) else kind


def dedicated_window_prefix(qpu: str) -> str:
    """Slurm reservations named so (``qrmi slurm reserve --dedicated``) are windows whose jobs
    get ``qpu`` in its vendor's exclusive mode. Only root creates reservations, and the name
    comes from slurmctld's record of the job: nothing the user sets."""
    return f"qrmi-{qpu}-dedicated-"


#: Per type string: the settings that put a QPU in its vendor's exclusive mode. IBM Quantum
#: Compute Service: a session in ``dedicated`` mode (the QPU runs only that session's jobs
#: while it is active); no other vendor API we drive has such a mode.
EXCLUSIVE_SETTINGS: dict[str, dict[str, str]] = {
    "ibm-quantum-compute-service": {"QRMI_IBM_QCS_SESSION_MODE": "dedicated"},
}


def exclusive_settings(
    settings: dict[str, str], qpu: str, kind: str, reservation: str | None
) -> dict[str, str]:
    """``settings``, with the vendor's exclusive mode when the job runs in a dedicated window
    of ``qpu`` (:func:`dedicated_window_prefix`) and the vendor has one."""
    exclusive = EXCLUSIVE_SETTINGS.get(kind)
    if exclusive is None or not reservation:
        return settings
    if not reservation.startswith(dedicated_window_prefix(qpu)):
        return settings
    logger.info("QPU %s: reservation %s is a dedicated window: %s", qpu, reservation, exclusive)
    return {**settings, **exclusive}


def resource_settings(rdef: ResourceDef) -> dict[str, str]:
    """The settings a resource is built with: the admin's ``environment`` alone (the job's own
    variables never reach the root side, whatever their names)."""
    return dict(rdef.environment)


@dataclass(frozen=True)
class GatewaySite:
    """The gateway that holds a job's QPUs, and how root reaches it (the admin's settings)."""

    url: str
    munge_socket: str | None = None
    ca_file: str | None = None


def gateway_site(definitions: Sequence[ResourceDef]) -> GatewaySite | None:
    """The gateway of the job's QPUs, or ``None`` when all of them are in direct mode.

    Raises:
        ConfigError: the QPUs mix direct and gateway mode, or name different gateways (one job
            talks to one gateway); the message names the QPUs.
    """
    sites = {rdef.name: _site_of(rdef) for rdef in definitions}
    via_gateway = {name: site for name, site in sites.items() if site is not None}
    if not via_gateway:
        return None
    direct = [name for name, site in sites.items() if site is None]
    if direct:
        raise ConfigError(
            f"QPUs {','.join(via_gateway)} are in gateway mode ({GATEWAY_URL_KEY} in "
            f"qrmi_config.json) and {','.join(direct)} in direct mode; one job cannot mix "
            "them: submit separate jobs, or put every QPU of the job in the same mode"
        )
    distinct = set(via_gateway.values())
    if len(distinct) > 1:
        urls = ", ".join(f"{name}: {site.url}" for name, site in via_gateway.items())
        raise ConfigError(
            f"the QPUs of one job must be held by one QRMI gateway, and these name different "
            f"gateways or gateway settings ({urls}); submit separate jobs"
        )
    return distinct.pop()


def _site_of(rdef: ResourceDef) -> GatewaySite | None:
    url = rdef.environment.get(GATEWAY_URL_KEY, "").strip()
    if not url:
        return None
    from qrmi.gateway.wire import split_gateway_urls  # light: direct mode never loads httpx

    try:
        urls = split_gateway_urls(url)
    except ConfigError:
        raise ConfigError(
            f"{GATEWAY_URL_KEY}={url!r} of QPU {rdef.name!r} in qrmi_config.json is not an "
            "http:// or https:// URL; set it to the gateway's base URL, e.g. "
            "https://qpu-gw.example.org:8443, or to its replicas' URLs separated by commas"
        ) from None
    return GatewaySite(
        ",".join(urls),
        rdef.environment.get(GATEWAY_MUNGE_KEY) or None,
        rdef.environment.get(GATEWAY_CA_KEY) or None,
    )


def check_exportable(definitions: Sequence[ResourceDef]) -> None:
    """Refuse settings that cannot become job variables, before anything is acquired.

    Raises:
        ConfigError: a key or value holds a line break or NUL (it would end a line of the
            shim's protocol); the message names the QPU and the key, never the value.
    """
    for rdef in definitions:
        for key, value in rdef.environment.items():
            if any(c in key or c in value for c in "\n\r\0"):
                raise ConfigError(
                    f"the setting {key!r} of QPU {rdef.name!r} in qrmi_config.json contains a "
                    "line break or NUL character; remove it from the config"
                )


def timeout_seconds(ctx: JobContext) -> int:
    """``{name}_QRMI_JOB_TIMEOUT_SECONDS``: the job's time limit, or the reference's infinity."""
    if ctx.time_limit_seconds is None or ctx.time_limit_seconds >= INFINITE_TIMEOUT_SECONDS:
        return INFINITE_TIMEOUT_SECONDS
    return ctx.time_limit_seconds


def resource_variables(lease: Lease, ctx: JobContext) -> dict[str, str]:
    """Everything the job receives for one resource (the one place that decides it).

    Today that is the reference's contract: every setting as ``{name}_{KEY}``, the acquisition
    token and the timeout. Taking credentials out of the job environment changes only this.
    """
    variables = {f"{lease.name}_{key}": value for key, value in lease.settings.items()}
    variables[f"{lease.name}_QRMI_JOB_ACQUISITION_TOKEN"] = lease.token
    variables[f"{lease.name}_QRMI_JOB_TIMEOUT_SECONDS"] = str(timeout_seconds(ctx))
    return variables


def job_variables(leases: Sequence[Lease], ctx: JobContext) -> dict[str, str]:
    """The job's environment: the lists of resources and types, the job id and uid, and each
    resource's :func:`resource_variables`."""
    names = ",".join(lease.name for lease in leases)
    types = ",".join(lease.type for lease in leases)
    variables = {
        "QRMI_JOB_ID": ctx.job_id,
        "QRMI_JOB_UID": str(ctx.uid),
        "QRMI_JOB_QPU_RESOURCES": names,
        "QRMI_JOB_QPU_TYPES": types,
        "SLURM_JOB_QPU_RESOURCES": names,
        "SLURM_JOB_QPU_TYPES": types,
    }
    for lease in leases:
        variables.update(resource_variables(lease, ctx))
    return variables


class JobStateStore:
    """Per-job state files ``<dir>/jobs/<job>.json`` (root-only), one lock file per job."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.jobs = self.directory / "jobs"

    def path(self, job_id: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", job_id):
            raise InvalidInputError(f"job id {job_id!r} is not a plain identifier")
        return self.jobs / f"{job_id}.json"

    def _ensure(self) -> None:
        for directory in (self.directory, self.jobs):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self, job_id: str, *, held_fd: int | None = None) -> Iterator[None]:
        """Hold the job's lock (across processes) for the duration of the block.

        ``held_fd``: a descriptor of the job's lock file that the caller's parent already
        locked (the Slurm shim takes the lock before starting the release, so that the
        Epilog waits for it instead of racing it); used only if it is that file and holds the
        lock, and closed in any case.
        """
        self._ensure()
        lock_path = self.path(job_id).with_suffix(".lock")
        fd = _adopt_lock(held_fd, lock_path) if held_fd is not None else None
        if fd is None:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # at once when the descriptor already holds it
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                if not self.path(job_id).exists():
                    lock_path.unlink()
            os.close(fd)

    def load(self, job_id: str) -> JobState | None:
        """The job's state, or ``None`` when there is none.

        Raises:
            ConfigError: the state file is corrupt (its path is in the message).
        """
        path = self.path(job_id)
        try:
            return JobState.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"QRMI job state {path} is corrupt ({exc}); remove it") from None

    def save(self, state: JobState) -> None:
        """Write the state atomically, readable by root only."""
        self._ensure()
        path = self.path(state.job_id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(state.to_json())
        os.replace(tmp, path)

    def delete(self, job_id: str) -> None:
        """Forget the job."""
        self.path(job_id).unlink(missing_ok=True)
        self.task_log(job_id).unlink(missing_ok=True)

    def task_log(self, job_id: str) -> Path:
        """Where the job's tasks are listed (see :data:`TASK_LOG_VAR`)."""
        return self.directory / "tasks" / f"{self.path(job_id).stem}.tasks"

    def create_task_log(self, job_id: str, uid: int) -> Path:
        """An empty task log that only the job's user (and root) can write.

        The state directory becomes traversable (0711) so that the job can reach its own
        file; nobody can list it, and the per-job state stays root-only.
        """
        self._ensure()
        tasks = self.directory / "tasks"
        tasks.mkdir(exist_ok=True)
        for directory in (self.directory, tasks):
            directory.chmod(0o711)
        path = self.task_log(job_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            if os.geteuid() == 0:
                os.fchown(fd, uid, -1)
        finally:
            os.close(fd)
        return path

    def read_task_log(self, job_id: str) -> list[tuple[str, str]]:
        """The ``(resource name, task id)`` pairs the job logged, oldest first, without repeats.

        The file is the user's: root reads only its last :data:`TASK_LOG_MAX_BYTES` and keeps
        the last :data:`TASK_LOG_MAX_TASKS` tasks (the ones most likely still running), so a
        huge or hostile log cannot make the job's end run past its deadline. A log that is
        not a regular file (the user cannot create one in the root-owned directory, but
        still) is ignored.
        """
        try:
            fd = os.open(self.task_log(job_id), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return []
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return []
            start = max(0, info.st_size - TASK_LOG_MAX_BYTES)
            data = os.pread(fd, TASK_LOG_MAX_BYTES, start)
        finally:
            os.close(fd)
        lines = data.decode("utf-8", errors="replace").splitlines()
        if start:
            lines = lines[1:]  # the first line may be cut
            logger.warning(
                "job %s: the task log is %d bytes; only its last %d bytes are read",
                job_id,
                info.st_size,
                TASK_LOG_MAX_BYTES,
            )
        pairs: dict[tuple[str, str], None] = {}
        for line in lines:
            fields = line.split("\t")
            if len(fields) == 2 and all(fields):
                pairs[(fields[0], fields[1])] = None
        return list(pairs)[-TASK_LOG_MAX_TASKS:]

    def job_ids(self) -> list[str]:
        """Jobs that still have state."""
        if not self.jobs.is_dir():
            return []
        return sorted(p.stem for p in self.jobs.glob("*.json"))


def _adopt_lock(fd: int, lock_path: Path) -> int | None:
    """``fd`` when it is the job's lock file (same inode as ``lock_path``, a regular file of
    this user) and already holds its lock; otherwise ``fd`` is closed and the answer is None."""
    try:
        held, current = os.fstat(fd), os.stat(lock_path, follow_symlinks=False)
        if (
            stat.S_ISREG(held.st_mode)
            and (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)
            and held.st_uid == os.geteuid()
        ):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails if another process holds it
            return fd
    except OSError:
        pass
    with contextlib.suppress(OSError):
        os.close(fd)
    return None


class JobLifecycle:
    """Acquire a job's QPUs at its start and release them exactly once at its end."""

    def __init__(
        self,
        config: Config,
        store: JobStateStore,
        *,
        factory: ResourceFactory = _default_factory,
    ) -> None:
        self.config = config
        self.store = store
        self.factory = factory

    def start(self, ctx: JobContext, names: Sequence[str]) -> dict[str, str]:
        """Acquire ``names`` for the job (or reuse the job's existing leases) and return the
        job's variables (:meth:`variables`).

        Raises:
            ResourceNotFoundError: a name is not configured.
            InvalidInputError: the job already holds a different set of QPUs.
            QrmiError: a QPU is not accessible or refused the acquisition; nothing is held.
        """
        return self.variables(self.acquire(ctx, names), ctx)

    def variables(self, leases: Sequence[Lease], ctx: JobContext) -> dict[str, str]:
        """:func:`job_variables`, plus where the job logs its tasks."""
        return {**job_variables(leases, ctx), TASK_LOG_VAR: str(self.store.task_log(ctx.job_id))}

    def acquire(self, ctx: JobContext, names: Sequence[str]) -> list[Lease]:
        """The leases of :meth:`start`, without building the variables (an integration that
        learns the time limit meanwhile builds them itself)."""
        definitions = resolve(self.config, names)
        check_exportable(definitions)
        with self.store.lock(ctx.job_id):
            state = self.store.load(ctx.job_id)
            if state is not None:
                return self._reuse(state, ctx, names)
            state = JobState(ctx.job_id, ctx.uid, list(names), ctx.time_limit_seconds)
            self.store.create_task_log(ctx.job_id, ctx.uid)
            try:
                for rdef in definitions:
                    state.leases.append(self._acquire(rdef, ctx))
                    self.store.save(state)
            except BaseException:
                self._settle(state)
                raise
        return state.leases

    def start_gateway(
        self,
        ctx: JobContext,
        names: Sequence[str],
        site: GatewaySite,
        *,
        deadline: float,
        cleanup_deadline: Callable[[], float],
    ) -> dict[str, str]:
        """Start the job on the gateway ``site`` and return the job's variables (the gateway's
        URL, the job token per QPU and the reference's non-secret variables); a later step of
        the same job starts it again (same leases, a new token).

        The job's state names the gateway before the call, so that the job's end (or the
        Epilog, after a kill mid-call) ends the job there. A start that fails is ended at once
        (best effort, within the seconds ``cleanup_deadline()`` gives then; if that fails too,
        the state stays for the Epilog); one that never reached the gateway is just forgotten.

        Raises:
            InvalidInputError: the job already holds a different set of QPUs.
            GatewayUnavailableError: the gateway did not answer within ``deadline``.
            QrmiError: the gateway refused (its message says why); nothing is held.
        """
        from qrmi.gateway.client import GatewayUnavailableError, start_job

        with self.store.lock(ctx.job_id):
            state = self.store.load(ctx.job_id)
            if state is not None and _earlier_run(state, ctx):
                state = None  # left by a run Slurm requeued; the gateway ends that run itself
            new = state is None
            if state is not None:
                self._reuse(state, ctx, names)
                if state.gateway != asdict(site):
                    raise InvalidInputError(
                        f"job {ctx.job_id} holds its QPUs in another mode or on another "
                        "gateway than qrmi_config.json now says; resubmit the job"
                    )
            else:
                state = JobState(ctx.job_id, ctx.uid, list(names), ctx.time_limit_seconds)
                state.gateway = asdict(site)
                state.run_id = ctx.run_id
                self.store.save(state)
            try:
                _, variables = start_job(
                    site.url,
                    ctx.job_id,
                    ctx.uid,
                    list(names),
                    ctx.time_limit_seconds,
                    run_id=state.run_id,
                    munge_socket=site.munge_socket,
                    ca_file=site.ca_file,
                    deadline=deadline,
                    accounting=ctx.accounting,
                    reservation=ctx.reservation,
                )
            except GatewayUnavailableError as exc:
                if new and not exc.reached:  # the gateway never saw the start: nothing held
                    self.store.delete(ctx.job_id)
                elif new:
                    self._end_after_failed_start(state, cleanup_deadline())
                raise
            except BaseException:
                if new:  # a later step's failed restart leaves the running job alone
                    self._end_after_failed_start(state, cleanup_deadline())
                raise
        logger.info("job %s started on the gateway %s: %s", ctx.job_id, site.url, ",".join(names))
        return variables

    def _end_after_failed_start(self, state: JobState, deadline: float) -> None:
        with contextlib.suppress(Exception):
            self._end_on_gateway(state, deadline)

    def _end_on_gateway(self, state: JobState, deadline: float) -> JobUsage | None:
        """End the job on its gateway (idempotent there), then forget it here; the job's
        usage when the gateway reports it.

        Raises:
            QrmiError: the gateway did not answer or could not release a lease; the state
                stays, so that a later call (the Epilog) retries.
        """
        from qrmi.gateway.client import finish_job

        site = GatewaySite(**(state.gateway or {}))  # type: ignore[arg-type]
        if deadline <= 0:
            raise ServiceUnavailableError(f"no time left to end job {state.job_id} on {site.url}")
        answer = finish_job(
            site.url,
            state.job_id,
            run_id=state.run_id,
            munge_socket=site.munge_socket,
            ca_file=site.ca_file,
            deadline=deadline,
        )
        self.store.delete(state.job_id)
        logger.info("job %s ended on the gateway %s", state.job_id, site.url)
        return JobUsage.from_answer(answer)

    def _reuse(self, state: JobState, ctx: JobContext, names: Sequence[str]) -> list[Lease]:
        if list(names) != state.names:
            raise InvalidInputError(
                f"job {ctx.job_id} already holds QPUs {','.join(state.names)}; a later step "
                f"cannot ask for --qpu={','.join(names)} (request every QPU for the whole job)"
            )
        logger.info("job %s reuses its leases on %s", ctx.job_id, ",".join(names))
        return state.leases

    def _acquire(self, rdef: ResourceDef, ctx: JobContext) -> Lease:
        kind = type_string(rdef.resource_type)
        settings = exclusive_settings(resource_settings(rdef), rdef.name, kind, ctx.reservation)
        build = {**settings, "QRMI_JOB_ID": ctx.job_id, "QRMI_JOB_UID": str(ctx.uid)}
        try:
            resource = self.factory(rdef.name, kind, build)
            status = resource.status()
            if status.status == ResourceStatusCode.Online:
                token = resource.acquire()
        except QrmiError as exc:
            raise _naming_qpu(exc, rdef.name, kind) from exc
        if status.status != ResourceStatusCode.Online:
            reason = f": {status.status_reason}" if status.status_reason else ""
            raise ServiceUnavailableError(
                f"QPU {rdef.name!r} ({kind}) is not accessible (status "
                f"{status.status.name.lower()}{reason}); the job cannot use it now"
            )
        logger.info("job %s acquired QPU %s (%s)", ctx.job_id, rdef.name, kind)
        return Lease(rdef.name, kind, token, settings)

    def finish(
        self,
        job_id: str,
        *,
        held_lock_fd: int | None = None,
        gateway_deadline: float = GATEWAY_FINISH_SECONDS,
    ) -> ReleaseReport:
        """Release every lease of the job that is not released yet; forget the job when all
        are. Safe to call any number of times, from any process (``held_lock_fd``: see
        :meth:`JobStateStore.lock`). A job in gateway mode is ended on its gateway (within
        ``gateway_deadline``), which releases the leases and stops the job's tasks; the
        report's ``usage`` is what the gateway says the job used, if it says so."""
        with self.store.lock(job_id, held_fd=held_lock_fd):
            state = self.store.load(job_id)
            if state is None:
                return ReleaseReport([], {}, had_state=False)
            if state.gateway is not None:
                try:
                    usage = self._end_on_gateway(state, gateway_deadline)
                except Exception as exc:  # kept for a retry (the Epilog)
                    return ReleaseReport([], dict.fromkeys(state.names, str(exc)), True)
                return ReleaseReport(list(state.names), {}, had_state=True, usage=usage)
            released, failed = self._settle(state)
        return ReleaseReport(released, failed, had_state=True)

    def _settle(self, state: JobState) -> tuple[list[str], dict[str, str]]:
        """Release what is held, then stop the job's tasks that are still running; keep the
        state only while a release failed (to retry)."""
        released, failed = self._release_leases(state)
        self.store.save(state)  # a kill while stopping tasks must not release twice
        try:
            self._stop_leftover_tasks(state)
        finally:  # a deadline while stopping tasks must not leave the job's state forever
            if not failed:
                self.store.delete(state.job_id)
        return released, failed

    def _stop_leftover_tasks(self, state: JobState) -> None:
        """Stop the tasks the job logged that are still running: a job killed at its time
        limit or by scancel may not have stopped them itself. Finished tasks and their
        results are left alone (``task_stop`` does nothing to them)."""
        leases = {lease.name: lease for lease in state.leases}
        resources: dict[str, _Resource] = {}  # one per QPU: a job may log thousands of tasks
        for name, task_id in self.store.read_task_log(state.job_id):
            lease = leases.get(name)
            if lease is None:
                continue
            try:
                if name not in resources:
                    resources[name] = self.factory(name, lease.type, self._build(lease, state))
                resources[name].task_stop(task_id)
            except Exception as exc:  # best effort: one vendor must not block the others
                logger.warning(
                    "job %s: could not stop task %s on %s: %s", state.job_id, task_id, name, exc
                )

    @staticmethod
    def _build(lease: Lease, state: JobState) -> dict[str, str]:
        return {**lease.settings, "QRMI_JOB_ID": state.job_id, "QRMI_JOB_UID": str(state.uid)}

    def _release_leases(self, state: JobState) -> tuple[list[str], dict[str, str]]:
        released: list[str] = []
        failed: dict[str, str] = {}
        for lease in state.leases:
            if lease.released:
                continue
            try:
                self.factory(lease.name, lease.type, self._build(lease, state)).release(lease.token)
            except Exception as exc:  # one failing backend must not stop the others
                failed[lease.name] = str(exc)
                logger.error("job %s: release of QPU %s failed: %s", state.job_id, lease.name, exc)
                continue
            lease.released = True
            released.append(lease.name)
            logger.info("job %s released QPU %s", state.job_id, lease.name)
        return released, failed
