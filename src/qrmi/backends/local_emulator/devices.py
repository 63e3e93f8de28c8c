"""Device snapshots the local emulator can stand in for.

The snapshots are the ``conf_<x>.json`` / ``props_<x>.json`` files bundled with
qiskit-ibm-runtime's ``fake_provider`` (our ``emulator`` extra depends on it). They are located
on disk without importing qiskit-ibm-runtime, so reading a device description stays cheap.

Device names: the canonical spelling is ``fake_<x>`` (``fake_perth``, ``fake_sherbrooke``,
``fake_torino``, ``fake_fez``...; :func:`available_devices` lists them). ``<x>`` alone and the
IBM name stored in the snapshot (``ibm_perth``, ``ibmq_manila``) are accepted as aliases.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

from qrmi.errors import InvalidInputError, UnsupportedFunctionError

__all__ = [
    "DEFAULT_DEVICE",
    "available_devices",
    "canonical_device_name",
    "device_qubits",
    "device_snapshot",
    "snapshot_files",
]

#: 7 qubits in IBM's H-shaped Falcon layout with a CX basis: every circuit that fits runs as an
#: exact statevector in milliseconds, transpiles quickly, and its noise model is small, yet it
#: is big enough for the usual GHZ / Bell / small VQE demos.
DEFAULT_DEVICE = "fake_perth"

_PREFIX = "fake_"


@functools.cache
def _backends_dir() -> Path:
    spec = importlib.util.find_spec("qiskit_ibm_runtime")
    if spec is None or not spec.submodule_search_locations:
        raise UnsupportedFunctionError(
            "the local emulator needs qiskit-ibm-runtime for its device snapshots; "
            "install it with: pip install 'pyqrmi[emulator]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "fake_provider" / "backends"


@functools.cache
def _catalogue() -> dict[str, tuple[Path, Path]]:
    """Canonical name -> (configuration file, properties file), for complete snapshots only."""
    found: dict[str, tuple[Path, Path]] = {}
    for folder in sorted(_backends_dir().iterdir()):
        conf = folder / f"conf_{folder.name}.json"
        props = folder / f"props_{folder.name}.json"
        if conf.is_file() and props.is_file():
            found[_PREFIX + folder.name] = (conf, props)
    return found


def available_devices() -> list[str]:
    """Canonical names of every device snapshot, sorted (``fake_almaden`` ... ``fake_yorktown``)."""
    return sorted(_catalogue())


def canonical_device_name(name: str) -> str:
    """``fake_<x>`` for ``name`` given as ``fake_<x>``, ``<x>``, ``ibm_<x>`` or ``ibmq_<x>``.

    Raises:
        InvalidInputError: no snapshot of that name; the message lists the valid names.
    """
    key = name.strip().lower()
    for prefix in (_PREFIX, "ibmq_", "ibm_"):
        key = key.removeprefix(prefix)
    canonical = _PREFIX + key
    if canonical in _catalogue():
        return canonical
    raise InvalidInputError(
        f"unknown emulator device {name!r}; set QRMI_LOCAL_DEVICE to one of: "
        + ", ".join(available_devices())
    )


def snapshot_files(name: str) -> tuple[Path, Path]:
    """Paths of the configuration and properties JSON files of device ``name``."""
    return _catalogue()[canonical_device_name(name)]


@functools.cache
def _load(name: str) -> tuple[str, str]:
    conf_path, props_path = snapshot_files(name)
    conf = json.loads(conf_path.read_text(encoding="utf-8"))
    conf["backend_name"] = name
    return json.dumps(conf), props_path.read_text(encoding="utf-8")


def device_snapshot(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(configuration, properties) of device ``name`` as fresh JSON dicts.

    The configuration's ``backend_name`` is the canonical device name (``fake_perth``); the rest
    is the snapshot as IBM's ``/backends/{name}/configuration`` and ``/properties`` return it.

    Raises:
        InvalidInputError: unknown device name.
    """
    conf_text, props_text = _load(canonical_device_name(name))
    conf: dict[str, Any] = json.loads(conf_text)
    props: dict[str, Any] = json.loads(props_text)
    return conf, props


@functools.cache
def device_qubits(name: str) -> int:
    """Number of qubits of device ``name`` (raises InvalidInputError for an unknown one)."""
    conf, _ = device_snapshot(name)
    return int(conf["n_qubits"])
