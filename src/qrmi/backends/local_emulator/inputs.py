"""Cheap structural checks of primitive V2 input, without importing qiskit.

Used at ``task_start`` (so that a malformed payload is refused at once) and again by the engine
before any simulation. What needs qiskit (parsing OpenQASM, broadcasting parameter values
against observables) is checked by the engine; those errors reach the caller as a ``Failed``
task whose logs carry the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from qrmi.errors import InvalidInputError, UnsupportedPayloadError

__all__ = ["PROGRAM_IDS", "check_params", "check_program_id", "parse_input"]

#: The primitives the emulator runs, as IBM's ``program_id`` names them.
PROGRAM_IDS = ("estimator", "sampler")

# (fewest, most) entries of a pub: [circuit, params?, shots?] and
# [circuit, observables, params?, precision?].
_PUB_LENGTHS = {"sampler": (1, 3), "estimator": (2, 4)}
_PUB_FORMS = {
    "sampler": "[circuit, parameter_values?, shots?]",
    "estimator": "[circuit, observables, parameter_values?, precision?]",
}


def check_program_id(program_id: str) -> None:
    """Raises UnsupportedPayloadError unless ``program_id`` is ``sampler`` or ``estimator``."""
    if program_id not in PROGRAM_IDS:
        raise UnsupportedPayloadError(
            f"unknown program ID: {program_id!r}; the local emulator runs "
            + " and ".join(repr(p) for p in PROGRAM_IDS)
        )


def parse_input(text: str) -> dict[str, Any]:
    """Parse a ``QiskitPrimitive`` payload's ``input`` text into a JSON object.

    Raises:
        InvalidInputError: not JSON, or not an object.
    """
    try:
        params = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        detail = (
            f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else str(exc)
        )
        raise InvalidInputError(
            f"primitive input is not valid JSON ({detail}); pass the JSON text of "
            '{"pubs": [...], "version": 2}'
        ) from None
    if not isinstance(params, dict):
        raise InvalidInputError(
            f"primitive input must be a JSON object, got {type(params).__name__}; pass "
            '{"pubs": [...], "version": 2}'
        )
    return params


def check_params(program_id: str, params: Any) -> None:
    """Check the shape of primitive V2 input (pubs, version, shots, precision).

    Raises:
        UnsupportedPayloadError: unknown ``program_id``.
        InvalidInputError: the input does not have the primitive V2 shape; the message names
            the offending pub and what it should look like.
    """
    check_program_id(program_id)
    if not isinstance(params, Mapping):
        raise InvalidInputError(
            f"primitive input must be a JSON object, got {type(params).__name__}"
        )
    version = params.get("version", 2)
    if version != 2:
        raise InvalidInputError(
            f"primitive input has version {version!r}; the emulator runs V2 primitives only "
            '(SamplerV2 / EstimatorV2): set "version": 2'
        )
    pubs = params.get("pubs")
    if not isinstance(pubs, list) or not pubs:
        raise InvalidInputError(
            f'{program_id} input needs a non-empty "pubs" list of {_PUB_FORMS[program_id]}'
        )
    for index, pub in enumerate(pubs):
        _check_pub(program_id, index, pub)
    _check_shots(params.get("shots"), '"shots"')
    _check_precision(params.get("precision"), '"precision"')


def _check_pub(program_id: str, index: int, pub: Any) -> None:
    form = _PUB_FORMS[program_id]
    fewest, most = _PUB_LENGTHS[program_id]
    if not isinstance(pub, Sequence) or isinstance(pub, str | bytes):
        raise InvalidInputError(f"pub {index}: must be a list {form}, got {type(pub).__name__}")
    if not fewest <= len(pub) <= most:
        missing = " (the observables are missing)" if program_id == "estimator" else ""
        raise InvalidInputError(
            f"pub {index}: has {len(pub)} entries{missing}; a {program_id} pub is {form}"
        )
    circuit = pub[0]
    is_qpy = isinstance(circuit, Mapping) and circuit.get("__type__") == "QuantumCircuit"
    if not (isinstance(circuit, str) or is_qpy or _is_circuit_object(circuit)):
        raise InvalidInputError(
            f"pub {index}: the circuit must be OpenQASM 3 text (qiskit.qasm3.dumps) or a "
            f"QPY-encoded circuit, got {type(circuit).__name__}"
        )
    if program_id == "sampler" and len(pub) == 3:
        _check_shots(pub[2], f"pub {index}: shots")
    if program_id == "estimator":
        if pub[1] is None:
            raise InvalidInputError(
                f"pub {index}: the observables are missing; give a Pauli string such as "
                '"ZZ", a {"ZZ": 1.0} mapping, or a list of them'
            )
        if len(pub) == 4:
            _check_precision(pub[3], f"pub {index}: precision")


def _is_circuit_object(value: Any) -> bool:
    # Already-decoded input (a QuantumCircuit) when the engine is called in-process.
    return type(value).__name__ == "QuantumCircuit"


def _check_shots(value: Any, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(f"{what} must be a positive integer, got {value!r}")


def _check_precision(value: Any, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidInputError(f"{what} must be a non-negative number, got {value!r}")
