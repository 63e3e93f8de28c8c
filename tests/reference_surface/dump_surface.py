"""Dump the public Python surface of the installed ``qrmi`` package as JSON (stdlib only).

Run it with the interpreter whose ``qrmi`` is to be described::

    python dump_surface.py                      # every module found in the package's files
    python dump_surface.py --modules qrmi,qrmi.pulser

For each module: its public names (``__all__`` when defined, otherwise the classes and functions
it defines or re-exports from ``qrmi`` and its UPPER_CASE constants) and, for each name, its kind,
call signature, class members, enum members (with ``str``/``repr``/``int``) and exception bases.
A module that cannot be imported because a third-party package is missing is read from its
source instead (``"how": "source"``). The reference wheel's classes are compiled (PyO3): what
Python can see of them is ``dir``, ``__text_signature__`` and the enum members.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import enum
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from typing import Any

ROOT = "qrmi"
NON_LITERAL = "<non-literal>"
EXCEPTION_ROOTS = ("RuntimeError", "ValueError", "TypeError", "LookupError", "TimeoutError")


# ----- which modules ------------------------------------------------------------------------


def package_dir() -> Path:
    spec = importlib.util.find_spec(ROOT)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{ROOT} is not installed in {sys.executable}")
    return Path(next(iter(spec.submodule_search_locations)))


def module_file(name: str) -> Path | None:
    """The source file of a module, found without importing its parent packages."""
    path = package_dir().joinpath(*name.split(".")[1:])
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def discover_modules() -> list[str]:
    """Public modules of the package, from its files (nothing is imported)."""
    base = package_dir()
    names = {ROOT}
    for path in base.rglob("*.py"):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") or p in ("tests", "testing") for p in parts):
            continue
        for depth in range(1, len(parts) + 1):  # namespace packages on the way count too
            names.add(".".join([ROOT, *parts[:depth]]))
    return sorted(names)


# ----- literal defaults ---------------------------------------------------------------------


def literal(value: Any) -> str:
    """``repr`` of a plain literal default, else a marker (compared only for presence)."""
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)
    if isinstance(value, tuple | list) and all(literal(v) != NON_LITERAL for v in value):
        return repr(tuple(value))
    return NON_LITERAL


def ast_literal(node: ast.expr) -> str:
    try:
        return literal(ast.literal_eval(node))
    except (ValueError, SyntaxError):
        return NON_LITERAL


# ----- runtime introspection -----------------------------------------------------------------


def runtime_signature(obj: Any, *, drop_first: bool) -> list[list[str]] | None:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = []
    for param in signature.parameters.values():
        default = "" if param.default is inspect.Parameter.empty else literal(param.default)
        params.append([param.name, param.kind.name, default])
    if drop_first and params and params[0][1] in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD"):
        params = params[1:]
    return params


def is_compiled_class(cls: type) -> bool:
    return cls.__module__ == "builtins" or cls.__module__.endswith("._core")


def constructor(cls: type) -> list[list[str]] | None:
    """The constructor's parameters; ``None`` when unknown or not constructible (compiled
    classes without ``__text_signature__`` cannot be built from Python)."""
    if issubclass(cls, BaseException):
        return None
    if is_compiled_class(cls):
        text = cls.__text_signature__  # type: ignore[attr-defined]
        return None if text is None else runtime_signature(cls, drop_first=False)
    if isinstance(cls, enum.EnumMeta):
        return None
    return runtime_signature(cls, drop_first=False)


def enum_members(cls: type) -> dict[str, dict[str, Any]] | None:
    if isinstance(cls, enum.EnumMeta):
        members = {m.name: m for m in cls}  # type: ignore[var-annotated]
    else:
        members = {
            n: getattr(cls, n)
            for n in dir(cls)
            if not n.startswith("_") and type(getattr(cls, n)) is cls
        }
    if not members:
        return None
    out = {}
    for name, member in members.items():
        try:
            value: Any = int(member)
        except (TypeError, ValueError):
            value = None
        out[name] = {"str": str(member), "repr": repr(member), "int": value}
    return out


def own_classes(cls: type) -> list[type]:
    """``cls`` and its bases from this package (members inherited from elsewhere are not ours
    to compare)."""
    return [
        c
        for c in cls.__mro__
        if c is not object
        and (c.__module__.startswith(ROOT) or c.__module__ == "builtins")
        and c not in vars(builtins).values()
    ]


def member(cls: type, name: str, depth: int) -> dict[str, Any]:
    raw = inspect.getattr_static(cls, name)
    if isinstance(raw, property) or type(raw).__name__ in (
        "getset_descriptor",
        "member_descriptor",
    ):
        return {"kind": "property"}
    if isinstance(raw, staticmethod):
        return {
            "kind": "staticmethod",
            "signature": runtime_signature(raw.__func__, drop_first=False),
        }
    if isinstance(raw, classmethod):
        return {
            "kind": "classmethod",
            "signature": runtime_signature(raw.__func__, drop_first=True),
        }
    if isinstance(raw, type):  # nested classes (Payload.QiskitPrimitive) one level deep
        return describe_class(raw, depth + 1) if depth == 0 else {"kind": "class"}
    if callable(raw):
        return {"kind": "method", "signature": runtime_signature(raw, drop_first=True)}
    return {"kind": "attribute"}


def describe_class(cls: type, depth: int = 0) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": "class", "signature": constructor(cls)}
    members = enum_members(cls)
    if members is not None:
        info["kind"] = "enum"
        info["members"] = members
    if issubclass(cls, BaseException):
        info["kind"] = "exception"
        info["bases"] = sorted(exception_bases(cls))
        return info
    names: set[str] = set()
    for klass in own_classes(cls):
        names |= {n for n in vars(klass) if not n.startswith("_")}
    names -= set(members or {})
    info["members"] = members or {}
    info["attributes"] = {n: member(cls, n, depth) for n in sorted(names)}
    for name in sorted(instance_fields(cls) - set(info["attributes"])):
        info["attributes"][name] = {"kind": "property"}
    return info


def instance_fields(cls: type) -> set[str]:
    """Public data attributes declared by annotation (dataclass fields and the like)."""
    out: set[str] = set()
    for klass in own_classes(cls):
        annotations = vars(klass).get("__annotations__", {})
        out |= {
            n for n, a in annotations.items() if not n.startswith("_") and "ClassVar" not in str(a)
        }
    return out


def exception_bases(cls: type) -> set[str]:
    """Builtin exception roots and package exception names ``cls`` derives from."""
    out = set()
    for base in cls.__mro__[1:]:
        if base.__name__ in EXCEPTION_ROOTS:
            out.add(base.__name__)
        elif base.__module__.startswith(ROOT):
            out.add(base.__name__.rstrip("_"))  # the reference's QrmiError is named QrmiError_
    return out


def describe(obj: Any) -> dict[str, Any]:
    if isinstance(obj, type):
        return describe_class(obj)
    if callable(obj):
        return {"kind": "function", "signature": runtime_signature(obj, drop_first=False)}
    return {"kind": "constant", "value": literal(obj)}


def public_names(module: Any) -> list[str]:
    """``__all__``, or else: classes and functions the module defines or re-exports from the
    package and the UPPER_CASE constants its source assigns. A plain module's imports of the
    top-level names (``from qrmi import QuantumResource``) are not its surface; a package's
    (``qrmi.primitives`` re-exporting ``QRMIService``) are."""
    exported = getattr(module, "__all__", None)
    if exported is not None:
        return sorted(set(exported))
    top = sys.modules[ROOT]
    constants = assigned_constants(module.__name__)
    names = []
    for name in dir(module):
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        plain_module = not hasattr(module, "__path__")
        if plain_module and getattr(top, name, None) is obj:
            continue
        if isinstance(obj, type) or inspect.isroutine(obj):
            if from_package(obj, name):
                names.append(name)
        elif name in constants:
            names.append(name)
    return names


def from_package(obj: Any, name: str) -> bool:
    origin = getattr(obj, "__module__", None) or ""
    return origin.startswith(ROOT) or (origin == "builtins" and not hasattr(builtins, name))


def assigned_constants(name: str) -> set[str]:
    """UPPER_CASE names the module's source assigns at top level."""
    path = module_file(name)
    if path is None:
        return set()
    out = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        out |= {t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper()}
    return out


