"""pyqrmi: the vendor-agnostic Quantum Resource Management Interface, in Python.

Drop-in for the reference ``qrmi`` package's Python API::

    import qrmi
    qpu = qrmi.QuantumResource("local", qrmi.ResourceType.LocalEmulator)
    task = qpu.task_start(qrmi.Payload.QiskitPrimitive(input=params_json, program_id="sampler"))
    qpu.task_wait(task)
    print(qpu.task_result(task).value)

``import qrmi`` itself loads nothing but this file: every public name is imported from its
module the first time it is used (PEP 562 ``__getattr__``), so commands that import the
package for one thing (``task_runner --help``, ``qrmi --help``, the Slurm helper) do not pay for
the rest. ``from qrmi import X`` and ``qrmi.X`` work as before.
"""

from __future__ import annotations

import importlib

from qrmi._version import __version__

# Not ``typing.TYPE_CHECKING``: importing ``typing`` alone costs more than this whole file;
# mypy treats any name ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False

#: Public name -> the module that defines it.
_EXPORTS = {
    "Config": "qrmi.config",
    "ResourceDef": "qrmi.config",
    "Settings": "qrmi.config",
    "AuthenticationFailedError": "qrmi.errors",
    "ConfigError": "qrmi.errors",
    "EnvVarNotSetError": "qrmi.errors",
    "InvalidFilterError": "qrmi.errors",
    "InvalidInputError": "qrmi.errors",
    "QrmiError": "qrmi.errors",
    "ResourceNotFoundError": "qrmi.errors",
    "ServiceError": "qrmi.errors",
    "ServiceUnavailableError": "qrmi.errors",
    "TaskNotFoundError": "qrmi.errors",
    "TaskNotReadyError": "qrmi.errors",
    "TaskTimeoutError": "qrmi.errors",
    "UnsupportedFunctionError": "qrmi.errors",
    "UnsupportedPayloadError": "qrmi.errors",
    "UnsupportedResourceTypeError": "qrmi.errors",
    "QRMIService": "qrmi.job",
    "get_job_qpu_resources_and_types": "qrmi.job",
    "set_log_callback": "qrmi.log",
    "Payload": "qrmi.models",
    "ResourceCapacity": "qrmi.models",
    "ResourceStatus": "qrmi.models",
    "ResourceStatusCode": "qrmi.models",
    "ResourceType": "qrmi.models",
    "Target": "qrmi.models",
    "TaskResult": "qrmi.models",
    "TaskStatus": "qrmi.models",
    "QuantumResourceProtocol": "qrmi.protocol",
    "ResourceProvider": "qrmi.provider",
    "QuantumResource": "qrmi.resource",
}

__all__ = [
    "AuthenticationFailedError",
    "Config",
    "ConfigError",
    "EnvVarNotSetError",
    "InvalidFilterError",
    "InvalidInputError",
    "Payload",
    "QRMIService",
    "QrmiError",
    "QuantumResource",
    "QuantumResourceProtocol",
    "ResourceCapacity",
    "ResourceDef",
    "ResourceNotFoundError",
    "ResourceProvider",
    "ResourceStatus",
    "ResourceStatusCode",
    "ResourceType",
    "ServiceError",
    "ServiceUnavailableError",
    "Settings",
    "Target",
    "TaskNotFoundError",
    "TaskNotReadyError",
    "TaskResult",
    "TaskStatus",
    "TaskTimeoutError",
    "UnsupportedFunctionError",
    "UnsupportedPayloadError",
    "UnsupportedResourceTypeError",
    "__version__",
    "get_job_qpu_resources_and_types",
    "set_log_callback",
]

if TYPE_CHECKING:
    from typing import Any

    from qrmi.config import Config, ResourceDef, Settings
    from qrmi.errors import (
        AuthenticationFailedError,
        ConfigError,
        EnvVarNotSetError,
        InvalidFilterError,
        InvalidInputError,
        QrmiError,
        ResourceNotFoundError,
        ServiceError,
        ServiceUnavailableError,
        TaskNotFoundError,
        TaskNotReadyError,
        TaskTimeoutError,
        UnsupportedFunctionError,
        UnsupportedPayloadError,
        UnsupportedResourceTypeError,
    )
    from qrmi.job import QRMIService, get_job_qpu_resources_and_types
    from qrmi.log import set_log_callback
    from qrmi.models import (
        Payload,
        ResourceCapacity,
        ResourceStatus,
        ResourceStatusCode,
        ResourceType,
        Target,
        TaskResult,
        TaskStatus,
    )
    from qrmi.protocol import QuantumResourceProtocol
    from qrmi.provider import ResourceProvider
    from qrmi.resource import QuantumResource


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use and keep it in this namespace."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qrmi' has no attribute {name!r}")
    importlib.import_module("qrmi.log")  # credential masking of log records, before any use
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
