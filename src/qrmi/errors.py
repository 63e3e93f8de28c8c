"""The pyqrmi exception tree, drawn in one place.

Every error raised by pyqrmi derives from :class:`QrmiError`, itself a :class:`RuntimeError`
so that callers written for the reference implementation (``except RuntimeError``) keep working.
The names below are the reference's (qrmi 0.26); the extra classes are marked *pyqrmi*::

    QrmiError (RuntimeError)
    ├── AuthenticationFailedError          credentials refused or token exchange failed
    ├── ConfigError (ValueError)           malformed or incomplete configuration
    │   └── EnvVarNotSetError              a required ``{name}_{KEY}`` setting is missing
    ├── InvalidInputError (ValueError)     a payload, name or argument is malformed
    │   └── InvalidFilterError             a discovery filter string is malformed
    ├── ResourceNotFoundError (LookupError)   the vendor does not know the resource
    ├── TaskNotFoundError (LookupError)    the vendor does not know the task id
    ├── TaskNotReadyError                  a result was asked for before the task completed
    ├── UnsupportedFunctionError           the backend cannot do this call
    ├── UnsupportedPayloadError            the payload variant does not fit the backend
    ├── UnsupportedResourceTypeError       unknown type string or no backend for it
    ├── QuotaExceededError                 *pyqrmi*: an admin-set quota refuses the call
    ├── ServiceError                       *pyqrmi*: the vendor answered with an error
    │   └── ServiceUnavailableError        *pyqrmi*: retries exhausted (5xx, 423, 429, network)
    └── TaskTimeoutError (TimeoutError)    *pyqrmi*: a wait hit its deadline

Messages name the input, what was wrong and how to fix it. They never contain credentials.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailedError",
    "ConfigError",
    "EnvVarNotSetError",
    "InvalidFilterError",
    "InvalidInputError",
    "QrmiError",
    "QuotaExceededError",
    "ResourceNotFoundError",
    "ServiceError",
    "ServiceUnavailableError",
    "TaskNotFoundError",
    "TaskNotReadyError",
    "TaskTimeoutError",
    "UnsupportedFunctionError",
    "UnsupportedPayloadError",
    "UnsupportedResourceTypeError",
]


class QrmiError(RuntimeError):
    """Base class of every pyqrmi error."""


class AuthenticationFailedError(QrmiError):
    """The vendor refused the credentials, or a token could not be obtained."""


class ConfigError(QrmiError, ValueError):
    """The configuration (file, environment or dict) is malformed or incomplete."""


class EnvVarNotSetError(ConfigError):
    """A required per-resource setting (``{name}_{KEY}``) is not set."""


class InvalidInputError(QrmiError, ValueError):
    """An argument or payload is malformed."""


class InvalidFilterError(InvalidInputError):
    """A resource discovery filter string is malformed or names an unknown key."""


class ResourceNotFoundError(QrmiError, LookupError):
    """The resource is unknown to the configuration or to the vendor."""


class TaskNotFoundError(QrmiError, LookupError):
    """The task id is unknown to the backend."""


class TaskNotReadyError(QrmiError):
    """A task's result was requested before the task completed successfully."""


class UnsupportedFunctionError(QrmiError):
    """The backend does not support this call."""


class UnsupportedPayloadError(QrmiError, TypeError):
    """The payload variant is not one the backend accepts."""


class UnsupportedResourceTypeError(QrmiError, ValueError):
    """The resource type string is unknown, or no backend is installed for it."""


class QuotaExceededError(QrmiError):
    """An administrator's quota refuses the call (QPU seconds per period, tasks per job,
    unfinished tasks per job); the message names the limit, the usage and when it resets."""


class ServiceError(QrmiError):
    """The vendor service answered with an error the caller cannot fix by retrying.

    ``status_code`` is the HTTP status (``None`` for non-HTTP transports).
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ServiceUnavailableError(ServiceError):
    """The vendor kept failing transiently (5xx, 423, 429, network) until the retry deadline."""


class TaskTimeoutError(QrmiError, TimeoutError):
    """Waiting for a task (or a service) reached its deadline."""
