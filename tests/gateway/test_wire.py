"""Payloads and errors on the wire between the gateway and its clients."""

from __future__ import annotations

from typing import Any

import pytest

from qrmi import errors
from qrmi.gateway.wire import error_class, payload_from_json, payload_to_json
from qrmi.models import Payload

PAYLOADS = [
    Payload.QiskitPrimitive(input='{"pubs": []}', program_id="sampler"),
    Payload.PasqalCloud(sequence="{}", job_runs=10),
    Payload.IQMServer(iqmjson="{}", job_type="circuit", use_timeslot=None, tag="t"),
    Payload.AliceBobFelis(human_qir="qir", input_params="{}"),
    Payload.Oqtopus(job_spec="{}"),
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.variant)
def test_every_payload_variant_round_trips(payload: Payload) -> None:
    assert payload_from_json(payload_to_json(payload)) == payload


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be an object"),
        ({"variant": "Nope"}, "'Nope' is unknown"),
        ({"variant": "Oqtopus"}, "needs the field 'job_spec'"),
        ({"variant": "Oqtopus", "job_spec": "{}", "x": 1}, "unknown field(s) x"),
        ({"variant": "PasqalCloud", "sequence": "{}", "job_runs": True}, "'job_runs' must be int"),
        ({"variant": "IQMServer", "iqmjson": "{}", "use_timeslot": "yes"}, "must be bool"),
    ],
)
def test_malformed_payloads_are_named(data: Any, message: str) -> None:
    with pytest.raises(errors.InvalidInputError) as caught:
        payload_from_json(data)
    assert message in str(caught.value)


def test_error_types_map_to_the_same_exceptions() -> None:
    assert error_class("TaskNotFoundError") is errors.TaskNotFoundError
    assert error_class("TaskNotReadyError") is errors.TaskNotReadyError
    assert error_class("InvalidTokenError") is errors.AuthenticationFailedError
    assert error_class("SomethingNew") is errors.ServiceError
