"""What the benchmarks share: paths, the reference's virtual environment, the fake server,
client drivers in subprocesses, the run context and the shape of a result.

A benchmark module exposes ``NAME``, ``TITLE`` and ``run(ctx) -> dict`` (see :func:`result`)
and a ``main()`` that runs it alone and prints its JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _stats import ratio, summarize

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUR_PYTHON = Path(sys.executable)
REF_VENV = HERE / ".venv-ref"
REF_PYTHON = REF_VENV / "bin" / "python"
REF_REQUIREMENT = "qrmi[ibm]==0.26.4"
REF_VERSION = "0.26.4"
DRIVER = HERE / "_driver.py"
FAKE_BACKEND = "ibm_perth"
OURS = "pyqrmi"
REFERENCE = "reference"
VERSIONED_PACKAGES = ("qiskit", "qiskit-aer", "qiskit-ibm-runtime", "httpx", "numpy")


@dataclass
class Reference:
    """The reference implementation's interpreter, or why there is none."""

    python: Path | None
    reason: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def available(self) -> bool:
        return self.python is not None


@dataclass
class Context:
    """What every benchmark gets: the mode, the reference, a scratch directory, a logger."""

    quick: bool
    reference: Reference
    workdir: Path
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


# ----- the reference's virtual environment --------------------------------------------------


def reference_versions(python: Path) -> dict[str, str]:
    """Versions of ``qrmi`` and its Qiskit stack in the environment of ``python``."""
    code = (
        "import json, importlib.metadata as m\n"
        "def v(d):\n"
        "    try: return m.version(d)\n"
        "    except m.PackageNotFoundError: return 'absent'\n"
        "print(json.dumps({d: v(d) for d in ['qrmi', 'qiskit', 'qiskit-ibm-runtime']}))\n"
    )
    done = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    versions: dict[str, str] = json.loads(done.stdout)
    return versions


def find_reference() -> Reference:
    """The existing ``benchmarks/.venv-ref``, if it holds the reference at the right version."""
    if not REF_PYTHON.exists():
        return Reference(None, f"{shown(REF_VENV)} does not exist")
    try:
        versions = reference_versions(REF_PYTHON)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return Reference(None, f"{REF_PYTHON} does not run: {exc}")
    if versions.get("qrmi") != REF_VERSION:
        return Reference(
            None, f"{REF_VENV.name} has qrmi {versions.get('qrmi')}, not {REF_VERSION}"
        )
    return Reference(REF_PYTHON, versions=versions)


def setup_reference(log: Callable[[str], None]) -> Reference:
    """Find the reference, or create ``benchmarks/.venv-ref`` with it from PyPI.

    When PyPI is unreachable the reference is reported missing with the reason; the
    benchmarks then run without their reference columns.
    """
    found = find_reference()
    if found.available:
        return found
    log(f"reference: {found.reason}; installing {REF_REQUIREMENT} into {REF_VENV}")
    try:
        _create_reference_venv()
    except (OSError, subprocess.SubprocessError) as exc:
        return Reference(
            None, f"could not install {REF_REQUIREMENT} (is PyPI reachable?): {_why(exc)}"
        )
    return find_reference()


def _create_reference_venv() -> None:
    base_python = getattr(sys, "_base_executable", sys.executable)
    uv = shutil.which("uv") or next(
        (str(p) for p in (REPO / ".venv/bin/uv", Path("/root/.pyenv/shims/uv")) if p.exists()),
        None,
    )
    if uv:
        if not REF_PYTHON.exists():
            _run([uv, "venv", "-q", "--python", base_python, str(REF_VENV)])
        _run([uv, "pip", "install", "-q", "--python", str(REF_PYTHON), REF_REQUIREMENT])
        return
    if not REF_PYTHON.exists():
        _run([base_python, "-m", "venv", str(REF_VENV)])
    _run([str(REF_PYTHON), "-m", "pip", "install", "-q", REF_REQUIREMENT])


