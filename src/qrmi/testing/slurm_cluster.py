"""A throwaway Slurm cluster on 127.0.0.1 for tests and benchmarks (needs root and Debian's Slurm).

:class:`SlurmCluster` writes its own configuration into a fresh directory, starts its own munged
(own key and socket), one slurmctld and a few emulated compute nodes (``slurmd -N n1`` ...) on
ports away from Slurm's defaults, builds the ``--qpu`` SPANK shim with gcc, registers it in its
own plugstack.conf, installs the ``job_submit.lua`` QPU-to-license rule and the Epilog safety
net, and creates an unprivileged user to run jobs as. Jobs need the project's Python: when the
checkout is not reachable by that user (a clone under a 0700 temp dir), its site-packages are
hard-linked into a venv inside the cluster directory. Every daemon is stopped by its PID.

With ``accounting=True`` (off by default: it adds a few seconds) the cluster also keeps Slurm's
own accounting: a MariaDB server with a fresh data directory on 127.0.0.1 (a free port), a
slurmdbd with its own root-only ``slurmdbd.conf``, every QPU's license tracked as a TRES
(``AccountingStorageTRES=license/<qpu>``), and the accounts of :attr:`SlurmCluster.accounts`
with their users, so that ``sacct`` and ``sreport`` show QPU use per job, user and account.

Nothing here touches ``/etc/slurm`` or the system munged. Client commands get ``SLURM_CONF``.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ClusterUnavailable", "SlurmCluster", "find_checkout"]

TEST_USER = "qrmitest"
#: The second job user of a cluster with accounting (in another account than TEST_USER).
TEST_USER2 = "qrmitest2"
# slurmctld ends a batch job as NODE_FAIL when its node registers without it, but only once the
# job has not been seen for BatchStartTimeout + MessageTimeout; the node registers when its slurmd
# starts and otherwise only every 20 pings. SlurmdTimeout stays well above that grace so that a
# node can be dead past it without being set DOWN (a different path, not the one tested).
BATCH_START_TIMEOUT = 10
MESSAGE_TIMEOUT = 10
SLURMD_TIMEOUT = 60
REQUIRED_PROGRAMS = ("slurmctld", "slurmd", "sbatch", "munged", "gcc")
ACCOUNTING_PROGRAMS = ("slurmdbd", "mariadbd", "mariadb-install-db", "mariadb", "sacctmgr")
#: The order daemons are stopped in: compute nodes (any other name) first, munged last.
STOP_ORDER = ("slurmctld", "slurmdbd", "mariadb", "munged")
CLUSTER_NAME = "qrmitest"
#: The database and its user that slurmdbd writes to (the server is the cluster's own).
DB_NAME = "slurm_acct_db"
DB_USER = "slurm"
DAEMON_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class ClusterUnavailable(RuntimeError):
    """The cluster cannot run here (not root, packages missing, a daemon did not start)."""


def find_checkout() -> Path:
    """The project checkout this module belongs to (holds ``slurm/spank_qrmi.c``).

    Raises:
        ClusterUnavailable: the module is installed without its checkout.
    """
    for parent in Path(__file__).resolve().parents:
        if (parent / "slurm" / "spank_qrmi.c").is_file():
            return parent
    raise ClusterUnavailable("the slurm/ sources of pyqrmi are not next to this installation")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _run(
    args: Sequence[str],
    *,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=None if env is None else dict(env),
        cwd=cwd,
    )


def _wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise ClusterUnavailable(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class SlurmCluster:
    """A running test cluster; use :meth:`start` / :meth:`stop` (or ``with``).

    ``qrmi_config`` is written as the cluster's root-only ``qrmi_config.json``; ``licenses``
    overrides the per-QPU license counts derived from it; ``site_dirs`` are extra directories
    (holding modules and ``*.dist-info``) put on the cluster Python's path, e.g. a test backend.
    ``accounting`` also starts MariaDB and slurmdbd and creates :attr:`accounts` (account ->
    its users; a user's default account is the first that lists it).
    """

    qrmi_config: Mapping[str, object]
    nodes: tuple[str, ...] = ("n1", "n2", "n3")
    licenses: Mapping[str, int] = field(default_factory=dict)
    helper_timeout: int = 20
    site_dirs: Sequence[Path] = ()
    user: str = TEST_USER
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="qrmi-slurm-")))
    pids: dict[str, int] = field(default_factory=dict)
    python: Path | None = None
    accounting: bool = False
    accounts: Mapping[str, Sequence[str]] = field(
        default_factory=lambda: {"physics": (TEST_USER,), "chemistry": (TEST_USER2,)}
    )
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    # ----- paths ------------------------------------------------------------------------------

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def slurm_conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def slurmdbd_conf(self) -> Path:
        """slurmdbd's configuration (root-only: it holds the database password)."""
        return self.etc / "slurmdbd.conf"

    @property
    def mysql_socket(self) -> Path:
        """The MariaDB server's unix socket (root connects through it, without a password)."""
        return self.root / "mysql" / "mysqld.sock"

    @property
    def config_path(self) -> Path:
        return self.etc / "qrmi_config.json"

    @property
    def state_dir(self) -> Path:
        """Root-only per-job state of the QRMI helper."""
        return self.root / "qrmi-state"

    @property
    def work(self) -> Path:
        """A directory owned by the test user: job scripts run and write output here."""
        return self.root / "work"

    def work_of(self, user: str) -> Path:
        """:attr:`work` for the test user, ``work-<user>`` (owned by ``user``) for the others."""
        return self.work if user == self.user else self.root / f"work-{user}"

    @property
    def users(self) -> list[str]:
        """The job users: the test user, and with accounting every user of :attr:`accounts`."""
        extra = [u for users in self.accounts.values() for u in users] if self.accounting else []
        return list(dict.fromkeys([self.user, *extra]))

    @property
    def shared(self) -> Path:
        """A directory every user may write (e.g. an emulator's state dir)."""
        return self.root / "shared"

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands (sbatch, squeue ...) against this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "QRMI_"))}
        env["SLURM_CONF"] = str(self.slurm_conf)
        return env

    # ----- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Prepare everything and start munged, slurmctld and the nodes.

        Raises:
            ClusterUnavailable: not root, a program is missing, or a daemon did not come up.
        """
        self._check_prerequisites()
        try:
            self._prepare()
            self._start_munged()
            if self.accounting:
                self._start_accounting()
            self._start_slurm()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every daemon this cluster started, by PID (slurmd first, munged last), then
        the step daemons its slurmds left and the test user's processes left from its jobs
        (orphans of a killed step daemon)."""
        order = sorted(self.pids, key=lambda n: STOP_ORDER.index(n) if n in STOP_ORDER else -1)
        for name in order:
            self._kill(self.pids.pop(name))
            process = self.processes.pop(name, None)
            if process is not None:  # a child of ours (mariadbd): reap it
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        for pid in [*self.step_daemons(), *self.job_processes()]:
            self._kill(pid)

    def step_daemons(self, job_id: int | None = None, step: str = "batch") -> list[int]:
        """PIDs of this cluster's ``slurmstepd`` processes (of one job's ``step`` if given).

        Matched by the ``SLURM_CONF`` they inherit from this cluster's slurmd: other clusters
        on the machine (another test run, a leftover) reuse the same job ids.
        """
        wanted = b"slurmstepd: [" + (f"{job_id}.{step}]".encode() if job_id else b"")
        conf = f"SLURM_CONF={self.slurm_conf}".encode()
        pids = []
        for proc in Path("/proc").iterdir():
            try:
                if not proc.name.isdigit() or not (proc / "cmdline").read_bytes().startswith(
                    wanted
                ):
                    continue
                if conf in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                continue
        return pids

    def job_processes(self) -> list[int]:
        """PIDs of the test users' processes that belong to this cluster's jobs."""
        uids = set()
        for user in self.users:
            with contextlib.suppress(KeyError):
                uids.add(pwd.getpwnam(user).pw_uid)
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and _owner(proc) in uids and self._belongs(proc):
                pids.append(int(proc.name))
        return pids

    def _belongs(self, proc: Path) -> bool:
        root = str(self.root)
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            return False
        return root in cmdline or cwd.startswith(root)

    def cleanup(self) -> None:
        """Stop the daemons and delete the cluster directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _kill(pid: int) -> None:
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                if _is_zombie(pid):
                    return
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)

    def _check_prerequisites(self) -> None:
        if os.geteuid() != 0:
            raise ClusterUnavailable("the Slurm test cluster needs root")
        programs = REQUIRED_PROGRAMS + (ACCOUNTING_PROGRAMS if self.accounting else ())
        missing = [p for p in programs if not _which(p)]
        if missing:
            raise ClusterUnavailable(
                f"missing programs: {', '.join(missing)}; run scripts/install-system-deps"
            )
        if not Path("/usr/include/slurm/spank.h").is_file():
            raise ClusterUnavailable("missing /usr/include/slurm/spank.h (libslurm-dev)")

    def _prepare(self) -> None:
        self.root.chmod(0o755)
        for sub in ("etc", "log", "run", "ctld", "munge", "shared", "work", "spool"):
            (self.root / sub).mkdir(exist_ok=True)
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        for node in self.nodes:
            (self.root / "spool" / node).mkdir(parents=True, exist_ok=True)
        (self.root / "shared").chmod(0o1777)
        for user in self.users:
            _ensure_user(user)
            work = self.work_of(user)
            work.mkdir(exist_ok=True)
            os.chown(work, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        self.python = self._prepare_python()
        self._build_shim()
        self._write_configs()

    # ----- python for jobs and for the helper ------------------------------------------------

    def _prepare_python(self) -> Path:
        """A venv under the cluster dir whose packages the test user can read."""
        venv = self.root / "venv"
        result = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        if result.returncode != 0:
            raise ClusterUnavailable(f"cannot create a venv: {result.stderr.strip()}")
        site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
        source_site = Path(sysconfig.get_path("purelib"))
        if self._user_can_read(source_site) and self._user_can_read(find_checkout() / "src"):
            lines = [f"import site; site.addsitedir({str(source_site)!r})"]
        else:
            _link_tree(source_site, site)
            (site / "_editable_impl_pyqrmi.pth").unlink(missing_ok=True)
            shutil.copytree(find_checkout() / "src" / "qrmi", site / "qrmi", dirs_exist_ok=True)
            lines = []
        for extra in self.site_dirs:
            target = self.root / "site" / extra.name
            shutil.copytree(extra, target, dirs_exist_ok=True)
            lines.append(str(target))
        (site / "zz_qrmi_cluster.pth").write_text("\n".join(lines) + "\n")
        _make_world_readable(self.root / "site")
        python = venv / "bin" / "python"
        check = self.as_user([str(python), "-c", "import qrmi.slurm.helper"], timeout=60)
        if check.returncode != 0:
            raise ClusterUnavailable(f"the job user cannot import qrmi: {check.stderr[-500:]}")
        return python

    def _user_can_read(self, path: Path) -> bool:
        result = _run(
            ["runuser", "-u", self.user, "--", "test", "-r", str(path), "-a", "-x", str(path)]
        )
        return result.returncode == 0

    # ----- configuration ---------------------------------------------------------------------

    def _build_shim(self) -> None:
        source = find_checkout() / "slurm" / "spank_qrmi.c"
        result = _run(
            [
                "gcc",
                "-std=gnu11",
                "-O2",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-shared",
                "-fPIC",
                "-o",
                str(self.etc / "spank_qrmi.so"),
                str(source),
            ]
        )
        if result.returncode != 0:
            raise ClusterUnavailable(f"cannot build the SPANK shim:\n{result.stderr}")

    def _write_configs(self) -> None:
        from qrmi.slurm import admin  # the code under test writes its own rule data

        self.config_path.write_text(json.dumps(self.qrmi_config, indent=2))
        self.config_path.chmod(0o600)
        names = self.qpu_names()
        counts = {name: self.licenses.get(name, 1) for name in names}
        checkout = find_checkout()
        shutil.copy(checkout / "slurm" / "job_submit.lua", self.etc / "job_submit.lua")
        (self.etc / admin.LUA_DATA_FILE).write_text(admin.render_lua_data(names))
        epilog = self.etc / "qrmi-epilog.sh"
        epilog.write_text(
            admin.render_epilog_script(str(self.python), str(self.config_path), str(self.state_dir))
        )
        epilog.chmod(0o755)
        (self.etc / "plugstack.conf").write_text(
            f"required {self.etc / 'spank_qrmi.so'} config={self.config_path} "
            f"python={self.python} timeout={self.helper_timeout} state_dir={self.state_dir}\n"
        )
        self.slurm_conf.write_text(self._slurm_conf(admin.render_licenses(counts)))
        if self.accounting:
            self.slurmdbd_conf.write_text(self._slurmdbd_conf())
            self.slurmdbd_conf.chmod(0o600)  # slurmdbd refuses a readable one; SlurmUser=root
        _make_world_readable(self.etc, skip=(self.config_path, self.slurmdbd_conf))

    def qpu_names(self) -> list[str]:
        """The QPUs of :attr:`qrmi_config` (read without loading backends: the types may be
        test backends only the cluster's Python knows)."""
        resources = self.qrmi_config.get("resources", [])
        assert isinstance(resources, list)
        return sorted(r["name"] for r in resources if not r.get("is_dynamic", False))

    def _slurm_conf(self, licenses_line: str) -> str:
        ctld_port, *node_ports = _free_ports(1 + len(self.nodes))
        host = socket.gethostname().split(".")[0]
        r = self.root
        lines = [
            f"ClusterName={CLUSTER_NAME}",
            f"SlurmctldHost={host}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"SlurmctldPort={ctld_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={r / 'munge' / 'munge.socket'}",
            f"StateSaveLocation={r / 'ctld'}",
            f"SlurmdSpoolDir={r / 'spool'}/%n",
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run'}/slurmd.%n.pid",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log'}/slurmd.%n.log",
            "MailProg=/bin/true",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"PlugStackConfig={self.etc / 'plugstack.conf'}",
            "JobSubmitPlugins=lua",
            f"Epilog={self.etc / 'qrmi-epilog.sh'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            *self._accounting_lines(),
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=bf_interval=1,sched_interval=1",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "KillWait=2",
            "MinJobAge=300",
            "InactiveLimit=0",
            f"SlurmdTimeout={SLURMD_TIMEOUT}",
            f"BatchStartTimeout={BATCH_START_TIMEOUT}",
            f"MessageTimeout={MESSAGE_TIMEOUT}",
            "Waittime=0",
            "OverTimeLimit=0",
            licenses_line,
        ]
        for name, port in zip(self.nodes, node_ports, strict=True):
            lines.append(
                f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} "
                "CPUs=2 RealMemory=1000 State=UNKNOWN"
            )
        lines.append(
            f"PartitionName=debug Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE "
            "State=UP"
        )
        return "\n".join(line for line in lines if line) + "\n"

    def _accounting_lines(self) -> list[str]:
        """slurm.conf's accounting: none, or slurmdbd with every QPU's license as a TRES."""
        from qrmi.slurm import admin

        if not self.accounting:
            return ["AccountingStorageType=accounting_storage/none"]
        self.ports["slurmdbd"], self.ports["mariadb"] = _free_ports(2)
        return [
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=127.0.0.1",
            f"AccountingStoragePort={self.ports['slurmdbd']}",
            # with auth/munge, the munged that signs requests to slurmdbd (AuthInfo is not used)
            f"AccountingStoragePass={self.root / 'munge' / 'munge.socket'}",
            admin.render_accounting_tres(self.qpu_names()),
            "AccountingStorageEnforce=associations",  # jobs run only in a known account
        ]

    def _slurmdbd_conf(self) -> str:
        r = self.root
        password = secrets.token_hex(16)
        (r / "mysql").mkdir(exist_ok=True)
        (r / "mysql" / "password").write_text(password)
        (r / "mysql" / "password").chmod(0o600)
        lines = [
            "AuthType=auth/munge",
            f"AuthInfo=socket={r / 'munge' / 'munge.socket'}",
            "DbdHost=localhost",
            "DbdAddr=127.0.0.1",
            f"DbdPort={self.ports['slurmdbd']}",
            "SlurmUser=root",
            "DebugLevel=info",
            f"LogFile={r / 'log' / 'slurmdbd.log'}",
            f"PidFile={r / 'run' / 'slurmdbd.pid'}",
            "StorageType=accounting_storage/mysql",
            "StorageHost=127.0.0.1",
            f"StoragePort={self.ports['mariadb']}",
            f"StorageUser={DB_USER}",
            f"StoragePass={password}",
            f"StorageLoc={DB_NAME}",
        ]
        return "\n".join(lines) + "\n"

    # ----- daemons -----------------------------------------------------------------------------

    def _start_munged(self) -> None:
        munge = self.root / "munge"
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        result = _run(
            [
                "munged",
                f"--socket={munge / 'munge.socket'}",
                f"--key-file={key}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ]
        )
        if result.returncode != 0:
            raise ClusterUnavailable(f"munged did not start: {result.stderr.strip()}")
        self.pids["munged"] = int((munge / "munged.pid").read_text())

    def _start_accounting(self) -> None:
        """MariaDB, then slurmdbd, then the cluster, its accounts and their users."""
        self._start_mariadb()
        self._start_daemon(
            "slurmdbd", ["slurmdbd"], "slurmdbd.pid", {**self.env, "PATH": DAEMON_PATH}
        )
        _wait_until(
            lambda: self.run(["sacctmgr", "-n", "list", "cluster"]).returncode == 0,
            120,
            "slurmdbd to answer sacctmgr",
        )
        self.sacctmgr("add", "cluster", CLUSTER_NAME)
        for account, users in self.accounts.items():
            self.sacctmgr("add", "account", account, f"Cluster={CLUSTER_NAME}")
            for user in users:
                self.sacctmgr("add", "user", user, f"Account={account}", f"Cluster={CLUSTER_NAME}")
        for user in self.users:  # each user's first account is its default
            first = next(a for a, users in self.accounts.items() if user in users)
            self.sacctmgr("modify", "user", user, "set", f"DefaultAccount={first}")

    def sacctmgr(self, *args: str) -> str:
        """Run ``sacctmgr -i`` (no confirmation) as root; its output.

        Raises:
            ClusterUnavailable: sacctmgr failed (its message is in the exception).
        """
        result = self.run(["sacctmgr", "-i", *args])
        if result.returncode != 0:
            raise ClusterUnavailable(
                f"sacctmgr {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    def _start_mariadb(self) -> None:
        """A MariaDB server of its own: fresh data dir, 127.0.0.1 and a unix socket only."""
        home = self.root / "mysql"
        data = home / "data"
        data.mkdir(parents=True, exist_ok=True)
        mysql = pwd.getpwnam("mysql")
        for path in (home, data):
            os.chown(path, mysql.pw_uid, mysql.pw_gid)
        install = _run(
            [
                "mariadb-install-db",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={data}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ]
        )
        if install.returncode != 0:
            raise ClusterUnavailable(f"mariadb-install-db failed: {install.stderr[-500:]}")
        log = (self.root / "log" / "mariadb.log").open("ab")
        self.processes["mariadb"] = subprocess.Popen(
            [
                _which("mariadbd") or "mariadbd",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={data}",
                f"--socket={self.mysql_socket}",
                f"--port={self.ports['mariadb']}",
                "--bind-address=127.0.0.1",
                f"--pid-file={home / 'mariadb.pid'}",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--performance-schema=OFF",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.pids["mariadb"] = self.processes["mariadb"].pid
        _wait_until(lambda: self._sql("SELECT 1").returncode == 0, 120, "MariaDB to answer")
        password = (home / "password").read_text()
        created = self._sql(
            f"CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
            f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'127.0.0.1';"
        )
        if created.returncode != 0:
            raise ClusterUnavailable(f"cannot create the slurm database user: {created.stderr}")

    def _sql(self, statement: str) -> subprocess.CompletedProcess[str]:
        if self.processes["mariadb"].poll() is not None:
            log = (self.root / "log" / "mariadb.log").read_text(errors="replace")
            raise ClusterUnavailable(f"mariadbd exited: {log[-1000:]}")
        return _run(
            [
                "mariadb",
                "--no-defaults",
                f"--socket={self.mysql_socket}",
                "-uroot",
                "-e",
                statement,
            ],
            timeout=30,
        )

    def _start_slurm(self) -> None:
        conf = str(self.slurm_conf)
        daemon_env = {**self.env, "PATH": DAEMON_PATH}
        self._start_daemon("slurmctld", ["slurmctld", "-f", conf], "slurmctld.pid", daemon_env)
        _wait_until(
            lambda: self.run(["scontrol", "ping"]).stdout.count("UP") > 0,
            20,
            "slurmctld to answer scontrol ping",
        )
        for node in self.nodes:
            self.start_node(node, wait=False)
        _wait_until(self._all_idle, 30, f"nodes {', '.join(self.nodes)} to become idle")

    def start_node(self, node: str, *, wait: bool = True) -> None:
        """Start (or restart) the slurmd of ``node``."""
        (self.root / "run" / f"slurmd.{node}.pid").unlink(missing_ok=True)
        env = {**self.env, "PATH": DAEMON_PATH}
        args = ["slurmd", "-f", str(self.slurm_conf), "-N", node]
        self._start_daemon(node, args, f"slurmd.{node}.pid", env)
        if wait:
            _wait_until(
                lambda: (
                    node
                    in self.run(
                        ["sinfo", "-h", "-N", "-t", "idle,mix,alloc", "-o", "%N"]
                    ).stdout.split()
                ),
                120,
                f"node {node} to answer",
            )

    @property
    def lost_batch_grace(self) -> int:
        """Seconds a batch job must go unseen before a registering node can report it lost."""
        return BATCH_START_TIMEOUT + MESSAGE_TIMEOUT

    def kill_node(self, node: str) -> None:
        """SIGKILL the slurmd of ``node``, as if the machine had died (its jobs' step daemons
        are separate processes: kill those too to complete the picture)."""
        os.kill(self.pids.pop(node), 9)

    def _start_daemon(
        self, name: str, args: list[str], pidfile: str, env: Mapping[str, str]
    ) -> None:
        result = _run(args, env=env)
        if result.returncode != 0:
            raise ClusterUnavailable(f"{args[0]} did not start: {result.stderr.strip()}")
        path = self.root / "run" / pidfile
        _wait_until(lambda: path.exists() and path.read_text().strip().isdigit(), 10, f"{path}")
        self.pids[name] = int(path.read_text().strip())

    def _all_idle(self) -> bool:
        states = self.run(["sinfo", "-h", "-N", "-o", "%t"]).stdout.split()
        return len(states) == len(self.nodes) and all(s == "idle" for s in states)

    # ----- running commands ----------------------------------------------------------------------

    def run(self, args: Sequence[str], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a client command as root against this cluster."""
        return _run(args, env=self.env, timeout=timeout)

    def as_user(
        self,
        args: Sequence[str],
        *,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command as an unprivileged job user (default: the test user), in its
        :meth:`work_of` directory."""
        user = user or self.user
        work = self.work_of(user)
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        command = [
            "runuser",
            "-u",
            user,
            "--",
            "env",
            f"SLURM_CONF={self.slurm_conf}",
            *extra,
            *args,
        ]
        return _run(
            command,
            cwd=str(work) if work.exists() else "/",
            timeout=timeout,
            env={k: v for k, v in self.env.items() if k in ("PATH", "LANG", "HOME")},
        )

    def sbatch(
        self, *args: str, env: Mapping[str, str] | None = None, user: str | None = None
    ) -> int:
        """Submit as the test user (or ``user``) and return the job id.

        Raises:
            RuntimeError: sbatch refused the job (its stderr is in the message).
        """
        result = self.as_user(["sbatch", "--parsable", *args], env=env, user=user)
        if result.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} failed: {result.stderr.strip()}")
        return int(result.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job`` as a dict (empty when the job is gone)."""
        result = self.run(["scontrol", "-o", "show", "job", str(job_id)])
        fields: dict[str, str] = {}
        for item in result.stdout.split():
            key, _, value = item.partition("=")
            fields.setdefault(key, value)
        return fields

    def wait_state(self, job_id: int, states: Sequence[str], timeout: float = 60) -> str:
        """Wait until the job's JobState is one of ``states``; return it.

        Raises:
            TimeoutError: the deadline passed first (the last state is in the message).
        """
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.job(job_id).get("JobState", "")
            if state in states:
                return state
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} is {state or 'unknown'}, not {'/'.join(states)}")

    def wait_done(self, job_id: int, timeout: float = 60) -> str:
        """Wait for a final state and for the job's epilog (no node COMPLETING)."""
        final = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
        state = self.wait_state(job_id, final, timeout)
        _wait_until(
            lambda: (
                "COMPLETING" not in self.job(job_id).get("JobState", "")
                and "comp" not in self.run(["sinfo", "-h", "-o", "%t"]).stdout
            ),
            timeout,
            f"job {job_id}'s epilog",
        )
        return state

    def output(self, job_id: int, user: str | None = None) -> str:
        """The job's ``slurm-<id>.out`` in the work dir of ``user`` ('' when missing)."""
        path = self.work_of(user or self.user) / f"slurm-{job_id}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self, name: str) -> str:
        """A daemon log: ``slurmctld``, ``slurmdbd``, ``mariadb`` or a node name."""
        file = (
            f"{name}.log" if name in ("slurmctld", "slurmdbd", "mariadb") else f"slurmd.{name}.log"
        )
        path = self.root / "log" / file
        return path.read_text(errors="replace") if path.exists() else ""


def _which(program: str) -> str | None:
    return shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _owner(proc: Path) -> int | None:
    try:
        return proc.stat().st_uid
    except OSError:
        return None


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _ensure_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    result = _run(["useradd", "--no-create-home", "--shell", "/bin/sh", user])
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise ClusterUnavailable(f"cannot create user {user}: {result.stderr.strip()}")
    grp.getgrnam(user)  # useradd made the user's group too


def _link_tree(source: Path, target: Path) -> None:
    """Copy a tree with hard links (fast, same file system), falling back to copies."""
    result = _run(["cp", "-al", f"{source}/.", str(target)])
    if result.returncode != 0:
        shutil.copytree(source, target, dirs_exist_ok=True, symlinks=True)


def _make_world_readable(path: Path, skip: Sequence[Path] = ()) -> None:
    if not path.exists():
        return
    for item in [path, *path.rglob("*")]:
        if item in skip or item.is_symlink():
            continue
        mode = item.stat().st_mode
        item.chmod(mode | (0o555 if item.is_dir() else 0o444))
