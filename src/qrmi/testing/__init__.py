"""Fake vendor services for tests, demos and benchmarks (public API).

* :class:`FakeServer` serves an ASGI app on 127.0.0.1 from a background thread, records every
  request and injects faults (:class:`FaultInjector`).
* :class:`TokenIssuer` is the token store vendor fakes embed in their auth endpoints.
* :data:`FAKE_SERVERS` names the vendor fakes ``qrmi fake serve KIND`` can start:
  kind -> ``"module:factory"``, where ``factory(**options)`` returns a :class:`FakeServer`.
  :func:`start_fake` imports the factory lazily and starts the server.

Importing this package does not import uvicorn, FastAPI or httpx.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from qrmi.errors import ConfigError, InvalidInputError
from qrmi.testing.auth import IssuedToken, TokenIssuer
from qrmi.testing.server import (
    SENSITIVE_HEADERS,
    FakeServer,
    FaultInjector,
    RecordedRequest,
    RequestLog,
)

__all__ = [
    "FAKE_SERVERS",
    "SENSITIVE_HEADERS",
    "FakeServer",
    "FaultInjector",
    "IssuedToken",
    "RecordedRequest",
    "RequestLog",
    "TokenIssuer",
    "register_fake",
    "start_fake",
]

# Vendor fakes, kind -> "module:factory". Keep the keys sorted.
_FAKE_SERVERS: dict[str, str] = {
    "alice-bob-felis": "qrmi.testing.alice_bob_felis:felis_server",
    "ibm-quantum-compute-service": "qrmi.testing.ibm_compute_service:serve",
    "ibm-quantum-system": "qrmi.testing.ibm_quantum_system:serve",
    "iqm-server": "qrmi.testing.iqm_server:iqm_server",
    "oqtopus": "qrmi.testing.oqtopus:oqtopus_server",
    "pasqal-cloud": "qrmi.testing.pasqal_cloud:pasqal_cloud_server",
    "pasqal-local": "qrmi.testing.pasqal_warden:pasqal_warden_server",
}

#: Read-only view of the registered vendor fakes (sorted by kind).
FAKE_SERVERS: Mapping[str, str] = MappingProxyType(_FAKE_SERVERS)


def register_fake(kind: str, path: str, *, replace: bool = False) -> None:
    """Register the factory at ``path`` (``"package.module:function"``) as fake ``kind``."""
    module, sep, attribute = path.partition(":")
    if not kind or not sep or not module or not attribute:
        raise ConfigError(
            f"fake server {kind!r} needs a non-empty kind and a 'module:factory' path; "
            f"got {path!r}."
        )
    if kind in _FAKE_SERVERS and not replace and _FAKE_SERVERS[kind] != path:
        raise ConfigError(
            f"fake server kind {kind!r} is already registered as {_FAKE_SERVERS[kind]!r}; "
            "pass replace=True to override it."
        )
    entries = {**_FAKE_SERVERS, kind: path}
    _FAKE_SERVERS.clear()
    _FAKE_SERVERS.update(sorted(entries.items()))


def start_fake(kind: str, **options: Any) -> FakeServer:
    """Build fake ``kind`` with ``factory(**options)`` and start it; return the server."""
    try:
        path = _FAKE_SERVERS[kind]
    except KeyError:
        known = ", ".join(_FAKE_SERVERS) or "none registered"
        raise InvalidInputError(
            f"unknown fake server kind {kind!r}; known kinds: {known}."
        ) from None
    server = _load_factory(kind, path)(**options)
    if not isinstance(server, FakeServer):
        raise ConfigError(
            f"fake server factory {path!r} returned {type(server).__name__}, not a FakeServer."
        )
    return server.start()


def _load_factory(kind: str, path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"cannot load fake server {kind!r} from {path!r}: {exc}. "
            "Install the extra dependencies it needs (e.g. pip install 'pyqrmi[fakes]')."
        ) from exc
