"""The Pulser device a Pasqal resource runs sequences on (``get_device``), as in the reference."""

from __future__ import annotations

import json
import logging
from typing import Any

from qrmi.errors import ServiceError

__all__ = ["get_device", "get_target"]

logger = logging.getLogger(__name__)


def get_device(qrmi: Any) -> Any:
    """The Pulser ``Device`` for ``qrmi`` (a ``pasqal-cloud`` or ``pasqal-local`` resource).

    As in the reference: an emulator (a resource id containing ``emu``) gets Pulser's
    ``DigitalAnalogDevice``; otherwise the device of ``target()`` whose ``device_type`` is the
    resource id, or else the first device listed (an on-premises QPU lists only itself).

    Raises:
        ServiceError: the target lists no device Pulser can read.
    """
    from pulser import DigitalAnalogDevice

    resource_id = str(qrmi.resource_id())
    if "emu" in resource_id.lower():
        return DigitalAnalogDevice
    devices = available_devices(qrmi)
    if not devices:
        raise ServiceError(
            f"the target of Pasqal resource {resource_id!r} lists no device Pulser can read"
        )
    own = devices.get(resource_id) or devices.get(resource_id.upper())
    return own if own is not None else next(iter(devices.values()))


def available_devices(qrmi: Any) -> dict[str, Any]:
    """The Pulser devices of ``qrmi.target()`` by device type; unreadable ones are skipped
    with a warning."""
    from pulser.abstract_repr import deserialize_device

    text = qrmi.target().value
    try:
        entries = json.loads(text)
    except json.JSONDecodeError:
        logger.warning("the target of %s is not JSON; no device is known", qrmi.resource_id())
        return {}
    devices = {}
    for entry in entries if isinstance(entries, list) else []:
        try:
            devices[str(entry["device_type"])] = deserialize_device(entry["specs"])
        except Exception as exc:  # Pulser raises several types for unreadable specs
            logger.warning("device %s is left out: %s", _device_type(entry), exc)
    return devices


def get_target(qrmi: Any) -> Any:
    """Not available for Pasqal devices (as in the reference): transpile with the device.

    Raises:
        NotImplementedError: always.
    """
    raise NotImplementedError(
        "get_target is not available for Pasqal resources; qiskit-pasqal-provider builds the "
        "sequence from the device returned by qrmi.primitives.pasqal.get_device(qrmi)"
    )


def _device_type(entry: Any) -> Any:
    return entry.get("device_type") if isinstance(entry, dict) else None
