"""pyqrmi: the vendor-agnostic Quantum Resource Management Interface, in Python.

Drop-in for the reference ``qrmi`` package's Python API::

    import qrmi
    qpu = qrmi.QuantumResource("local", qrmi.ResourceType.LocalEmulator)
    task = qpu.task_start(qrmi.Payload.QiskitPrimitive(input=params_json, program_id="sampler"))
    qpu.task_wait(task)
    print(qpu.task_result(task).value)
"""

from qrmi._version import __version__
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
