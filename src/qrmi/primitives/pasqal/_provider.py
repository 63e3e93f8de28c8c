"""Lazy access to qiskit-pasqal-provider, with an install hint when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = (
    "qrmi.primitives.pasqal needs the qiskit-pasqal-provider package: "
    "pip install 'pyqrmi[pasqal]' (or pip install qiskit-pasqal-provider)"
)


def provider_module(name: str) -> ModuleType:
    """Import ``qiskit_pasqal_provider.<name>``.

    Raises:
        ImportError: qiskit-pasqal-provider is not installed; the message says how to install it.
    """
    try:
        return importlib.import_module(f"qiskit_pasqal_provider.{name}")
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
