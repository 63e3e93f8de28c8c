"""``get_target``: a Qiskit transpiler ``Target`` for a QRMI resource that describes itself as IBM.

The resource's ``target().value`` is ``{"configuration": {...}, "properties": {...}}`` in IBM's
backend configuration and properties schemas (IBM Quantum backends and the local emulator);
``properties`` may be ``null``. qiskit-ibm-runtime's decoders and ``convert_to_target`` do the
conversion. Descriptions are cached per resource object because fetching one is a network round
trip (two on IBM Direct Access) and converting a 156-qubit device takes a noticeable time.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from qrmi.errors import InvalidInputError, ServiceError

__all__ = ["DeviceDescription", "describe", "get_target"]


@dataclass(frozen=True)
class DeviceDescription:
    """A resource's device description as qiskit-ibm-runtime models, and its ``Target``."""

    configuration: Any
    """``qiskit_ibm_runtime.models.QasmBackendConfiguration``."""
    properties: Any
    """``qiskit_ibm_runtime.models.BackendProperties``, or ``None``."""
    target: Any
    """``qiskit.transpiler.Target``."""


_cache: weakref.WeakKeyDictionary[Any, dict[bool, DeviceDescription]] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def get_target(qrmi: Any, *, use_fractional_gates: bool = False, refresh: bool = False) -> Any:
    """The Qiskit ``Target`` of ``qrmi``, for ``generate_preset_pass_manager(target=...)``.

    Args:
        qrmi: a resource whose ``target()`` is an IBM configuration/properties pair.
        use_fractional_gates: keep the device's fractional gates (``rzz``, ``rx`` with arbitrary
            angles) in the target.
        refresh: fetch the description again instead of using the cached one.

    Raises:
        InvalidInputError: ``qrmi`` has no ``target()`` call, or does not describe itself the
            IBM way.
        ServiceError: the description cannot be converted.
    """
    return describe(qrmi, use_fractional_gates=use_fractional_gates, refresh=refresh).target


def describe(
    qrmi: Any, *, use_fractional_gates: bool = False, refresh: bool = False
) -> DeviceDescription:
    """The cached (or, with ``refresh``, refetched) description of ``qrmi``."""
    key = bool(use_fractional_gates)
    if not refresh:
        cached = _cached(qrmi, key)
        if cached is not None:
            return cached
    description = _build(qrmi, key)
    _store(qrmi, key, description)
    return description


def _cached(qrmi: Any, key: bool) -> DeviceDescription | None:
    with _cache_lock:
        try:
            return _cache.get(qrmi, {}).get(key)
        except TypeError:  # not weak-referenceable or not hashable: no caching
            return None


def _store(qrmi: Any, key: bool, description: DeviceDescription) -> None:
    with _cache_lock, contextlib.suppress(TypeError):  # unhashable resources are not cached
        _cache.setdefault(qrmi, {})[key] = description


def _build(qrmi: Any, use_fractional_gates: bool) -> DeviceDescription:
    from qiskit_ibm_runtime.utils.backend_converter import convert_to_target

    config_dict, props_dict = _fetch(qrmi)
    name = _name(qrmi)
    configuration = _configuration(config_dict, use_fractional_gates, name)
    properties = _properties(props_dict, use_fractional_gates, name)
    try:
        target = convert_to_target(configuration=configuration, properties=properties)
    except Exception as exc:
        raise ServiceError(
            f"the target of resource {name} cannot be converted to a Qiskit Target: {exc}"
        ) from exc
    return DeviceDescription(configuration, properties, target)


def _fetch(qrmi: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if not callable(getattr(qrmi, "target", None)):
        raise InvalidInputError(
            f"'qrmi' must be a QRMI quantum resource with a target() call; got "
            f"{type(qrmi).__name__}. Get one with QRMIService().resources()[0]."
        )
    name = _name(qrmi)
    text = qrmi.target().value
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ServiceError(f"the target of resource {name} is not JSON: {exc}") from None
    config = data.get("configuration") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise InvalidInputError(
            f"resource {name} does not describe itself as an IBM-style device: its target() "
            'must be {"configuration": {...}, "properties": {...}} (IBM Quantum and '
            "local-emulator resources are); use a resource of one of those types"
        )
    props = data.get("properties")
    return config, props if isinstance(props, dict) else None


def _configuration(raw: dict[str, Any], use_fractional_gates: bool, name: str) -> Any:
    from qiskit_ibm_runtime.models import QasmBackendConfiguration
    from qiskit_ibm_runtime.utils.backend_decoder import (
        decode_backend_configuration,
        filter_raw_configuration,
    )

    config = copy.deepcopy(raw)  # the decoders mutate their argument
    try:
        if "online_date" in config:
            decode_backend_configuration(config)
        filter_raw_configuration(config, use_fractional_gates=use_fractional_gates)
        return QasmBackendConfiguration.from_dict(config)
    except Exception as exc:
        raise ServiceError(
            f"the configuration of resource {name} is not a valid IBM backend configuration: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _properties(raw: dict[str, Any] | None, use_fractional_gates: bool, name: str) -> Any:
    from qiskit_ibm_runtime.utils.backend_decoder import properties_from_server_data

    if raw is None:
        return None
    try:
        return properties_from_server_data(
            copy.deepcopy(raw), use_fractional_gates=use_fractional_gates
        )
    except Exception as exc:
        raise ServiceError(
            f"the properties of resource {name} are not valid IBM backend properties: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _name(qrmi: Any) -> str:
    try:
        return repr(qrmi.resource_id())
    except Exception:  # only used in messages
        return type(qrmi).__name__
