"""pyqrmi's public Python surface against the reference wheel's (PyPI ``qrmi`` 0.26.4).

``tests/reference_surface/dump_surface.py`` describes a ``qrmi`` package as JSON: modules,
public names, kinds, call signatures, class members, enum members with their ``str``/``repr``,
exception bases. It runs once in the reference's environment (``benchmarks/.venv-ref``,
created from PyPI when missing, as the benchmarks do) and once in ours, asking ours for every
module and name the reference has. Every difference is listed; the test fails on a difference
that would break a program written for the reference unless ``allowed_differences.toml``
documents it as a choice, and on an entry of that file that no longer matches anything.
Additions (names, optional parameters, more exception bases) are listed but allowed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent / "reference_surface"
DUMP = HERE / "dump_surface.py"
ALLOWED = HERE / "allowed_differences.toml"
POSITIONAL = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")
KEYWORD = ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY")
VARIADIC = ("VAR_POSITIONAL", "VAR_KEYWORD")


@dataclass
class Differences:
    """Differences found, as ``"<dotted path>: <what>"`` lines."""

    breaking: list[str] = field(default_factory=list)
    additions: list[str] = field(default_factory=list)


# ----- running the dumps ----------------------------------------------------------------------


def reference_python() -> Path:
    """The reference's interpreter; the benchmarks' helper creates its venv if needed."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(REPO / 'benchmarks')!r})\n"
        "import _common\n"
        "ref = _common.setup_reference(lambda m: print(m, file=sys.stderr))\n"
        "print(json.dumps({'python': str(ref.python or ''), 'reason': ref.reason}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=1700, check=True
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if not found["python"]:
        if "could not install" in found["reason"]:
            pytest.skip(f"the reference wheel is not available: {found['reason']}")
        pytest.fail(f"the reference environment is broken: {found['reason']}")
    return Path(found["python"])