def runtime_module(name: str, wanted: list[str]) -> dict[str, Any]:
    module = importlib.import_module(name)
    present = [n for n in wanted if n not in public_names(module) and hasattr_safely(module, n)]
    names = {}
    for attr in [*public_names(module), *present]:
        try:
            names[attr] = describe(getattr(module, attr))
        except ImportError as exc:  # a name resolved lazily needs an optional package
            names[attr] = {"kind": "unavailable", "error": str(exc)}
    return {"how": "import", "names": names}


def hasattr_safely(module: Any, name: str) -> bool:
    try:
        return hasattr(module, name)
    except ImportError:  # a lazily resolved name whose optional package is missing
        return True


# ----- source introspection (modules whose third-party imports are missing) ------------------


def ast_signature(args: ast.arguments, *, drop_first: bool) -> list[list[str]]:
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += list(args.defaults)
    params = []
    for index, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        kind = "POSITIONAL_ONLY" if index < len(args.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        params.append([arg.arg, kind, "" if default is None else ast_literal(default)])
    if args.vararg:
        params.append([args.vararg.arg, "VAR_POSITIONAL", ""])
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append(
            [arg.arg, "KEYWORD_ONLY", "" if kw_default is None else ast_literal(kw_default)]
        )
    if args.kwarg:
        params.append([args.kwarg.arg, "VAR_KEYWORD", ""])
    return params[1:] if drop_first and params else params


def decorators(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    return {ast.unparse(d).split(".")[-1] for d in node.decorator_list}


def ast_member(node: ast.stmt) -> tuple[str, dict[str, Any]] | None:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        marks = decorators(node)
        if "property" in marks or any(m.endswith("setter") for m in marks):
            return node.name, {"kind": "property"}
        if "staticmethod" in marks:
            return node.name, {
                "kind": "staticmethod",
                "signature": ast_signature(node.args, drop_first=False),
            }
        kind = "classmethod" if "classmethod" in marks else "method"
        return node.name, {"kind": kind, "signature": ast_signature(node.args, drop_first=True)}
    if isinstance(node, ast.ClassDef):
        return node.name, ast_class(node)
    return None


def ast_class(node: ast.ClassDef) -> dict[str, Any]:
    bases = {ast.unparse(b).split(".")[-1] for b in node.bases}
    info: dict[str, Any] = {"kind": "class", "signature": None, "members": {}, "attributes": {}}
    if any(b.endswith(("Error", "Exception")) for b in bases):
        return {"kind": "exception", "signature": None, "bases": sorted(bases)}
    for item in node.body:
        found = ast_member(item)
        if found is None:
            continue
        name, described = found
        if name == "__init__":
            info["signature"] = described["signature"]
        elif not name.startswith("_"):
            info["attributes"].setdefault(name, described)
    return info


def reexport(node: ast.ImportFrom, module: str) -> bool:
    """A relative import, one from a package submodule, or (in a package) from the top level."""
    source = node.module or ""
    is_package = module_file(module) is not None and module_file(module).name == "__init__.py"  # type: ignore[union-attr]
    return bool(node.level) or source.startswith(ROOT + ".") or (source == ROOT and is_package)


def source_module(name: str, error: str) -> dict[str, Any]:
    origin = module_file(name)
    if origin is None:
        return {"how": "missing", "error": error, "names": {}}
    defined: dict[str, dict[str, Any]] = {}
    for node in ast.parse(origin.read_text(encoding="utf-8")).body:
        defined.update(source_names(node, name))
    exported = defined.pop("__all__", None)
    names = exported["names"] if exported else [n for n in defined if not n.startswith("_")]
    return {
        "how": "source",
        "error": error,
        "names": {n: defined.get(n, {"kind": "imported"}) for n in sorted(names)},
    }


def source_names(node: ast.stmt, module: str) -> dict[str, dict[str, Any]]:
    """The names one top-level statement binds, described."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return {
            node.name: {"kind": "function", "signature": ast_signature(node.args, drop_first=False)}
        }
    found = ast_member(node)
    if found is not None:
        return {found[0]: found[1]}
    if isinstance(node, ast.ImportFrom) and reexport(node, module):
        return {alias.asname or alias.name: {"kind": "imported"} for alias in node.names}
    target, value = assignment(node)
    if target is None or value is None:
        return {}
    if target == "__all__":
        return {target: {"names": list(ast.literal_eval(value))}}
    if isinstance(value, ast.Name):
        return {target: {"kind": "alias", "of": value.id}}
    if target.isupper():
        return {target: {"kind": "constant", "value": ast_literal(value)}}
    return {}


def assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    """``NAME = value`` or ``NAME: T = value``, else ``(None, None)``."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target: ast.expr = node.targets[0]
    elif isinstance(node, ast.AnnAssign):
        target = node.target
    else:
        return None, None
    return (target.id, node.value) if isinstance(target, ast.Name) else (None, None)


# ----- main -----------------------------------------------------------------------------------


def dump(modules: list[str], wanted: dict[str, list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in modules:
        try:
            out[name] = runtime_module(name, wanted.get(name, []))
        except ModuleNotFoundError as exc:
            if exc.name and (
                exc.name == name or (exc.name.startswith(ROOT + ".") and name.startswith(exc.name))
            ):
                out[name] = {"how": "missing", "error": str(exc), "names": {}}
            else:
                out[name] = source_module(name, f"{type(exc).__name__}: {exc}")
        except ImportError as exc:
            out[name] = source_module(name, f"{type(exc).__name__}: {exc}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--want",
        help="JSON file {module: [names]}: dump these modules, and these names even when a "
        "module does not list them as public (default: discover the modules)",
    )
    args = parser.parse_args()
    wanted: dict[str, list[str]] = {}
    if args.want:
        wanted = json.loads(Path(args.want).read_text(encoding="utf-8"))
    modules = list(wanted) if wanted else discover_modules()
    surface = {"python": sys.version.split()[0], "modules": dump(modules, wanted)}
    json.dump(surface, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