def _why(exc: BaseException) -> str:
    """The last line a failed installer printed, or the exception."""
    stderr = getattr(exc, "stderr", None)
    lines = stderr.strip().splitlines() if isinstance(stderr, str) else []
    return lines[-1].strip() if lines else str(exc)


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=1800)


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (for messages and the report)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# ----- machine and versions -----------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """CPU, cores, kernel, Python, memory and load: what a reader needs to weigh the numbers."""
    return {
        "cpu_model": _cpuinfo_field("model name") or platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "memory_gib": _memory_gib(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def our_versions() -> dict[str, str]:
    """Versions of pyqrmi and its main dependencies in this environment."""
    from importlib import metadata

    versions = {"pyqrmi": metadata.version("pyqrmi")}
    for dist in VERSIONED_PACKAGES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "absent"
    versions["git_commit"] = _git_commit()
    return versions


def _cpuinfo_field(name: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    return ""


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.system()


def _memory_gib() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()


# ----- the fake IBM Quantum System server ---------------------------------------------------


@contextlib.contextmanager
def ibm_fake(ctx: Context, *, lanes: int = 2, **options: Any) -> Iterator[tuple[Any, Path]]:
    """Start the IBM Quantum System fake (API + IAM + S3) on 127.0.0.1; yields it with the
    driver spec file that points clients at it. The fake is stopped on exit.

    The bucket is :class:`qrmi.testing.s3_light.LightS3` (``light_s3``), not moto: moto costs
    a few milliseconds of CPU per request, so the fake's store, not the clients, would set the
    pace of the throughput and time-to-result runs. ``options`` are more of
    :class:`~qrmi.testing.ibm_quantum_system.QuantumSystemFake`'s keyword arguments."""
    from qrmi.testing.ibm_quantum_system import QuantumSystemFake

    fake = QuantumSystemFake(
        devices={FAKE_BACKEND: "fake_perth"}, lanes=lanes, light_s3=True, **options
    ).start()
    try:
        spec = ctx.scratch("fake") / f"spec-{fake.port}.json"
        spec.write_text(json.dumps({"name": FAKE_BACKEND, "settings": fake.settings}))
        yield fake, spec
    finally:
        fake.stop()


@contextlib.contextmanager
def ibm_fake_process(ctx: Context, *, lanes: int) -> Iterator[tuple[Any, Path]]:
    """The IBM Quantum System fake in a process of its own, set for load: yields it (a
    :class:`qrmi.testing.ibm_quantum_system.QuantumSystemFakeProcess`, whose
    ``cpu_seconds()`` is the fake's CPU) with the driver spec file; stopped on exit.

    Its own process: its CPU is measured apart from the runner's and its GIL is its own, and
    Aer's OpenMP threads sleep instead of spinning (about 14 ms of CPU per Bell job otherwise).
    The API and the bucket use httptools, the bucket is ``LightS3`` and the jobs reach it in
    memory (``direct_store``), and a job with the same input as an earlier one reuses its result
    (``reuse_results``) instead of simulating again: the throughput run is about the clients,
    not Aer (the fake's CPU per task is reported)."""
    from qrmi.testing.ibm_quantum_system import QuantumSystemFakeProcess

    fake = QuantumSystemFakeProcess(
        devices={FAKE_BACKEND: "fake_perth"},
        lanes=lanes,
        light_s3=True,
        http="httptools",
        reuse_results=True,
        direct_store=True,
    ).start()
    try:
        spec = ctx.scratch("fake") / f"spec-{fake.pid}.json"
        spec.write_text(json.dumps({"name": FAKE_BACKEND, "settings": fake.settings}))
        yield fake, spec
    finally:
        fake.stop()


# ----- client drivers -----------------------------------------------------------------------


class DriverError(RuntimeError):
    """A client driver failed, answered an error or did not answer in time."""


class Driver:
    """One client process (``_driver.py``) under a given Python, spoken to in JSON lines."""

    def __init__(self, label: str, python: Path, spec: Path, log_dir: Path) -> None:
        self.label = label
        self.stderr_path = log_dir / f"driver-{label}-{int(time.time() * 1000)}.log"
        self._stderr = self.stderr_path.open("w")
        self._process = subprocess.Popen(
            [str(python), str(DRIVER), str(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=str(HERE),
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, name=f"driver-{label}", daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put("")

    def request(self, command: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        """Send ``command``; its answer (raises DriverError on error, exit or timeout)."""
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(json.dumps(command) + "\n")
            self._process.stdin.flush()
            line = self._lines.get(timeout=timeout)
        except (OSError, queue.Empty) as exc:
            raise DriverError(
                f"{self.label} driver: no answer to {command['op']} ({exc!r}); {self._tail()}"
            ) from exc
        if not line:
            raise DriverError(f"{self.label} driver exited; {self._tail()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise DriverError(f"{self.label} driver, op {command['op']}: {answer['error']}")
        return answer

    def _tail(self) -> str:
        self._stderr.flush()
        lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        return "stderr: " + (" | ".join(lines[-3:]) if lines else "(empty)")

    def close(self) -> None:
        """Ask the driver to quit; kill it (this process only) if it does not."""
        with contextlib.suppress(OSError, ValueError):
            assert self._process.stdin is not None
            self._process.stdin.write('{"op": "quit"}\n')
            self._process.stdin.close()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=15)
        self._stderr.close()


@contextlib.contextmanager
def drivers(ctx: Context, spec: Path) -> Iterator[dict[str, Driver]]:
    """A driver for ours and, when available, one for the reference, against ``spec``."""
    started: dict[str, Driver] = {}
    try:
        started[OURS] = Driver(OURS, OUR_PYTHON, spec, ctx.workdir)
        if ctx.reference.python is not None:
            started[REFERENCE] = Driver(REFERENCE, ctx.reference.python, spec, ctx.workdir)
        for driver in started.values():
            driver.request({"op": "hello"}, timeout=120)
        yield started
    finally:
        for driver in started.values():
            driver.close()


# ----- results ------------------------------------------------------------------------------


def row(
    label: str,
    ours: Sequence[float],
    other: Sequence[float] | None,
    other_name: str,
    *,
    unit: str = "s",
    higher_is_better: bool = False,
    note: str = "",
) -> dict[str, Any]:
    """One table row: ours against ``other`` (same run), with the ratio ours/other."""
    return {
        "label": label,
        "unit": unit,
        "higher_is_better": higher_is_better,
        # "reference": a contest with the reference; "baseline": our cost over a floor.
        "kind": "reference" if other_name.startswith("reference qrmi") else "baseline",
        "ours": {**summarize(ours), "samples": _rounded(ours)},
        "other_name": other_name,
        "other": {**summarize(other), "samples": _rounded(other)} if other else None,
        "ratio": ratio(ours, other) if other else None,
        "note": note,
    }


def _rounded(samples: Sequence[float]) -> list[float]:
    return [float(f"{x:.6g}") for x in samples]


def result(
    name: str,
    title: str,
    *,
    method: str,
    rows: list[dict[str, Any]] | None = None,
    notes: list[str] | None = None,
    status: str = "ok",
    reason: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A benchmark's result: what was measured, how, the rows, and notes (skips, caveats)."""
    return {
        "name": name,
        "title": title,
        "status": status,
        "reason": reason,
        "method": method,
        "rows": rows or [],
        "notes": notes or [],
        **(extra or {}),
    }


def standalone(run: Callable[[Context], dict[str, Any]], argv: list[str] | None = None) -> int:
    """``main()`` of a benchmark module: run it alone and print its result as JSON."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference")
    args = parser.parse_args(argv)
    reference = Reference(None, "--no-reference") if args.no_reference else find_reference()
    with tempfile.TemporaryDirectory(prefix="qrmi-bench-") as workdir:
        ctx = Context(quick=args.quick, reference=reference, workdir=Path(workdir))
        print(json.dumps(run(ctx), indent=1))
    return 0
