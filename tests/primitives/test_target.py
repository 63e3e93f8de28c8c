"""get_target / get_backend from IBM configuration + properties JSON (fake_provider snapshots)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import qiskit_ibm_runtime
from qiskit.circuit import QuantumCircuit
from qiskit.providers import BackendV2
from qiskit.transpiler import Target
from qiskit.transpiler.preset_passmanagers import generate_preset_pass_manager

from qrmi.errors import InvalidInputError, ServiceError, UnsupportedFunctionError
from qrmi.models import Target as QrmiTarget
from qrmi.primitives.ibm import QRMIBackend, get_backend, get_target

from .doubles import ScriptedResource

SNAPSHOTS = Path(qiskit_ibm_runtime.__file__).parent / "fake_provider" / "backends"


def snapshot(name: str, *, with_properties: bool = True) -> str:
    conf = json.loads((SNAPSHOTS / name / f"conf_{name}.json").read_text())
    props = None
    if with_properties:
        props = json.loads((SNAPSHOTS / name / f"props_{name}.json").read_text())
    return json.dumps({"configuration": conf, "properties": props})


class CountingResource(ScriptedResource):
    target_calls: int = 0

    def target(self) -> QrmiTarget:
        self.target_calls += 1
        return super().target()


def test_target_of_a_snapshot_matches_qiskit_ibm_runtimes_fake() -> None:
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    resource = ScriptedResource(target_json=snapshot("manila"))
    target = get_target(resource)
    expected = FakeManilaV2().target
    assert isinstance(target, Target)
    assert target.num_qubits == 5
    assert set(target.operation_names) == set(expected.operation_names)
    assert set(target.build_coupling_map().get_edges()) == set(
        expected.build_coupling_map().get_edges()
    )
    assert target["cx"][(0, 1)].error == pytest.approx(expected["cx"][(0, 1)].error)


def test_target_is_cached_per_resource_and_refreshable() -> None:
    resource = CountingResource(target_json=snapshot("manila"))
    first = get_target(resource)
    assert get_target(resource) is first
    assert get_backend(resource).target is first
    assert resource.target_calls == 1
    assert get_target(resource, refresh=True) is not first
    assert resource.target_calls == 2
    other = CountingResource(target_json=snapshot("manila"))
    assert get_target(other) is not get_target(resource)


def test_fractional_gates_only_on_request() -> None:
    resource = ScriptedResource(target_json=snapshot("fractional"))
    plain = get_target(resource)
    fractional = get_target(resource, use_fractional_gates=True)
    assert "rzz" not in plain.operation_names
    assert "rzz" in fractional.operation_names
    assert "rzz" in get_backend(resource, use_fractional_gates=True).target.operation_names


def test_missing_properties_still_give_a_target() -> None:
    resource = ScriptedResource(target_json=snapshot("manila", with_properties=False))
    target = get_target(resource)
    assert target.num_qubits == 5
    assert get_backend(resource).properties() is None


def test_backend_is_a_backend_v2_that_does_not_run() -> None:
    resource = ScriptedResource(name="my_qpu", target_json=snapshot("manila"))
    backend = get_backend(resource)
    assert isinstance(backend, BackendV2) and isinstance(backend, QRMIBackend)
    assert backend.name == "my_qpu"  # from metadata()
    assert backend.num_qubits == 5
    assert backend.qrmi is resource
    assert backend.configuration().backend_name == "ibmq_manila"
    assert backend.basis_gates == backend.configuration().basis_gates  # configuration fallback
    assert backend.properties().qubits
    assert backend.status().operational is True
    assert backend.max_circuits is None
    with pytest.raises(UnsupportedFunctionError, match="SamplerV2"):
        backend.run(QuantumCircuit(1))
    with pytest.raises(AttributeError):
        _ = backend.no_such_attribute


def test_backend_refresh_refetches() -> None:
    resource = CountingResource(target_json=snapshot("manila"))
    backend = get_backend(resource)
    before = resource.target_calls
    backend.refresh()
    assert resource.target_calls == before + 1
    assert backend.target.num_qubits == 5


def test_transpiling_for_a_127_qubit_target_gives_isa_circuits() -> None:
    resource = ScriptedResource(target_json=snapshot("sherbrooke"))
    target = get_target(resource)
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.measure_all()
    isa = generate_preset_pass_manager(optimization_level=1, target=target).run(qc)
    assert isa.num_qubits == 127
    for instruction in isa.data:
        qubits = tuple(isa.find_bit(q).index for q in instruction.qubits)
        name = instruction.operation.name
        assert name == "barrier" or target.instruction_supported(name, qubits)


@pytest.mark.parametrize(
    ("target_json", "error", "fragment"),
    [
        ("not json", ServiceError, "is not JSON"),
        ('[{"device_type": "FRESNEL"}]', InvalidInputError, "IBM-style device"),
        ('{"configuration": null, "properties": null}', InvalidInputError, "IBM-style"),
        ('{"configuration": {"n_qubits": "x"}}', ServiceError, "not a valid IBM backend"),
    ],
)
def test_bad_descriptions_raise_typed_errors(
    target_json: str, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        get_target(ScriptedResource(target_json=target_json))


def test_an_object_without_target_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="target"):
        get_target("ibm_fez")
