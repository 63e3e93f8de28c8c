"""Task input files become the payload their resource type takes; bad ones say what to fix."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from qrmi import InvalidInputError, Payload, ResourceType
from qrmi.tools.inputs import load_payload, payload_variant

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "inputs"


def write(tmp_path: Path, data: Any, name: str = "task.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("kind", "variant"),
    [
        ("local-emulator", "QiskitPrimitive"),
        ("ibm-quantum-system", "QiskitPrimitive"),
        ("ibm-quantum-compute-service", "QiskitPrimitive"),
        ("qiskit-runtime-service", "QiskitPrimitive"),
        ("pasqal-cloud", "PasqalCloud"),
        ("pasqal-local", "PasqalCloud"),
        ("iqm-server", "IQMServer"),
        ("alice-bob-felis", "AliceBobFelis"),
        ("some-third-party", None),
    ],
)
def test_the_resource_type_decides_the_format(kind: str, variant: str | None) -> None:
    assert payload_variant(kind) == variant


def test_qiskit_primitive_parameters_are_sent_as_json_text(tmp_path: Path) -> None:
    params = {"pubs": [["OPENQASM 3.0;", None, 10]], "version": 2}
    path = write(tmp_path, {"program_id": "sampler", "parameters": params})
    payload = load_payload(path, ResourceType.IBMQuantumSystem)
    assert isinstance(payload, Payload.QiskitPrimitive)
    assert payload.program_id == "sampler"
    assert json.loads(payload.input) == params


@pytest.mark.parametrize("name", ["bell_sampler.json", "bell_estimator.json"])
def test_example_inputs_load(name: str) -> None:
    payload = load_payload(EXAMPLES / name, "local-emulator")
    assert isinstance(payload, Payload.QiskitPrimitive)
    assert payload.program_id == name.removeprefix("bell_").removesuffix(".json")
    assert json.loads(payload.input)["pubs"][0][0].startswith("OPENQASM 3.0;")


def test_pasqal_sequence_object_or_text(tmp_path: Path) -> None:
    sequence = {"version": "1", "channels": {}}
    as_object = load_payload({"sequence": sequence, "job_runs": 100}, "pasqal-local")
    as_text = load_payload({"sequence": json.dumps(sequence), "job_runs": 5}, "pasqal-cloud")
    assert isinstance(as_object, Payload.PasqalCloud)
    assert isinstance(as_text, Payload.PasqalCloud)
    assert json.loads(as_object.sequence) == sequence
    assert as_text.sequence == json.dumps(sequence)
    assert (as_object.job_runs, as_text.job_runs) == (100, 5)


def test_iqm_optional_keys_are_optional() -> None:
    payload = load_payload({"iqmjson": {"circuits": []}}, "iqm-server")
    assert payload == Payload.IQMServer(iqmjson='{"circuits": []}', job_type="circuit")
    full = load_payload(
        {"iqmjson": "{}", "job_type": "sweep", "use_timeslot": True, "tag": "t1"}, "iqm-server"
    )
    assert full == Payload.IQMServer(iqmjson="{}", job_type="sweep", use_timeslot=True, tag="t1")


def test_felis_qir_text_is_passed_as_is() -> None:
    qir = "; ModuleID = 'bell'\ndefine void @main() {\n  ret void\n}\n"
    payload = load_payload({"human_qir": qir, "input_params": {"nbShots": 50}}, "alice-bob-felis")
    assert payload == Payload.AliceBobFelis(human_qir=qir, input_params='{"nbShots": 50}')


def test_third_party_type_format_follows_the_keys() -> None:
    payload = load_payload({"program_id": "sampler", "parameters": {}}, "acme-qpu")
    assert isinstance(payload, Payload.QiskitPrimitive)
    with pytest.raises(InvalidInputError, match="cannot tell which input format"):
        load_payload({"foo": 1}, "acme-qpu")


def test_invalid_json_names_the_file_and_position(tmp_path: Path) -> None:
    path = write(tmp_path, '{"program_id": "sampler",,}')
    with pytest.raises(InvalidInputError, match=rf"input file {path} is not valid JSON: .*line 1"):
        load_payload(path, "local-emulator")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot read input file .*nope.json"):
        load_payload(tmp_path / "nope.json", "local-emulator")


@pytest.mark.parametrize(
    ("data", "kind", "message"),
    [
        ([1, 2], "local-emulator", "must hold a JSON object .*got a list"),
        ({"parameters": {}}, "local-emulator", "required key 'program_id' is missing"),
        ({"program_id": "sampler"}, "ibm-quantum-system", "required key 'parameters'"),
        ({"program_id": 3, "parameters": {}}, "local-emulator", "'program_id' must be"),
        ({"program_id": "sampler", "parameters": [1]}, "local-emulator", "'parameters' must be"),
        ({"program_id": "sampler", "parameters": "{oops"}, "local-emulator", "not valid JSON"),
        ({"sequence": {}, "job_runs": 0}, "pasqal-cloud", "'job_runs' must be a positive"),
        ({"sequence": {}, "job_runs": True}, "pasqal-cloud", "'job_runs' must be .*boolean"),
        ({"sequence": {}, "job_runs": "10"}, "pasqal-cloud", "'job_runs' must be .*text '10'"),
        ({"job_runs": 10}, "pasqal-cloud", "required key 'sequence'"),
        ({"iqmjson": {}, "job_type": "batch"}, "iqm-server", "'job_type' must be"),
        ({"iqmjson": {}, "use_timeslot": "yes"}, "iqm-server", "'use_timeslot' must be"),
        ({"iqmjson": {}, "tag": "x" * 51}, "iqm-server", "'tag' must be a text of at most 50"),
        ({"human_qir": {}, "input_params": {}}, "alice-bob-felis", "'human_qir' must be"),
        ({"human_qir": "q", "input_params": "[]"}, "alice-bob-felis", "'input_params' must"),
    ],
)
def test_wrong_shapes_name_the_key_and_the_expected_shape(
    tmp_path: Path, data: Any, kind: str, message: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(InvalidInputError, match=message) as info:
        load_payload(path, kind)
    assert str(path) in str(info.value)


def test_unknown_keys_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qrmi"):
        load_payload({"sequence": {}, "job_runs": 1, "job_run": 2}, "pasqal-cloud")
    assert "ignoring unknown key 'job_run'" in caplog.text
