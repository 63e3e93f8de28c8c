"""Type strings resolve to backend classes lazily; unknown ones fail helpfully."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qrmi import QuantumResource, UnsupportedResourceTypeError
from qrmi.registry import BUILTIN_BACKENDS, available_types, backend_class, parse_type, register


def test_builtin_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        BUILTIN_BACKENDS["x"] = ("a:b", "")  # type: ignore[index]


def test_every_resource_type_has_a_backend() -> None:
    from qrmi import ResourceType

    missing = {t.type_string for t in ResourceType} - set(available_types())
    assert missing == set()


def test_unknown_type() -> None:
    with pytest.raises(UnsupportedResourceTypeError, match="no backend for resource type 'nope'"):
        backend_class("nope")
    with pytest.raises(UnsupportedResourceTypeError, match="valid type strings are"):
        QuantumResource("x", "nope")


def test_oqtopus_resolves_to_its_backend() -> None:
    from qrmi.backends.oqtopus import OqtopusBackend

    assert backend_class("oqtopus") is OqtopusBackend
    resource = QuantumResource(
        "anemone",
        "oqtopus",
        config={"QRMI_OQTOPUS_URL": "http://127.0.0.1:9", "QRMI_OQTOPUS_API_TOKEN": "t"},
        environ={},
    )
    assert str(resource.resource_type()) == "ResourceType.OQTOPUS"


def test_third_party_registration() -> None:
    register("acme-qpu", "tests.backends.test_base:ScriptedBackend")
    assert parse_type("acme-qpu") == "acme-qpu"
    with pytest.raises(ValueError, match="already registered"):
        register("acme-qpu", "x:y")


def test_import_qrmi_is_light() -> None:
    code = (
        "import sys, qrmi\n"
        "heavy = [m for m in ('qiskit', 'qiskit_aer', 'httpx', 'pydantic', 'boto3', 'pulser')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
