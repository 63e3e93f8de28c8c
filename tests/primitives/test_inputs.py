"""The IBM primitive V2 input the sampler and estimator build, and their argument checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from qiskit import qasm3
from qiskit.circuit import ClassicalRegister, Parameter, QuantumCircuit, QuantumRegister
from qiskit.quantum_info import SparsePauliOp

from qrmi.errors import InvalidInputError
from qrmi.primitives import QRMIBaseEstimatorV2, QRMIBaseSamplerV2
from qrmi.primitives.ibm import EstimatorV2, SamplerV2

from .doubles import ScriptedResource


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


def rotation() -> QuantumCircuit:
    qc = QuantumCircuit(1)
    qc.ry(Parameter("theta"), 0)
    qc.measure_all()
    return qc


@pytest.fixture
def resource() -> ScriptedResource:
    return ScriptedResource()


def test_sampler_input_has_the_reference_shape(resource: ScriptedResource) -> None:
    SamplerV2(resource).run([bell(), (rotation(), [[0.1], [0.2]], 77)], shots=500)
    data = resource.last_input()
    assert data["__program_id__"] == "sampler"
    assert data["version"] == 2
    assert data["support_qiskit"] is True
    assert data["shots"] == 500
    assert data["options"] == {}
    (qasm0, values0, shots0), (qasm1, values1, shots1) = data["pubs"]
    assert qasm0.startswith("OPENQASM 3.0;")
    assert values0 is None and shots0 == 500
    assert values1 == [[0.1], [0.2]] and shots1 == 77
    assert "input float[64] theta;" in qasm1


def test_sampler_default_shots_and_run_options(resource: ScriptedResource) -> None:
    options = {"default_shots": 99, "run_options": {"seed_simulator": 7}}
    SamplerV2(resource, options=options).run([bell()])
    data = resource.last_input()
    assert data["shots"] == 99
    assert data["pubs"][0][2] == 99
    assert data["options"] == {"seed_simulator": 7}


def test_sampler_exports_qasm_as_the_reference_does(resource: ScriptedResource) -> None:
    qc = QuantumCircuit(QuantumRegister(1, "q"), ClassicalRegister(1, "c"))
    qc.h(0)
    qc.measure(0, 0)
    with qc.switch(qc.clbits[0]) as case:
        with case(0):
            qc.x(0)
        with case(case.DEFAULT):
            qc.z(0)
    qc.measure(0, 0)
    SamplerV2(resource).run([qc])
    expected = qasm3.dumps(
        qc,
        disable_constants=True,
        allow_aliasing=True,
        experimental=qasm3.ExperimentalFeatures.SWITCH_CASE_V1,
    )
    assert resource.last_input()["pubs"][0][0] == expected


def test_estimator_input_has_the_reference_shape(resource: ScriptedResource) -> None:
    qc = QuantumCircuit(2)
    qc.ry(Parameter("a"), 0)
    qc.cx(0, 1)
    observables = [SparsePauliOp(["ZZ", "XX"], [1.0, 0.5]), SparsePauliOp("IZ")]
    EstimatorV2(resource).run([(qc, observables, [[0.3], [0.4]]), (bell_no_measure(), "ZZ")])
    data = resource.last_input()
    assert data["__program_id__"] == "estimator"
    assert data["version"] == 2 and data["support_qiskit"] is True
    assert data["precision"] == 0.015625
    assert data["options"] == {}
    qasm, obs, values, precision = data["pubs"][0]
    assert "input float[64] a;" in qasm
    assert obs == [{"ZZ": 1.0, "XX": 0.5}, {"IZ": 1.0}]
    assert values == [[0.3], [0.4]]
    assert precision == 0.015625
    assert data["pubs"][1][1:] == [{"ZZ": 1.0}, [], 0.015625]


def test_estimator_precision_from_run_and_pub(resource: ScriptedResource) -> None:
    qc = bell_no_measure()
    EstimatorV2(resource, options={"default_precision": 0.1}).run(
        [(qc, "ZZ"), (qc, "XX", None, 0.02)], precision=0.05
    )
    data = resource.last_input()
    assert data["precision"] == 0.05
    assert [pub[3] for pub in data["pubs"]] == [0.05, 0.02]


def bell_no_measure() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    return qc


def test_primitives_satisfy_qiskits_contracts(resource: ScriptedResource) -> None:
    from qiskit.primitives import BaseEstimatorV2, BaseSamplerV2

    assert isinstance(SamplerV2(resource), BaseSamplerV2)
    assert isinstance(SamplerV2(resource), QRMIBaseSamplerV2)
    assert isinstance(EstimatorV2(resource), BaseEstimatorV2)
    assert isinstance(EstimatorV2(resource), QRMIBaseEstimatorV2)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"shots": 10}, "unknown option(s) 'shots'"),
        ({"default_shots": 0}, "'default_shots' must be a positive integer"),
        ({"default_shots": 1.5}, "'default_shots' must be a positive integer"),
        ({"run_options": [1]}, "'run_options' must be a dict"),
        ({"run_options": {"x": object()}}, "JSON-serialisable"),
        ("shots=5", "'options' must be a dict"),
    ],
)
def test_sampler_rejects_bad_options(
    resource: ScriptedResource, options: object, fragment: str
) -> None:
    with pytest.raises(InvalidInputError, match=_escape(fragment)):
        SamplerV2(resource, options=options)  # type: ignore[arg-type]


def test_estimator_rejects_bad_options(resource: ScriptedResource) -> None:
    with pytest.raises(InvalidInputError, match="valid options are default_precision"):
        EstimatorV2(resource, options={"precision": 0.1})
    with pytest.raises(InvalidInputError, match="'default_precision' must be a positive"):
        EstimatorV2(resource, options={"default_precision": 0})


def test_not_a_resource_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="lacks task_start"):
        SamplerV2("ibm_fez")
    with pytest.raises(InvalidInputError, match="QRMIService"):
        EstimatorV2(object())


def test_a_lone_circuit_must_be_wrapped(resource: ScriptedResource) -> None:
    with pytest.raises(InvalidInputError, match=r"run\(\[circuit\]\)"):
        SamplerV2(resource).run(bell())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="empty"):
        SamplerV2(resource).run([])
    assert resource.tasks == {}


def test_bad_pubs_name_their_index(resource: ScriptedResource) -> None:
    with pytest.raises(InvalidInputError, match=r"pubs\[1\] is invalid.*number of values"):
        SamplerV2(resource).run([bell(), rotation()])
    with pytest.raises(InvalidInputError, match=r"'shots' must be a positive integer"):
        SamplerV2(resource).run([bell()], shots=0)
    with pytest.raises(InvalidInputError, match=r"pubs\[0\] is invalid.*number of qubits"):
        EstimatorV2(resource).run([(bell_no_measure(), "ZZZ")])
    with pytest.raises(InvalidInputError, match=r"'precision' must be a positive number"):
        EstimatorV2(resource).run([(bell_no_measure(), "ZZ")], precision=-1.0)
    assert resource.tasks == {}


def test_classical_registers_must_make_field_names(resource: ScriptedResource) -> None:
    qc = QuantumCircuit(QuantumRegister(1), ClassicalRegister(1, "class"))
    qc.measure(0, 0)
    with pytest.raises(InvalidInputError, match="'class'.*Python identifier"):
        SamplerV2(resource).run([qc])
    empty = QuantumCircuit(QuantumRegister(1), ClassicalRegister(0, "none"))
    with pytest.raises(InvalidInputError, match="empty classical register 'none'"):
        SamplerV2(resource).run([empty])


def test_a_circuit_without_measurements_warns(resource: ScriptedResource) -> None:
    with pytest.warns(UserWarning, match="no classical register"):
        SamplerV2(resource).run([bell_no_measure()])


def test_numpy_values_are_sent_as_json(resource: ScriptedResource) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SamplerV2(resource).run([(rotation(), np.array([0.5]), np.int64(10))], shots=np.int64(20))
    assert resource.last_input()["pubs"][0][1:] == [[0.5], 10]


def test_a_backend_is_accepted_in_place_of_its_resource(resource: ScriptedResource) -> None:
    class BackendLike:
        qrmi = resource

    SamplerV2(BackendLike()).run([bell()])
    assert len(resource.tasks) == 1


def _escape(text: str) -> str:
    import re

    return re.escape(text)
