"""Task input files: one JSON object per task, in the reference ``task_runner``'s formats.

The resource type decides the format:

======================================  ==================  =====================================
resource types                          payload             input file
======================================  ==================  =====================================
local-emulator, ibm-quantum-system,     ``QiskitPrimitive``  ``{"program_id": "sampler",
ibm-quantum-compute-service,                                 "parameters": {<V2 primitive input>}}``
qiskit-runtime-service
pasqal-cloud, pasqal-local              ``PasqalCloud``      ``{"sequence": {...} or "...",
                                                             "job_runs": 100}``
iqm-server                              ``IQMServer``        ``{"iqmjson": {...} or "...",
                                                             "job_type": "circuit",
                                                             "use_timeslot": false, "tag": null}``
alice-bob-felis                         ``AliceBobFelis``    ``{"human_qir": "...",
                                                             "input_params": {...} or "..."}``
oqtopus                                 ``Oqtopus``          ``{"job_spec": {...} or "..."}``
======================================  ==================  =====================================

Differences from the reference, on purpose: IQM's ``job_type``, ``use_timeslot`` and ``tag``
are optional; a Felis QIR string is passed as it is (the reference JSON-encodes it a second
time); a Pasqal sequence may be an object or JSON text. For third-party resource types the
format is recognised from the keys of the file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from qrmi.errors import InvalidInputError
from qrmi.models import Payload, ResourceType

__all__ = ["FORMATS", "load_payload", "payload_variant"]

logger = logging.getLogger(__name__)

#: Payload variant -> the shape of its input file, as shown in error messages.
FORMATS: Mapping[str, str] = {
    "QiskitPrimitive": '{"program_id": "sampler" | "estimator", "parameters": {<V2 primitive '
    'input: "pubs", "version", ...>}}',
    "PasqalCloud": '{"sequence": <Pulser abstract representation, object or JSON text>, '
    '"job_runs": <positive integer>}',
    "IQMServer": '{"iqmjson": <IQM run request, object or JSON text>, "job_type": "circuit" | '
    '"run" | "sweep" (optional), "use_timeslot": true | false (optional), "tag": <text> '
    "(optional)}",
    "AliceBobFelis": '{"human_qir": <QIR text>, "input_params": <object or JSON text, e.g. '
    '{"nbShots": 100}>}',
    "Oqtopus": '{"job_spec": <OQTOPUS job spec, object or JSON text, e.g. {"program": '
    '"OPENQASM 3; ...", "shots": 1000}>}',
}

_VARIANT_OF_TYPE: Mapping[ResourceType, str] = {
    ResourceType.LocalEmulator: "QiskitPrimitive",
    ResourceType.IBMQuantumSystem: "QiskitPrimitive",
    ResourceType.IBMQuantumComputeService: "QiskitPrimitive",
    ResourceType.IBMQiskitRuntimeService: "QiskitPrimitive",
    ResourceType.PasqalCloud: "PasqalCloud",
    ResourceType.PasqalLocal: "PasqalCloud",
    ResourceType.IQMServer: "IQMServer",
    ResourceType.AliceBobFelis: "AliceBobFelis",
    ResourceType.OQTOPUS: "Oqtopus",
}

# The key that identifies each format when the resource type does not decide it.
_MARKER_KEYS = {
    "program_id": "QiskitPrimitive",
    "sequence": "PasqalCloud",
    "iqmjson": "IQMServer",
    "human_qir": "AliceBobFelis",
    "job_spec": "Oqtopus",
}

_IQM_JOB_TYPES = ("circuit", "run", "sweep")
_MAX_JOB_RUNS = 2**31 - 1  # the vendors' 32-bit shot counters
_MAX_TAG_LENGTH = 50


def payload_variant(resource_type: ResourceType | str | int) -> str | None:
    """The payload variant a resource type takes, or ``None`` for third-party types."""
    try:
        kind = ResourceType.coerce(resource_type)
    except ValueError:  # UnsupportedResourceTypeError: a third-party type string
        return None
    return _VARIANT_OF_TYPE.get(kind)


def load_payload(
    source: str | os.PathLike[str] | Mapping[str, Any],
    resource_type: ResourceType | str | int,
) -> Payload:
    """Read a task input file (or an already parsed object) into the payload for a resource type.

    Raises:
        InvalidInputError: the file cannot be read, is not JSON, or does not have the format of
            the resource type; the message names the file, the key and the expected shape.
    """
    data, where = _read(source)
    variant = payload_variant(resource_type) or _infer_variant(data, where, resource_type)
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            f"{where} must hold a JSON object {FORMATS[variant]}; got {_kind(data)}"
        )
    _warn_unknown_keys(data, where, variant)
    return _PARSERS[variant](data, where)


def _read(source: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[Any, str]:
    if isinstance(source, Mapping):
        return source, "task input"
    path = Path(source)
    where = f"input file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read {where}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{where} is not UTF-8 text; it must hold JSON") from None
    try:
        return json.loads(text), where
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None


def _infer_variant(data: Any, where: str, resource_type: object) -> str:
    found = [v for k, v in _MARKER_KEYS.items() if isinstance(data, Mapping) and k in data]
    if len(found) == 1:
        return found[0]
    shapes = "\n".join(f"  {name}: {shape}" for name, shape in FORMATS.items())
    raise InvalidInputError(
        f"{where}: cannot tell which input format resource type {resource_type!r} uses; "
        f"write exactly one of these shapes:\n{shapes}"
    )


def _warn_unknown_keys(data: Mapping[str, Any], where: str, variant: str) -> None:
    known = _KNOWN_KEYS[variant]
    for key in data:
        if key not in known:
            logger.warning(
                "%s: ignoring unknown key %r; the %s format has keys %s",
                where,
                key,
                variant,
                ", ".join(known),
            )


def _parse_qiskit(data: Mapping[str, Any], where: str) -> Payload:
    program_id = _require(data, "program_id", where, "QiskitPrimitive")
    if not isinstance(program_id, str) or not program_id.strip():
        raise _wrong(where, "program_id", 'a primitive name such as "sampler" or "estimator"', data)
    parameters = _json_object(data, "parameters", where, "QiskitPrimitive")
    return Payload.QiskitPrimitive(input=parameters, program_id=program_id.strip())


def _parse_pasqal(data: Mapping[str, Any], where: str) -> Payload:
    sequence = _json_object(data, "sequence", where, "PasqalCloud")
    job_runs = _require(data, "job_runs", where, "PasqalCloud")
    if not _is_int(job_runs) or not 0 < job_runs <= _MAX_JOB_RUNS:
        raise _wrong(where, "job_runs", "a positive integer (the number of shots)", data)
    return Payload.PasqalCloud(sequence=sequence, job_runs=job_runs)


def _parse_iqm(data: Mapping[str, Any], where: str) -> Payload:
    iqmjson = _json_object(data, "iqmjson", where, "IQMServer")
    job_type = data.get("job_type")
    if job_type is None:
        job_type = "circuit"
    if job_type not in _IQM_JOB_TYPES:
        raise _wrong(where, "job_type", " or ".join(f'"{t}"' for t in _IQM_JOB_TYPES), data)
    use_timeslot = data.get("use_timeslot")
    if use_timeslot is not None and not isinstance(use_timeslot, bool):
        raise _wrong(where, "use_timeslot", "true, false or null", data)
    tag = data.get("tag")
    if tag is not None and (not isinstance(tag, str) or len(tag) > _MAX_TAG_LENGTH):
        raise _wrong(where, "tag", f"a text of at most {_MAX_TAG_LENGTH} characters, or null", data)
    return Payload.IQMServer(iqmjson=iqmjson, job_type=job_type, use_timeslot=use_timeslot, tag=tag)


def _parse_felis(data: Mapping[str, Any], where: str) -> Payload:
    human_qir = _require(data, "human_qir", where, "AliceBobFelis")
    if not isinstance(human_qir, str) or not human_qir.strip():
        raise _wrong(where, "human_qir", "the QIR program as text", data)
    input_params = _json_object(data, "input_params", where, "AliceBobFelis")
    return Payload.AliceBobFelis(human_qir=human_qir, input_params=input_params)


def _parse_oqtopus(data: Mapping[str, Any], where: str) -> Payload:
    return Payload.Oqtopus(job_spec=_json_object(data, "job_spec", where, "Oqtopus"))


def _require(data: Mapping[str, Any], key: str, where: str, variant: str) -> Any:
    if key not in data or data[key] is None:
        raise InvalidInputError(
            f"{where}: required key {key!r} is missing; the {variant} input format is "
            f"{FORMATS[variant]}"
        )
    return data[key]


def _json_object(data: Mapping[str, Any], key: str, where: str, variant: str) -> str:
    """``data[key]`` as JSON text of an object: objects are dumped, JSON text is checked."""
    value = _require(data, key, where, variant)
    if isinstance(value, Mapping):
        return json.dumps(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"{where}: key {key!r} is text but not valid JSON ({exc.msg} at column "
                f"{exc.colno}); give a JSON object or its JSON text"
            ) from None
        if isinstance(parsed, Mapping):
            return value
    raise _wrong(where, key, "a JSON object (or its JSON text)", data)


def _wrong(where: str, key: str, expected: str, data: Mapping[str, Any]) -> InvalidInputError:
    return InvalidInputError(f"{where}: key {key!r} must be {expected}; got {_kind(data[key])}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"text {shown!r}"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_PARSERS: Mapping[str, Callable[[Mapping[str, Any], str], Payload]] = {
    "QiskitPrimitive": _parse_qiskit,
    "PasqalCloud": _parse_pasqal,
    "IQMServer": _parse_iqm,
    "AliceBobFelis": _parse_felis,
    "Oqtopus": _parse_oqtopus,
}

_KNOWN_KEYS: Mapping[str, tuple[str, ...]] = {
    "QiskitPrimitive": ("program_id", "parameters"),
    "PasqalCloud": ("sequence", "job_runs"),
    "IQMServer": ("iqmjson", "job_type", "use_timeslot", "tag"),
    "AliceBobFelis": ("human_qir", "input_params"),
    "Oqtopus": ("job_spec",),
}
