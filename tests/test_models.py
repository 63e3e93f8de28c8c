"""Value types keep the reference's names, values and shapes."""

from __future__ import annotations

import pytest

from qrmi import (
    Payload,
    ResourceCapacity,
    ResourceStatus,
    ResourceStatusCode,
    ResourceType,
    TaskStatus,
    UnsupportedResourceTypeError,
)


def test_resource_type_values_match_the_reference() -> None:
    assert ResourceType.IBMQuantumSystem == 0
    assert ResourceType.IBMQiskitRuntimeService == 1
    assert ResourceType.IBMQuantumComputeService == 2
    assert ResourceType.IQMServer == 6
    assert str(ResourceType.LocalEmulator) == "ResourceType.LocalEmulator"


@pytest.mark.parametrize("member", list(ResourceType))
def test_type_strings_round_trip(member: ResourceType) -> None:
    assert ResourceType.from_string(member.type_string) is member
    assert ResourceType.coerce(member.type_string) is member
    assert ResourceType.coerce(int(member)) is member


def test_unknown_type_string_lists_valid_ones() -> None:
    with pytest.raises(UnsupportedResourceTypeError, match="'direct-access'.*ibm-quantum-system"):
        ResourceType.from_string("direct-access")


def test_task_status_final_states() -> None:
    final = {s for s in TaskStatus if s.is_final}
    assert final == {TaskStatus.Completed, TaskStatus.Failed, TaskStatus.Cancelled}


def test_payload_variants_are_payloads() -> None:
    qp = Payload.QiskitPrimitive(input="{}", program_id="sampler")
    pc = Payload.PasqalCloud(sequence="{}", job_runs=10)
    iqm = Payload.IQMServer(iqmjson="{}", job_type="circuit", use_timeslot=False, tag=None)
    ab = Payload.AliceBobFelis(human_qir="qir", input_params="{}")
    oq = Payload.Oqtopus(job_spec='{"shots": 1000}')
    variants = [(qp, "QiskitPrimitive"), (pc, "PasqalCloud"), (iqm, "IQMServer"), (oq, "Oqtopus")]
    for payload, name in variants:
        assert isinstance(payload, Payload)
        assert payload.variant == name
    assert isinstance(ab, Payload.AliceBobFelis)
    assert not isinstance(qp, Payload.PasqalCloud)
    assert qp.input == "{}" and qp.program_id == "sampler"


def test_resource_status_to_dict() -> None:
    status = ResourceStatus(ResourceStatusCode.Online, busy=False, capacity=ResourceCapacity(2, 2))
    assert status.to_dict() == {
        "status": "online",
        "status_reason": None,
        "healthy": None,
        "busy": False,
        "capacity": {"available_slots": 2, "max_slots": 2},
        "pending_job_count": None,
    }


@pytest.mark.parametrize(
    "member", [*ResourceType, *TaskStatus, *ResourceStatusCode], ids=lambda m: repr(m)
)
def test_enum_members_print_as_class_dot_member_like_the_reference(member: object) -> None:
    # The reference's enums give ``ResourceStatusCode.Online`` for str, repr and format;
    # programs print them and compare the text.
    expected = f"{type(member).__name__}.{member.name}"  # type: ignore[attr-defined]
    assert str(member) == expected
    assert repr(member) == expected
    assert f"{member}" == expected
    assert f"{member:d}" == str(int(member))  # type: ignore[call-overload]
