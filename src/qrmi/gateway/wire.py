"""What travels between the gateway and its clients: payloads and typed errors as JSON.

Shared by the server (:mod:`qrmi.gateway.app`) and the client backend
(:mod:`qrmi.backends.gateway`), so it imports nothing heavy. A payload is
``{"variant": "QiskitPrimitive", "input": ..., "program_id": ...}`` (the variant's dataclass
fields). An error answer is ``{"error": {"type": "TaskNotFoundError", "message": "..."}}``;
``type`` names a class of :mod:`qrmi.errors` (or one of the gateway's own words below), so a
client raises the same exception the backend raised on the gateway host.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from qrmi import errors
from qrmi.models import Payload

__all__ = [
    "ERROR_STATUS",
    "error_body",
    "error_class",
    "payload_from_json",
    "payload_to_json",
    "split_gateway_urls",
]

#: HTTP status of each error type the gateway answers with (anything else: 502).
ERROR_STATUS: dict[str, int] = {
    "InvalidInputError": 400,
    "InvalidFilterError": 400,
    "UnsupportedPayloadError": 400,
    "UnsupportedResourceTypeError": 400,
    "ConfigError": 400,
    "EnvVarNotSetError": 400,
    "InvalidTokenError": 401,
    "AuthenticationFailedError": 502,  # the vendor refused the gateway's credentials
    "AccessDeniedError": 403,
    "ResourceNotFoundError": 404,
    "TaskNotFoundError": 404,
    "NotFound": 404,
    "MethodNotAllowed": 405,
    "RequestTimeout": 408,
    "TaskNotReadyError": 409,
    "JobConflictError": 409,
    "PayloadTooLarge": 413,
    "UnsupportedMediaType": 415,
    "ResourcePausedError": 423,
    "QuotaExceededError": 429,
    "UnsupportedFunctionError": 501,
    "ServiceError": 502,
    "ServiceUnavailableError": 502,
    "StoreUnavailableError": 503,  # the gateway's own database: retry, or try another replica
    "TaskTimeoutError": 504,
    "InternalError": 500,
}

_PAYLOAD_VARIANTS: dict[str, type[Payload]] = {
    "QiskitPrimitive": Payload.QiskitPrimitive,
    "PasqalCloud": Payload.PasqalCloud,
    "IQMServer": Payload.IQMServer,
    "AliceBobFelis": Payload.AliceBobFelis,
    "Oqtopus": Payload.Oqtopus,
}


def payload_to_json(payload: Payload) -> dict[str, Any]:
    """``payload`` as a JSON object: its variant name and its fields."""
    if not dataclasses.is_dataclass(payload):
        raise errors.InvalidInputError(
            f"task_start needs a Payload variant such as Payload.QiskitPrimitive(...); "
            f"got {type(payload).__name__}"
        )
    return {"variant": payload.variant, **dataclasses.asdict(payload)}


def payload_from_json(data: Any) -> Payload:
    """The payload a JSON object describes.

    Raises:
        InvalidInputError: not an object, unknown variant, or missing/extra/mistyped fields.
    """
    if not isinstance(data, dict):
        raise errors.InvalidInputError(
            'the request\'s "payload" must be an object like {"variant": "QiskitPrimitive", '
            '"input": "...", "program_id": "sampler"}'
        )
    variant = data.get("variant")
    cls = _PAYLOAD_VARIANTS.get(variant) if isinstance(variant, str) else None
    if cls is None or not isinstance(variant, str):
        raise errors.InvalidInputError(
            f"payload variant {variant!r} is unknown; valid variants are "
            f"{', '.join(_PAYLOAD_VARIANTS)}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k != "variant"}
    _check_fields(variant, fields, values)
    payload: Payload = cls(**values)
    return payload


def _check_fields(
    variant: str, fields: dict[str, dataclasses.Field[Any]], values: dict[str, Any]
) -> None:
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise errors.InvalidInputError(
            f"payload {variant} has unknown field(s) {', '.join(unknown)}; its fields are "
            f"{', '.join(fields)}"
        )
    for name, field in fields.items():
        required = field.default is dataclasses.MISSING
        if name not in values:
            if required:
                raise errors.InvalidInputError(f"payload {variant} needs the field {name!r}")
            continue
        _check_type(variant, name, str(field.type), values[name])


def _check_type(variant: str, name: str, annotation: str, value: Any) -> None:
    optional = "None" in annotation
    if value is None and optional:
        return
    kind = next(t for t in (bool, int, str) if t.__name__ in annotation)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise errors.InvalidInputError(
            f"payload {variant} field {name!r} must be {kind.__name__}; got {type(value).__name__}"
        )


def error_body(kind: str, message: str) -> dict[str, Any]:
    """The JSON body of an error answer."""
    return {"error": {"type": kind, "message": message}}


def error_class(kind: str) -> type[errors.QrmiError]:
    """The :mod:`qrmi.errors` class a client raises for an error ``type``."""
    found = getattr(errors, kind, None)
    if isinstance(found, type) and issubclass(found, errors.QrmiError):
        return found
    if kind in ("InvalidTokenError",):
        return errors.AuthenticationFailedError
    if kind in ("NotFound",):
        return errors.ResourceNotFoundError
    if kind in ("PayloadTooLarge", "UnsupportedMediaType", "MethodNotAllowed"):
        return errors.InvalidInputError
    if kind in ("RequestTimeout", "StoreUnavailableError"):
        return errors.ServiceUnavailableError
    return errors.ServiceError


#: At most this many gateway replicas in one ``QRMI_GATEWAY_URL``.
_MAX_URLS = 16


def split_gateway_urls(text: str) -> list[str]:
    """The gateway addresses of a ``QRMI_GATEWAY_URL`` value: one URL, or replicas separated by
    commas, tried in that order.

    Raises:
        ConfigError: an entry is not an http:// or https:// URL, or none is given.
    """
    urls = [part.strip().rstrip("/") for part in text.split(",") if part.strip()]
    bad = [u for u in urls if not u.startswith(("http://", "https://")) or " " in u]
    if not urls or bad or len(urls) > _MAX_URLS:
        raise errors.ConfigError(
            f"QRMI_GATEWAY_URL={text!r} must be the gateway's base URL, or up to {_MAX_URLS} "
            "replicas' URLs separated by commas, e.g. https://gw1:8443,https://gw2:8443"
        )
    return urls
