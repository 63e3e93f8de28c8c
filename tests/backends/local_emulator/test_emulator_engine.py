"""The engine, called in-process: results in IBM's encoding, methods, noise, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from emulator_helpers import BELL, BELL_STATE
from qiskit import ClassicalRegister, QuantumCircuit, qasm3, transpile
from qiskit.circuit import Parameter, ParameterVector
from qiskit.quantum_info import SparsePauliOp
from qiskit_ibm_runtime.decoders.result_decoder import ResultDecoder
from qiskit_ibm_runtime.fake_provider import FakeSherbrooke
from qiskit_ibm_runtime.json import RuntimeEncoder

from qrmi.backends.local_emulator import engine
from qrmi.errors import InvalidInputError, UnsupportedPayloadError


def run(program_id: str, pubs: list[Any], **kwargs: Any) -> Any:
    params = {"pubs": pubs, "version": 2, "support_qiskit": True}
    params.update(kwargs.pop("params", {}))
    return ResultDecoder.decode(engine.run_primitive(program_id, params, **kwargs))


def test_sampler_result_decodes_to_a_primitive_result_keyed_by_register() -> None:
    result = run("sampler", [[BELL, None, 500]], seed=7)

    assert type(result).__name__ == "PrimitiveResult"
    assert type(result[0]).__name__ == "SamplerPubResult"
    counts = result[0].data.c.get_counts()
    assert set(counts) <= {"00", "11"}
    assert sum(counts.values()) == 500
    assert result[0].metadata["shots"] == 500


def test_result_text_is_runtime_encoder_json() -> None:
    text = engine.run_primitive("sampler", {"pubs": [[BELL, None, 10]]}, seed=1)

    decoded = json.loads(text)
    assert decoded["__type__"] == "PrimitiveResult"
    assert decoded["__value__"]["pub_results"][0]["__type__"] == "SamplerPubResult"


def test_each_classical_register_gets_its_bit_array() -> None:
    circuit = QuantumCircuit(3)
    circuit.x(0)
    circuit.add_register(first := ClassicalRegister(1, "alpha"))
    circuit.add_register(second := ClassicalRegister(2, "beta"))
    circuit.measure(0, first[0])
    circuit.measure([1, 2], second)

    data = run("sampler", [[qasm3.dumps(circuit), None, 50]])[0].data

    assert data.alpha.get_counts() == {"1": 50}
    assert data.beta.get_counts() == {"00": 50}


def test_same_seed_gives_the_same_counts() -> None:
    first = run("sampler", [[BELL, None, 300]], seed=11)[0].data.c.get_counts()
    second = run("sampler", [[BELL, None, 300]], seed=11)[0].data.c.get_counts()

    assert first == second


def test_shots_fall_back_to_input_then_options_then_default() -> None:
    assert run("sampler", [[BELL]], params={"shots": 64})[0].data.c.num_shots == 64
    options = {"options": {"default_shots": 32}}
    assert run("sampler", [[BELL]], params=options)[0].data.c.num_shots == 32
    assert run("sampler", [[BELL]])[0].data.c.num_shots == engine.DEFAULT_SHOTS


def test_estimator_of_a_bell_state() -> None:
    result = run("estimator", [[BELL_STATE, ["ZZ", "XX", "IZ", {"ZZ": 0.5, "II": 1.0}]]])

    assert type(result[0]).__name__ == "PubResult"
    np.testing.assert_allclose(result[0].data.evs, [1.0, 1.0, 0.0, 1.5], atol=1e-9)
    assert result[0].data.stds.shape == (4,)


def test_parameterised_sampler_broadcasts_over_parameter_values() -> None:
    theta = Parameter("theta")
    circuit = QuantumCircuit(1, 1)
    circuit.rx(theta, 0)
    circuit.measure(0, 0)

    result = run("sampler", [[qasm3.dumps(circuit), [[0.0], [np.pi]], 40]])

    bits = result[0].data.c
    assert bits.shape == (2,)
    assert bits[0].get_counts() == {"0": 40}
    assert bits[1].get_counts() == {"1": 40}


def test_parameterised_estimator_with_named_values() -> None:
    a, b = Parameter("a"), Parameter("b")
    circuit = QuantumCircuit(2)
    circuit.ry(a, 0)
    circuit.ry(b, 1)
    pub = [qasm3.dumps(circuit), ["ZI", "IZ"], {"a": [0.0, 0.0], "b": [np.pi, 0.0]}]

    evs = run("estimator", [[pub[0], [["ZI"], ["IZ"]], pub[2]]])[0].data.evs

    assert evs.shape == (2, 2)
    np.testing.assert_allclose(evs, [[-1.0, 1.0], [1.0, 1.0]], atol=1e-9)


def test_positional_values_follow_the_declared_input_order() -> None:
    # Eleven vector elements: as text, "_v_10_" sorts before "_v_2_".
    v = ParameterVector("v", 11)
    circuit = QuantumCircuit(6)
    for i, p in enumerate(v):
        circuit.ry(p, i % 6)
    values = [np.pi if i == 10 else 0.0 for i in range(11)]  # flips qubit 4 only
    text = qasm3.dumps(circuit)
    evs = run("estimator", [[text, "IZIIII", values]])[0].data.evs
    np.testing.assert_allclose(evs, -1.0, atol=1e-9)
    measured = circuit.copy()
    measured.measure_all()
    counts = run("sampler", [[qasm3.dumps(measured), values, 20]])[0].data.meas.get_counts()
    assert counts == {"010000": 20}


def test_qpy_encoded_circuits_are_accepted() -> None:
    circuit = QuantumCircuit(2, 2)
    circuit.x(1)
    circuit.measure([0, 1], [0, 1])
    params = json.loads(
        json.dumps({"pubs": [(circuit, None, 20)], "version": 2}, cls=RuntimeEncoder)
    )

    result = ResultDecoder.decode(engine.run_primitive("sampler", params))

    assert result[0].data.c.get_counts() == {"10": 20}


def test_openqasm2_circuits_are_accepted() -> None:
    text = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\ncreg c[1];\nx q[0];\n'
    text += "measure q[0] -> c[0];\n"

    assert run("sampler", [[text, None, 5]])[0].data.c.get_counts() == {"1": 5}


def test_small_circuits_use_an_exact_statevector() -> None:
    result = run("sampler", [[BELL, None, 10]])

    assert result[0].metadata["simulator"]["method"] == "statevector"
    assert result[0].metadata["simulator"]["active_qubits"] == 2


def test_weakly_entangled_circuit_on_a_127_qubit_device_runs_as_mps() -> None:
    size = 32
    ghz = QuantumCircuit(size, size)
    ghz.h(0)
    for qubit in range(size - 1):
        ghz.cx(qubit, qubit + 1)
    ghz.measure(range(size), range(size))
    isa = transpile(ghz, FakeSherbrooke(), optimization_level=1, seed_transpiler=3)

    result = run("sampler", [[qasm3.dumps(isa), None, 200]], device="fake_sherbrooke", seed=5)

    assert result[0].metadata["simulator"]["method"] == "matrix_product_state"
    assert set(result[0].data.c.get_counts()) == {"0" * size, "1" * size}


def test_estimator_on_a_127_qubit_device_keeps_idle_qubits_out() -> None:
    size = 24
    ghz = QuantumCircuit(size)
    ghz.h(0)
    for qubit in range(size - 1):
        ghz.cx(qubit, qubit + 1)
    isa = transpile(ghz, FakeSherbrooke(), optimization_level=1, seed_transpiler=3)
    observable = SparsePauliOp("Z" * size).apply_layout(isa.layout)

    result = run(
        "estimator", [[qasm3.dumps(isa), observable.paulis[0].to_label()]], device="sherbrooke"
    )

    np.testing.assert_allclose(result[0].data.evs, 1.0, atol=1e-9)
    assert result[0].metadata["simulator"]["method"] == "matrix_product_state"


def test_noise_gives_non_ideal_counts() -> None:
    result = run("sampler", [[BELL, None, 4000]], noise=True, seed=3)

    counts = result[0].data.c.get_counts()
    assert counts.get("01", 0) + counts.get("10", 0) > 0
    assert result[0].metadata["simulator"]["noise"] is True


def test_noise_lowers_the_estimated_correlation() -> None:
    evs = run("estimator", [[BELL_STATE, "ZZ", None, 0.0]], noise=True, seed=3)[0].data.evs

    assert 0.5 < float(evs) < 0.9999


def test_devices_are_the_bundled_snapshots() -> None:
    names = engine.available_devices()

    assert {"fake_perth", "fake_sherbrooke", "fake_torino", "fake_fez"} <= set(names)
    assert engine.DEFAULT_DEVICE in names


def test_device_snapshot_accepts_aliases_and_returns_json_dicts() -> None:
    conf, props = engine.device_snapshot("ibm_sherbrooke")

    assert conf["n_qubits"] == 127
    assert conf["backend_name"] == "fake_sherbrooke"
    assert "qubits" in props
    json.dumps([conf, props])


def test_unknown_device_lists_the_valid_names() -> None:
    with pytest.raises(InvalidInputError, match="fake_perth"):
        engine.device_snapshot("ibm_nowhere")


# ----- bad input -----------------------------------------------------------------------------


def too_wide() -> str:
    circuit = QuantumCircuit(9, 9)
    circuit.h(range(9))
    circuit.measure(range(9), range(9))
    return qasm3.dumps(circuit)


def too_entangled() -> str:
    rng = np.random.default_rng(0)
    circuit = QuantumCircuit(60)
    for _ in range(300):
        a, b = rng.choice(60, 2, replace=False)
        circuit.h(int(a))
        circuit.cx(int(a), int(b))
    circuit.measure_all()
    return qasm3.dumps(circuit)


BAD_INPUTS = [
    ("sampler", {"version": 2}, InvalidInputError, '"pubs"'),
    ("sampler", {"pubs": []}, InvalidInputError, '"pubs"'),
    ("sampler", {"pubs": "x"}, InvalidInputError, '"pubs"'),
    ("sampler", {"pubs": [BELL]}, InvalidInputError, "pub 0: must be a list"),
    ("sampler", {"pubs": [[BELL, None, 10, 4]]}, InvalidInputError, "pub 0: has 4 entries"),
    ("sampler", {"pubs": [[BELL], [42]]}, InvalidInputError, "pub 1: the circuit must be"),
    ("sampler", {"pubs": [[BELL, None, -5]]}, InvalidInputError, "pub 0: shots"),
    ("sampler", {"pubs": [[BELL]], "shots": 0}, InvalidInputError, '"shots"'),
    ("sampler", {"pubs": [[BELL]], "version": 1}, InvalidInputError, "version"),
    ("sampler", {"pubs": [["OPENQASM 3.0; qubit q; foo q;"]]}, InvalidInputError, "OpenQASM"),
    ("sampler", {"pubs": [[BELL, None, 10**6]]}, InvalidInputError, "shots exceed"),
    ("sampler", {"pubs": [[BELL, [0.1]]]}, InvalidInputError, "pub 0"),
    ("estimator", {"pubs": [[BELL_STATE]]}, InvalidInputError, "observables are missing"),
    ("estimator", {"pubs": [[BELL_STATE, None]]}, InvalidInputError, "observables are missing"),
    ("estimator", {"pubs": [[BELL_STATE, "ZQ"]]}, InvalidInputError, "pub 0"),
    ("estimator", {"pubs": [[BELL_STATE, "ZZ", None, -1]]}, InvalidInputError, "precision"),
    ("noiselearner", {"pubs": [[BELL]]}, UnsupportedPayloadError, "'sampler'"),
]


@pytest.mark.parametrize(("program_id", "params", "error", "message"), BAD_INPUTS)
def test_bad_input_is_refused_with_a_message(
    program_id: str, params: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        engine.run_primitive(program_id, params)


def test_a_circuit_wider_than_the_device_is_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"pub 0: the circuit has 9 qubits .* has 7"):
        engine.run_primitive("sampler", {"pubs": [[too_wide()]]})


@pytest.mark.slow
def test_a_circuit_too_entangled_for_an_exact_mps_runs_approximately() -> None:
    notes: list[str] = []

    result = run(
        "sampler", [[too_entangled(), None, 100]], device="fake_sherbrooke", seed=1, notes=notes
    )

    simulator = result[0].metadata["simulator"]
    assert simulator["method"] == "matrix_product_state"
    assert simulator["max_bond_dimension"] == engine.Limits().mps_max_bond_dimension
    assert simulator["approximate"] is True
    assert simulator["truncations"] > 0 and simulator["discarded_weight"] > 0
    assert result.metadata["emulator"]["approximate"] is True
    assert len(notes) == 1 and "APPROXIMATE" in notes[0] and "discarding" in notes[0]
    assert sum(result[0].data.meas.get_counts().values()) == 100


def chain(width: int = 30, layers: int = 40) -> str:
    """A chain whose cuts each see ``layers`` gates (beyond the exact bound) yet whose real
    bond dimension stays at 2, so a cap truncates nothing."""
    circuit = QuantumCircuit(width)
    circuit.h(0)
    for _ in range(layers):
        for qubit in range(width - 1):
            circuit.cx(qubit, qubit + 1)
    circuit.measure_all()
    return qasm3.dumps(circuit)


def test_a_capped_mps_that_fits_reports_an_exact_result() -> None:
    notes: list[str] = []

    result = run("sampler", [[chain(), None, 50]], device="fake_sherbrooke", notes=notes)

    simulator = result[0].metadata["simulator"]
    assert simulator["approximate"] is False and simulator["truncations"] == 0
    assert result.metadata["emulator"]["approximate"] is False
    assert "exact" in notes[0]
    assert len(result[0].data.meas.get_counts()) <= 2  # a product of two basis states


def test_the_bond_dimension_cap_is_a_setting() -> None:
    limits = engine.Limits(mps_max_bond_dimension=4)

    result = run("sampler", [[chain(), None, 10]], device="fake_sherbrooke", limits=limits)

    assert result[0].metadata["simulator"]["max_bond_dimension"] == 4


def test_a_circuit_beyond_even_an_approximate_simulation_is_refused() -> None:
    limits = engine.Limits(timeout_seconds=0.01)

    with pytest.raises(InvalidInputError, match="time budget of 0.01 s") as caught:
        engine.run_primitive(
            "sampler", {"pubs": [[too_entangled()]]}, device="fake_sherbrooke", limits=limits
        )
    assert "QRMI_LOCAL_TASK_TIMEOUT_SECONDS" in str(caught.value)


def test_unknown_device_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="QRMI_LOCAL_DEVICE"):
        engine.run_primitive("sampler", {"pubs": [[BELL]]}, device="nowhere")


def test_user_defined_gates_are_expanded_not_refused() -> None:
    text = BELL.replace("h q[0];\ncx q[0], q[1];", "bell q[0], q[1];").replace(
        "bit[2] c;", "gate bell a, b { h a; cx a, b; }\nbit[2] c;"
    )

    counts = run("sampler", [[text, None, 100]], seed=2)[0].data.c.get_counts()

    assert set(counts) <= {"00", "11"} and sum(counts.values()) == 100


@pytest.mark.slow
def test_engine_survives_use_from_short_lived_threads() -> None:
    # Regression: importing the simulator in a thread that then exited made the next
    # simulation on another thread crash the whole process (SIGSEGV).
    script = f"""
