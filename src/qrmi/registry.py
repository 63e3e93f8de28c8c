"""Which backend class serves which resource type string.

Built-in backends are listed in :data:`BUILTIN_BACKENDS` as ``"module:Class"`` paths and imported
only when first used, so that importing :mod:`qrmi` stays cheap. Third-party backends register
through the ``qrmi.backends`` entry-point group (name: the type string, value: ``module:Class``);
an entry point that fails to load is logged and skipped.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from qrmi.errors import UnsupportedResourceTypeError
from qrmi.models import ResourceType

if TYPE_CHECKING:
    from qrmi.backends.base import Backend

__all__ = [
    "BUILTIN_BACKENDS",
    "ENTRY_POINT_GROUP",
    "available_types",
    "backend_class",
    "did_you_mean",
    "parse_type",
    "register",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "qrmi.backends"

_BUILTIN: dict[str, tuple[str, str]] = {
    "alice-bob-felis": ("qrmi.backends.alice_bob:FelisBackend", ""),
    "ibm-quantum-compute-service": (
        "qrmi.backends.ibm_compute_service:QuantumComputeServiceBackend",
        "pip install 'pyqrmi[ibm]'",
    ),
    "ibm-quantum-system": (
        "qrmi.backends.ibm_quantum_system:QuantumSystemBackend",
        "pip install 'pyqrmi[ibm]'",
    ),
    "iqm-server": ("qrmi.backends.iqm:IQMServerBackend", ""),
    "local-emulator": (
        "qrmi.backends.local_emulator:LocalEmulatorBackend",
        "pip install 'pyqrmi[emulator]'",
    ),
    "oqtopus": ("qrmi.backends.oqtopus:OqtopusBackend", ""),
    "pasqal-cloud": ("qrmi.backends.pasqal_cloud:PasqalCloudBackend", ""),
    "pasqal-local": ("qrmi.backends.pasqal_local:PasqalLocalBackend", ""),
    "qiskit-runtime-service": (
        "qrmi.backends.ibm_compute_service:LegacyQiskitRuntimeServiceBackend",
        "pip install 'pyqrmi[ibm]'",
    ),
}
assert list(_BUILTIN) == sorted(_BUILTIN), "keep BUILTIN_BACKENDS sorted"

#: Read-only view of the built-in table: type string -> ("module:Class", install hint).
BUILTIN_BACKENDS: Mapping[str, tuple[str, str]] = MappingProxyType(_BUILTIN)

_lock = threading.Lock()
_registered: dict[str, str | type[Backend]] = {}
_entry_points_loaded = False


def register(type_string: str, backend: str | type[Backend], *, replace: bool = False) -> None:
    """Register a backend class (or its ``"module:Class"`` path) for ``type_string``.

    Raises:
        ValueError: the type string is already registered and ``replace`` is false.
    """
    with _lock:
        if not replace and (type_string in _registered or type_string in _BUILTIN):
            raise ValueError(f"a backend for {type_string!r} is already registered")
        _registered[type_string] = backend


def available_types() -> list[str]:
    """Every type string a backend is known for (built-in and registered), sorted."""
    _load_entry_points()
    return sorted(set(_BUILTIN) | set(_registered))


def parse_type(text: str | ResourceType) -> ResourceType | str:
    """Canonical form of a type: a :class:`ResourceType` member, or a third-party type string.

    Raises:
        UnsupportedResourceTypeError: the type is neither built in nor registered; the message
            lists the known type strings.
    """
    if isinstance(text, ResourceType):
        return text
    text = text.strip()
    try:
        return ResourceType.from_string(text)
    except UnsupportedResourceTypeError:
        if text in available_types():
            return text
    raise UnsupportedResourceTypeError(
        f"unknown resource type {text!r}{did_you_mean(text, available_types())}; "
        f"valid type strings are: {', '.join(available_types())}"
    )


def did_you_mean(text: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for a close match of ``text`` among ``choices``, else ``""``."""
    import difflib  # only on this error path

    close = difflib.get_close_matches(text, choices, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def backend_class(type_string: str) -> type[Backend]:
    """Import and return the backend class for ``type_string``.

    Raises:
        UnsupportedResourceTypeError: no backend is known for the type, or its module cannot be
            imported (the message says what to install).
    """
    if type_string not in _BUILTIN:  # entry points cannot take a built-in type: skip the scan
        _load_entry_points()
    target: str | type[Backend] | None = _registered.get(type_string)
    hint = ""
    if target is None and type_string in _BUILTIN:
        target, hint = _BUILTIN[type_string]
    if target is None:
        known = ", ".join(available_types())
        raise UnsupportedResourceTypeError(
            f"no backend for resource type {type_string!r}; known types are: {known}"
        )
    if not isinstance(target, str):
        return target
    return _import(type_string, target, hint)


def _import(type_string: str, path: str, hint: str) -> type[Backend]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        fix = f"; install it with: {hint}" if hint else ""
        raise UnsupportedResourceTypeError(
            f"the backend for {type_string!r} cannot be loaded ({exc}){fix}"
        ) from exc
    cls: type[Backend] = getattr(module, attr)
    return cls


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _lock:
        if _entry_points_loaded:
            return
        from importlib.metadata import entry_points  # slow to import; needed only here

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in _registered or ep.name in _BUILTIN:
                logger.warning("ignoring entry point %s: type %r is taken", ep.value, ep.name)
                continue
            _registered[ep.name] = ep.value
        _entry_points_loaded = True
