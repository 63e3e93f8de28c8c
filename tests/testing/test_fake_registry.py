"""qrmi.testing's registry of vendor fakes (FAKE_SERVERS, register_fake, start_fake)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import qrmi.testing
from qrmi.errors import ConfigError, InvalidInputError
from qrmi.testing import FAKE_SERVERS, FakeServer, register_fake, start_fake


@pytest.fixture(autouse=True)
def restore_registry() -> Iterator[None]:
    saved = dict(FAKE_SERVERS)
    yield
    qrmi.testing._FAKE_SERVERS.clear()
    qrmi.testing._FAKE_SERVERS.update(saved)


def not_a_server(**options: Any) -> object:
    return object()


def test_the_table_is_sorted_and_read_only() -> None:
    assert list(FAKE_SERVERS) == sorted(FAKE_SERVERS)
    for kind, path in FAKE_SERVERS.items():
        module, _, factory = path.partition(":")
        assert kind and module and factory, (kind, path)
    with pytest.raises(TypeError):
        FAKE_SERVERS["x"] = "y:z"  # type: ignore[index]


def test_registering_keeps_the_table_sorted() -> None:
    register_fake("zz-last", "m:z")
    register_fake("00-first", "m:a")
    assert list(FAKE_SERVERS) == sorted(FAKE_SERVERS)
    assert FAKE_SERVERS["00-first"] == "m:a"


def test_registration_is_checked() -> None:
    with pytest.raises(ConfigError, match="module:factory"):
        register_fake("bad", "no_colon")
    register_fake("dup", "m:one")
    register_fake("dup", "m:one")  # the same entry again is fine
    with pytest.raises(ConfigError, match="already registered"):
        register_fake("dup", "m:two")
    register_fake("dup", "m:two", replace=True)
    assert FAKE_SERVERS["dup"] == "m:two"


def test_start_fake_builds_and_starts_the_server() -> None:
    register_fake("example", "example_fake:create_example_fake")
    fake = start_fake("example", api_key="custom-key")
    try:
        assert isinstance(fake, FakeServer) and fake.running
        assert httpx.get(f"{fake.url}/health", timeout=5).json() == {"status": "ok"}
        token = httpx.post(f"{fake.url}/auth/token", json={"api_key": "custom-key"}, timeout=5)
        assert token.status_code == 200
    finally:
        fake.stop()


def test_unknown_kind_lists_the_known_ones() -> None:
    register_fake("example", "example_fake:create_example_fake")
    with pytest.raises(InvalidInputError, match="unknown fake server kind 'nope'.*example"):
        start_fake("nope")


def test_unloadable_or_wrong_factories_are_config_errors() -> None:
    register_fake("missing-module", "qrmi_no_such_module:create")
    with pytest.raises(ConfigError, match="cannot load fake server 'missing-module'"):
        start_fake("missing-module")
    register_fake("missing-attr", "example_fake:no_such_factory")
    with pytest.raises(ConfigError, match="cannot load"):
        start_fake("missing-attr")
    register_fake("wrong-type", f"{__name__}:not_a_server")
    with pytest.raises(ConfigError, match="not a FakeServer"):
        start_fake("wrong-type")


def test_importing_the_kit_does_not_import_server_libraries() -> None:
    code = (
        "import sys, qrmi.testing; "
        "print(sorted(m for m in ('uvicorn', 'fastapi', 'starlette', 'httpx') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert output.stdout.strip() == "[]"
