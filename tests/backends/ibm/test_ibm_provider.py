"""ResourceProvider: discovery of IBM backends with filters, without touching os.environ."""

from __future__ import annotations

import os

import pytest
from ibm_helpers import sampler

from qrmi.errors import ConfigError, InvalidFilterError, UnsupportedResourceTypeError
from qrmi.models import ResourceType
from qrmi.provider import FILTER_KEYS, ResourceProvider, parse_filters
from qrmi.testing.ibm_compute_service import ComputeServiceFake
from qrmi.testing.ibm_quantum_system import QuantumSystemFake


def names(provider: ResourceProvider, filters: str | None = None) -> list[str]:
    return [r.resource_id() for r in provider.resources(filters)]


def test_compute_service_filters_and_sorts_by_queue(qcs: ComputeServiceFake) -> None:
    environ = dict(os.environ)
    provider = ResourceProvider(ResourceType.IBMQuantumComputeService, qcs.settings)
    qcs.queue.hold()
    busy = provider.least_busy("name=ibm_perth")
    assert busy is not None
    task = busy.task_start(sampler())
    try:
        assert names(provider) == ["ibm_torino", "ibm_perth"]
        assert names(provider, " num_qubits = 100 ") == ["ibm_torino"]
        assert names(provider, "name=ibm_p*&status=online") == ["ibm_perth"]
        assert names(provider, "is_simulator=true") == []
        assert names(provider, "max_shots=100000000") == []
        qcs.set_status("ibm_torino", "paused")
        assert names(provider, "status=online") == ["ibm_perth"]
    finally:
        busy.task_stop(task)
    resource = provider.least_busy("num_qubits=7&status=online")
    assert resource is not None and resource.is_accessible() is True
    assert dict(os.environ) == environ


def test_quantum_system_filters_and_sorts_by_running_jobs(qs: QuantumSystemFake) -> None:
    environ = dict(os.environ)
    settings = qs.settings
    provider = ResourceProvider("ibm-quantum-system", settings)
    assert names(provider) == ["ibm_perth", "ibm_brisbane"]
    perth = provider.least_busy("name=ibm_perth")
    assert perth is not None
    task = perth.task_start(sampler(seconds=30))
    try:
        assert names(provider) == ["ibm_brisbane", "ibm_perth"]
        assert names(provider, "num_qubits=100") == ["ibm_brisbane"]
        qs.set_status("ibm_brisbane", "offline")
        assert names(provider, "status=online") == ["ibm_perth"]
    finally:
        perth.task_stop(task)
    assert dict(os.environ) == environ


@pytest.mark.parametrize(
    ("filters", "match"),
    [
        ("qubits=5", "unknown key 'qubits'.*num_qubits"),
        ("num_qubits", "not key=value"),
        ("=5", "not key=value"),
        ("num_qubits=many", "whole number"),
        ("status=offline", "only accepted value is online"),
        ("is_simulator=maybe", "true or false"),
        ("name=a&name=b", "given twice"),
    ],
)
def test_bad_filters_are_refused(filters: str, match: str) -> None:
    with pytest.raises(InvalidFilterError, match=match):
        parse_filters(filters)


def test_unknown_key_message_lists_every_valid_key() -> None:
    with pytest.raises(InvalidFilterError) as caught:
        parse_filters("num_qubit=5")
    assert all(key in str(caught.value) for key in FILTER_KEYS)


def test_empty_segments_and_whitespace_are_ignored() -> None:
    parsed = parse_filters(" num_qubits=5 & & name = ibm_* &")
    assert (parsed.num_qubits, parsed.name, parsed.is_simulator) == (5, "ibm_*", False)


def test_other_types_and_missing_keys_are_refused() -> None:
    with pytest.raises(UnsupportedResourceTypeError, match="pasqal-cloud"):
        ResourceProvider(ResourceType.PasqalCloud, {})
    with pytest.raises(ConfigError, match="QRMI_IBM_QCS_ENDPOINT"):
        ResourceProvider(ResourceType.IBMQuantumComputeService, {})
