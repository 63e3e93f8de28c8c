"""docs/admin-guide.md, followed literally: its shell blocks, extracted from the document and run
in order as root, install pyqrmi, the users' environment, the shim and the Slurm files, and
``qrmi slurm check`` passes on the result.

Nothing is retyped: the only change is the one the guide invites in its section 0, the values
of its four path variables (``PREFIX=/opt/qrmi``, ...), moved under a throwaway root. Blocks
fenced as ``bash`` are run; blocks fenced as ``sh`` need a running cluster and are only checked
for what they call. ``apt-get install`` is not run (it would change this machine); the test
checks instead that every package it names is installed.

Slow (it installs pyqrmi and Qiskit twice from the package index); root only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qrmi.config import Config
from qrmi.testing.slurm_cluster import find_checkout

CHECKOUT = find_checkout()
GUIDE = CHECKOUT / "docs" / "admin-guide.md"
PATH_VARIABLES = ("PREFIX", "ETC", "PLUGINDIR", "STATE_DIR")
# Where a command may name a system path literally: everything else goes through the variables.
SYSTEM_PATHS_ALLOWED = ("/usr/bin/python3", "/dev/null")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.geteuid() != 0, reason="the guide's commands run as root"),
    pytest.mark.skipif(
        shutil.which("gcc") is None or not Path("/usr/include/slurm/spank.h").exists(),
        reason="needs gcc and libslurm-dev (scripts/install-system-deps)",
    ),
]


@dataclass(frozen=True)
class Block:
    """One fenced block of the guide."""

    language: str
    text: str
    line: int


def guide_blocks() -> list[Block]:
    """Every fenced block of the guide, in order (indented ones, inside lists, included)."""
    blocks: list[Block] = []
    lines = GUIDE.read_text().splitlines()
    fence = re.compile(r"^(\s*)```(\w*)\s*$")
    index = 0
    while index < len(lines):
        opening = fence.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, language = opening.groups()
        body: list[str] = []
        index += 1
        while not re.match(rf"^{indent}```\s*$", lines[index]):
            body.append(lines[index].removeprefix(indent))
            index += 1
        blocks.append(Block(language, "\n".join(body) + "\n", index - len(body)))
        index += 1
    return blocks


def with_root(block: Block, root: Path) -> str:
    """The variables block with each value moved under ``root`` (the guide's section 0)."""
    text = block.text
    for name in PATH_VARIABLES:
        text, count = re.subn(rf"(?m)^{name}=(/\S*)", rf"{name}={root}\1", text)
        assert count == 1, f"the guide's section 0 must define {name}=/... once"
    return text


def installed(package: str) -> bool:
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return "install ok installed" in status.stdout


@dataclass
class Followed:
    """The throwaway root, the four paths and what the guide's commands printed."""

    root: Path
    output: str

    def under_root(self, default: str) -> Path:
        """Where the guide's default path (section 0) went in this run."""
        return self.root / default.lstrip("/")

    @property
    def prefix(self) -> Path:
        return self.under_root("/opt/qrmi")

    @property
    def etc(self) -> Path:
        return self.under_root("/etc/slurm")

    @property
    def plugindir(self) -> Path:
        return self.under_root("/usr/local/lib/slurm")


def script_of(blocks: list[Block], root: Path) -> str:
    """The ``bash`` blocks as one script, with section 0 moved under ``root``."""
    bash = [b for b in blocks if b.language == "bash"]
    assert re.match(r"^PREFIX=", bash[0].text), "the first bash block is section 0's variables"
    parts = ["set -euo pipefail", with_root(bash[0], root)]
    for block in bash[1:]:
        parts.append(f"echo '### guide block at line {block.line}'")
        parts.append(without_apt(block.text))
    return "\n".join(parts)


def without_apt(text: str) -> str:
    """The block without its ``apt-get install`` line, whose packages must be installed."""
    kept = []
    for line in text.splitlines():
        if line.startswith("apt-get install"):
            packages = [w for w in line.split()[2:] if not w.startswith("-")]
            missing = [p for p in packages if not installed(p)]
            assert not missing, f"the guide's apt-get line names {missing}, not installed here"
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


@pytest.fixture(scope="module")
def followed() -> Iterator[Followed]:
    """Run the guide once; every test below checks one of its results."""
    root = Path(tempfile.mkdtemp(prefix="qrmi-guide-"))
    root.chmod(0o755)  # the users' side (nobody) must reach the venv
    try:
        tree = root / "pyqrmi-src"
        copy_source_tree(tree)
        etc = root / "etc" / "slurm"
        etc.mkdir(parents=True)
        # The guide starts from a working Slurm: its slurm.conf exists already.
        (etc / "slurm.conf").write_text("ClusterName=guide\nSlurmctldHost=localhost\n")
        home = root / "home"
        home.mkdir()
        script = root / "guide.sh"
        script.write_text(script_of(guide_blocks(), root))
        env = {
            **os.environ,
            "HOME": str(home),
            "PIP_CACHE_DIR": os.path.expanduser("~/.cache/pip"),
        }
        env.pop("VIRTUAL_ENV", None)
        result = subprocess.run(
            ["bash", str(script)],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=1700,
            check=False,
        )
        assert result.returncode == 0, (
            f"the guide's commands failed (exit {result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
        yield Followed(root, result.stdout)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def copy_source_tree(destination: Path) -> None:
    """The files of the checkout (as they are in the working tree), as an admin would get them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=CHECKOUT, capture_output=True, check=True
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = CHECKOUT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


# ----- what can be checked without running anything --------------------------------------


def test_no_command_touches_the_system_outside_the_guides_variables() -> None:
    bash = [b for b in guide_blocks() if b.language == "bash"]
    for block in bash[1:]:
        for line in block.text.splitlines():
            if line.startswith("apt-get install"):
                continue
            code = line.split("#", 1)[0]
            for path in re.findall(
                r"(?<![\w$}/.-])(/(?:etc|opt|var|usr|srv|root)\b[\w./-]*)", code
            ):
                assert path in SYSTEM_PATHS_ALLOWED, (
                    f"line {block.line} of the guide names {path} literally; use the variables "
                    f"of section 0: {line}"
                )


def test_the_cluster_only_blocks_call_only_job_commands() -> None:
    for block in guide_blocks():
        if block.language == "sh":
            for line in filter(None, (x.split("#", 1)[0].strip() for x in block.text.splitlines())):
                assert line.split()[0] in ("source", "python", "sbatch", "srun", "squeue"), line


def test_the_vendor_qpu_example_is_a_valid_config_entry() -> None:
    (snippet,) = [b.text for b in guide_blocks() if b.language == "json"]
    entry = json.loads(snippet)
    config = Config.from_dict({"resources": [entry]})
    assert list(config.resource_map) == ["ibm_fez"]


def test_the_apt_line_has_what_the_build_needs() -> None:
    (line,) = [
        line
        for b in guide_blocks()
        for line in b.text.splitlines()
        if line.startswith("apt-get install")
    ]
    for package in ("make", "gcc", "libc6-dev", "libslurm-dev", "python3-venv"):
        assert f" {package}" in line


# ----- the guide, run --------------------------------------------------------------------


def test_the_venv_imports_qrmi_for_root_and_for_users(followed: Followed) -> None:
    python = followed.prefix / "bin" / "python"
    assert os.path.realpath(python).startswith("/usr/bin/python3")
    assert "pyqrmi " in followed.output
    as_user = subprocess.run(
        ["runuser", "-u", "nobody", "--", str(python), "-I", "-c", "import qrmi.slurm.helper"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert as_user.returncode == 0, as_user.stderr
    assert list((followed.prefix / "wheels").glob("pyqrmi-*.whl"))
    fakes = subprocess.run(
        [str(python), "-c", "import qrmi.testing.ibm_quantum_system"],
        capture_output=True,
        check=False,
    )
    assert fakes.returncode == 0, "the testing extra installs what the fakes need"


def test_the_users_venv_imports_the_front_ends(followed: Followed) -> None:
    python = followed.root / "home" / "qrmi-env" / "bin" / "python"
    check = subprocess.run(
        [str(python), "-c", "import qrmi.primitives"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr


def test_the_shim_is_built_and_installed(followed: Followed) -> None:
    shim = followed.plugindir / "spank_qrmi.so"
    symbols = subprocess.run(
        ["nm", "-D", str(shim)], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    assert " slurm_spank_init\n" in symbols


def test_plugstack_is_what_the_guide_shows(followed: Followed) -> None:
    (shown,) = [b.text for b in guide_blocks() if b.language == "text" and "required" in b.text]
    expected = shown.splitlines()[1]
    for default in ("/usr/local/lib/slurm", "/etc/slurm", "/opt/qrmi", "/var/lib/qrmi-slurm"):
        expected = expected.replace(default, str(followed.root) + default)
    written = (followed.etc / "plugstack.conf.d" / "qrmi.conf").read_text()
    assert written == expected + "\n"
    assert (followed.etc / "plugstack.conf").read_text() == (
        f"include {followed.etc}/plugstack.conf.d/*.conf\n"
    )


def test_licenses_and_the_rule_data(followed: Followed) -> None:
    assert "Licenses=emulator:1" in followed.output.splitlines()
    assert '"emulator"' in (followed.etc / "qrmi_qpus.lua").read_text()
    slurm_conf = (followed.etc / "slurm.conf").read_text()
    assert "JobSubmitPlugins=lua\nLicenses=emulator:1\n" in slurm_conf
    assert f"Epilog={followed.etc}/qrmi-epilog.sh" in slurm_conf


def test_the_config_is_root_only(followed: Followed) -> None:
    info = (followed.etc / "qrmi_config.json").stat()
    assert (info.st_uid, info.st_mode & 0o777) == (0, 0o600)


def test_qrmi_slurm_check_passes_on_the_guides_setup(followed: Followed) -> None:
    qrmi = followed.prefix / "bin" / "qrmi"
    config, slurm_conf = followed.etc / "qrmi_config.json", followed.etc / "slurm.conf"
    check = subprocess.run(
        [str(qrmi), "slurm", "check", "--config", str(config), "--slurm-conf", str(slurm_conf)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert not [line for line in check.stdout.splitlines() if line.startswith(("error", "warn"))]
    assert "imports pyqrmi" in check.stdout
    assert "a job with --qpu=emulator sees" in check.stdout