import threading
from qrmi.backends.local_emulator import engine
BELL = {BELL!r}
def sampler():
    engine.run_primitive("sampler", {{"pubs": [[BELL, None, 10]], "version": 2}})
def estimator():
    circuit = BELL.split("c[0] = measure")[0]
    engine.run_primitive("estimator", {{"pubs": [[circuit, "ZZ"]], "version": 2}})
for job in (estimator, sampler, sampler):
    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
print("survived")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "survived"


@pytest.mark.slow
def test_truncations_of_an_earlier_run_are_not_reported_again() -> None:
    # Regression: Aer keeps its MPS log across runs in one process, so a run that truncated
    # nothing reported the truncations of the run before it.
    run("sampler", [[too_entangled(), None, 10]], device="fake_sherbrooke")

    result = run("sampler", [[chain(), None, 10]], device="fake_sherbrooke")

    assert result[0].metadata["simulator"]["truncations"] == 0
    assert result[0].metadata["simulator"]["approximate"] is False


def test_a_wide_shallow_circuit_that_fits_as_a_statevector_runs_exactly() -> None:
    # 22 qubits with long-range gates: an exact MPS could need more than half of a 128 MiB
    # budget, a statevector needs 64 MiB.
    rng = np.random.default_rng(3)
    circuit = QuantumCircuit(22)
    circuit.h(range(22))
    for _ in range(120):
        a, b = rng.choice(22, 2, replace=False)
        circuit.cx(int(a), int(b))
    circuit.measure_all()

    limits = engine.Limits(memory_mb=128)

    result = run(
        "sampler", [[qasm3.dumps(circuit), None, 20]], device="fake_sherbrooke", limits=limits
    )

    simulator = result[0].metadata["simulator"]
    assert simulator["method"] == "statevector" and simulator["approximate"] is False


def test_threads_that_first_simulate_together_all_get_the_whole_simulator() -> None:
    """The module is in ``sys.modules`` from the start of its (1 s+) import on: a second thread
    must wait for the end of the import, not take the half-made module (the IBM fakes start
    several tasks at once on a fresh server)."""
    program = textwrap.dedent(
        """
        import threading
        from qrmi.backends.local_emulator import engine

        barrier = threading.Barrier(6)
        seen = []

        def first_use():
            barrier.wait()
            seen.append(hasattr(engine._simulator(), "run"))

        threads = [threading.Thread(target=first_use) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(seen)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == str([True] * 6)