def dump(python: Path, workdir: Path, want: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Run the dump script with ``python`` outside the repository (so that only the installed
    ``qrmi`` of that environment is seen)."""
    command = [str(python), str(DUMP)]
    if want is not None:
        wanted = workdir / "want.json"
        wanted.write_text(json.dumps(want))
        command += ["--want", str(wanted)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=workdir, env=env
    )
    assert done.returncode == 0, f"{python} {DUMP.name} failed:\n{done.stderr[-3000:]}"
    modules: dict[str, Any] = json.loads(done.stdout)["modules"]
    return modules


# ----- comparing ------------------------------------------------------------------------------


def compare_surfaces(reference: dict[str, Any], ours: dict[str, Any]) -> Differences:
    found = Differences()
    for module, ref_module in sorted(reference.items()):
        our_module = ours.get(module, {"how": "missing", "names": {}})
        if our_module["how"] != "import":
            found.breaking.append(
                f"{module}: module cannot be imported ({our_module.get('error')})"
            )
            continue
        for name, ref_entry in sorted(ref_module["names"].items()):
            path = f"{module}.{name}"
            if name not in our_module["names"]:
                found.breaking.append(f"{path}: missing")
            else:
                compare_entry(path, ref_entry, our_module["names"][name], found)
        for name in sorted(set(our_module["names"]) - set(ref_module["names"])):
            found.additions.append(f"{module}.{name}: added")
    return found


def compare_entry(path: str, ref: dict[str, Any], ours: dict[str, Any], found: Differences) -> None:
    ref_kind, our_kind = ref.get("kind"), ours.get("kind")
    if ref_kind in ("imported", "alias") or our_kind == "unavailable":
        return  # the reference's source only re-binds a name; presence is what counts
    if kind_group(ref_kind) != kind_group(our_kind):
        found.breaking.append(f"{path}: is a {our_kind}, the reference's is a {ref_kind}")
        return
    compare_signatures(path, ref.get("signature"), ours.get("signature"), found)
    values = (ref.get("value"), ours.get("value"))
    if ref_kind == "constant" and NON_LITERAL not in values and values[0] != values[1]:
        found.breaking.append(f"{path}: value {values[1]}, reference {values[0]}")
    if "bases" in ref:
        for base in sorted(set(ref["bases"]) - set(ours.get("bases", []))):
            found.breaking.append(f"{path}: does not derive from {base}")
    compare_members(path, ref.get("members") or {}, ours.get("members") or {}, found)
    compare_attributes(path, ref.get("attributes") or {}, ours.get("attributes") or {}, found)


NON_LITERAL = "<non-literal>"


def kind_group(kind: str | None) -> str:
    if kind in ("class", "enum", "exception"):
        return "class"
    if kind in ("property", "attribute"):
        return "data"
    if kind in ("method", "function", "staticmethod", "classmethod"):
        return "callable"
    return str(kind)


def compare_members(
    path: str, ref: dict[str, Any], ours: dict[str, Any], found: Differences
) -> None:
    for name, member in sorted(ref.items()):
        mine = ours.get(name)
        if mine is None:
            found.breaking.append(f"{path}.{name}: enum member missing")
            continue
        for aspect in ("str", "repr", "int"):
            if member[aspect] != mine[aspect]:
                found.breaking.append(
                    f"{path}.{name}: {aspect} is {mine[aspect]!r}, reference {member[aspect]!r}"
                )


def compare_attributes(
    path: str, ref: dict[str, Any], ours: dict[str, Any], found: Differences
) -> None:
    for name, attribute in sorted(ref.items()):
        if name not in ours:
            found.breaking.append(f"{path}.{name}: missing")
        else:
            compare_entry(f"{path}.{name}", attribute, ours[name], found)
    for name in sorted(set(ours) - set(ref)):
        found.additions.append(f"{path}.{name}: added")


def compare_signatures(
    path: str, ref: list[list[str]] | None, ours: list[list[str]] | None, found: Differences
) -> None:
    """Would every call that works on the reference work here?"""
    if ref is None or ours is None:
        return  # not visible on one side (compiled, not constructible, or inherited)
    where = f"{path}({', '.join(p[0] for p in ref)})"
    mine = {p[0]: p for p in ours}
    kinds = {p[1] for p in ours}
    ref_positional = [p for p in ref if p[1] in POSITIONAL]
    our_positional = [p for p in ours if p[1] in POSITIONAL]
    for index, (name, _, _) in enumerate(ref_positional):
        if index >= len(our_positional) and "VAR_POSITIONAL" not in kinds:
            found.breaking.append(f"{where}: takes no positional argument {index + 1} ({name})")
        elif index < len(our_positional) and our_positional[index][0] != name:
            found.breaking.append(
                f"{where}: positional argument {index + 1} is {our_positional[index][0]!r}, "
                f"the reference's is {name!r}"
            )
    for name, kind, default in ref:
        compare_parameter(where, name, kind, default, mine.get(name), kinds, found)
    for name, kind, default in ours:
        if name not in {p[0] for p in ref} and kind not in VARIADIC:
            bucket = found.additions if default else found.breaking
            bucket.append(
                f"{where}: {'optional' if default else 'required'} parameter {name} added"
            )


def compare_parameter(
    where: str,
    name: str,
    kind: str,
    default: str,
    mine: list[str] | None,
    our_kinds: set[str],
    found: Differences,
) -> None:
    if kind in VARIADIC:
        if kind not in our_kinds:
            found.breaking.append(
                f"{where}: does not take {'*args' if kind == 'VAR_POSITIONAL' else '**kwargs'}"
            )
        return
    if mine is None:
        if kind in KEYWORD and "VAR_KEYWORD" not in our_kinds:
            found.breaking.append(f"{where}: parameter {name} missing")
        return
    if kind in KEYWORD and mine[1] not in KEYWORD:
        found.breaking.append(f"{where}: {name} cannot be passed by keyword here")
    if default and not mine[2]:
        found.breaking.append(f"{where}: {name} is required here, optional in the reference")
    elif default and NON_LITERAL not in (default, mine[2]) and default != mine[2]:
        found.breaking.append(
            f"{where}: {name} defaults to {mine[2]}, the reference's to {default}"
        )


# ----- the allow-list -------------------------------------------------------------------------


def allowed_differences() -> list[dict[str, str]]:
    entries: list[dict[str, str]] = tomllib.loads(ALLOWED.read_text(encoding="utf-8"))["difference"]
    for entry in entries:
        assert entry.get("match") and entry.get("reason"), (
            f"{ALLOWED.name}: {entry} needs match and reason"
        )
    return entries


def report(found: Differences, unexplained: list[str], stale: list[str]) -> str:
    lines = ["Differences that would break a program written for the reference:"]
    lines += [
        f"  {'UNEXPLAINED ' if d in unexplained else 'allowed     '}{d}" for d in found.breaking
    ]
    lines += ["Additions (allowed):", *(f"  {d}" for d in found.additions)]
    if stale:
        lines += [f"Entries of {ALLOWED.name} that match nothing (remove them):"]
        lines += [f"  {s}" for s in stale]
    return "\n".join(lines)


# ----- the test -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_public_surface_matches_the_reference(tmp_path: Path) -> None:
    reference = dump(reference_python(), tmp_path)
    want = {module: sorted(entry["names"]) for module, entry in reference.items()}
    ours = dump(Path(sys.executable), tmp_path, want)

    found = compare_surfaces(reference, ours)
    allowed = allowed_differences()
    unexplained = [
        d for d in found.breaking if not any(fnmatch.fnmatchcase(d, a["match"]) for a in allowed)
    ]
    stale = [
        a["match"]
        for a in allowed
        if not any(fnmatch.fnmatchcase(d, a["match"]) for d in found.breaking)
    ]
    text = report(found, unexplained, stale)
    print(text)
    assert not unexplained and not stale, text


# ----- the comparison itself (no reference environment needed) --------------------------------


def surface(**names: Any) -> dict[str, Any]:
    return {"qrmi": {"how": "import", "names": names}}


def enum_entry(text: str) -> dict[str, Any]:
    members = {"Online": {"str": text, "repr": text, "int": 0}}
    return {"kind": "enum", "signature": None, "members": members, "attributes": {}}


def function(*params: list[str]) -> dict[str, Any]:
    return {"kind": "function", "signature": list(params)}


def test_an_enum_printing_differently_is_a_breaking_difference() -> None:
    found = compare_surfaces(
        surface(ResourceStatusCode=enum_entry("ResourceStatusCode.Online")),
        surface(ResourceStatusCode=enum_entry("0")),
    )
    assert found.breaking == [
        "qrmi.ResourceStatusCode.Online: str is '0', reference 'ResourceStatusCode.Online'",
        "qrmi.ResourceStatusCode.Online: repr is '0', reference 'ResourceStatusCode.Online'",
    ]


def test_optional_parameters_and_new_names_are_additions() -> None:
    ref = surface(run=function(["name", "POSITIONAL_OR_KEYWORD", ""]))
    ours = surface(
        run=function(["name", "POSITIONAL_OR_KEYWORD", ""], ["argv", "KEYWORD_ONLY", "None"]),
        extra=function(),
    )
    found = compare_surfaces(ref, ours)
    assert found.breaking == []
    assert found.additions == ["qrmi.run(name): optional parameter argv added", "qrmi.extra: added"]


def test_a_missing_name_a_required_parameter_and_a_lost_default_break() -> None:
    ref = surface(
        gone=function(),
        f=function(["a", "POSITIONAL_OR_KEYWORD", ""], ["shots", "POSITIONAL_OR_KEYWORD", "1024"]),
    )
    ours = surface(
        f=function(
            ["a", "POSITIONAL_OR_KEYWORD", ""],
            ["shots", "POSITIONAL_OR_KEYWORD", ""],
            ["b", "KEYWORD_ONLY", ""],
        )
    )
    assert compare_surfaces(ref, ours).breaking == [
        "qrmi.f(a, shots): shots is required here, optional in the reference",
        "qrmi.f(a, shots): required parameter b added",
        "qrmi.gone: missing",
    ]
