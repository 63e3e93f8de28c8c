"""Heavy half of :mod:`qrmi.backends.local_emulator.engine`: imports qiskit and qiskit-aer.

Only :func:`run` is used from outside; see the engine's docstring for the behaviour.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from qiskit import QuantumCircuit, QuantumRegister, qasm2, qasm3, transpile
from qiskit.circuit import ControlFlowOp, Instruction
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit.primitives.containers import DataBin, PrimitiveResult, PubResult, SamplerPubResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.observables_array import ObservablesArray
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.quantum_info import Pauli
from qiskit.transpiler import Target
from qiskit.transpiler.preset_passmanagers import generate_preset_pass_manager
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel
from qiskit_aer.primitives import SamplerV2 as AerSamplerV2
from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

try:
    from qiskit_ibm_runtime.json import RuntimeDecoder, RuntimeEncoder
except ImportError:  # qiskit-ibm-runtime < 0.48
    from qiskit_ibm_runtime.utils.json import RuntimeDecoder, RuntimeEncoder

from qrmi.backends.local_emulator import engine
from qrmi.backends.local_emulator.devices import device_snapshot, snapshot_files
from qrmi.errors import InvalidInputError, QrmiError

# Instructions that occupy no qubit state worth simulating.
_PASSIVE = frozenset({"barrier", "delay"})
_NOT_GATES = frozenset({"barrier", "delay", "measure", "reset"})


# ----- devices --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Device:
    name: str
    n_qubits: int
    max_shots: int


@functools.cache
def _device(name: str) -> _Device:
    conf, _ = device_snapshot(name)
    return _Device(name, int(conf["n_qubits"]), int(conf.get("max_shots") or 100_000))


_fake_lock = threading.Lock()


@functools.cache
def _fake_backend_unlocked(name: str) -> FakeBackendV2:
    conf_path, props_path = snapshot_files(name)
    cls = type(
        f"Fake_{name}",
        (FakeBackendV2,),
        {
            "dirname": str(conf_path.parent),
            "conf_filename": conf_path.name,
            "props_filename": props_path.name,
            "backend_name": name,
        },
    )
    return cls()


def _fake_backend(name: str) -> FakeBackendV2:
    with _fake_lock:
        return _fake_backend_unlocked(name)


@functools.cache
def _noise_model_unlocked(name: str) -> NoiseModel:
    return NoiseModel.from_backend(_fake_backend_unlocked(name))


def _noise_model(name: str) -> NoiseModel:
    with _fake_lock:
        return _noise_model_unlocked(name)


def _target(name: str) -> Target:
    with _fake_lock:
        return _fake_backend_unlocked(name).target


# ----- entry point ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    device: _Device
    noise: bool
    seed: int | None


def run(
    program_id: str, params: Mapping[str, Any], *, device: str, noise: bool, seed: int | None
) -> str:
    """Execute already shape-checked primitive input; see :func:`engine.run_primitive`."""
    decoded = _decode(params)
    options = decoded.get("options") or {}
    if not isinstance(options, Mapping):
        raise InvalidInputError(f'"options" must be a JSON object, got {type(options).__name__}')
    if seed is None:
        seed = _option_seed(options)
    ctx = _Run(_device(device), noise, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if program_id == "sampler":
            shots = decoded.get("shots") or options.get("default_shots") or engine.DEFAULT_SHOTS
            results: list[Any] = [
                _run_sampler_pub(i, pub, int(shots), ctx) for i, pub in enumerate(decoded["pubs"])
            ]
        else:
            precision = _first_number(
                decoded.get("precision"), options.get("default_precision"), engine.DEFAULT_PRECISION
            )
            results = [
                _run_estimator_pub(i, pub, precision, ctx) for i, pub in enumerate(decoded["pubs"])
            ]
    metadata = {
        "version": 2,
        "emulator": {"device": device, "noise": noise, "seed": seed},
    }
    return json.dumps(PrimitiveResult(results, metadata=metadata), cls=RuntimeEncoder)


def _decode(params: Mapping[str, Any]) -> dict[str, Any]:
    """Apply qiskit-ibm-runtime's decoder when the input holds ``{"__type__": ...}`` values."""
    if not _has_encoded_values(params):
        return dict(params)
    try:
        decoded: dict[str, Any] = json.loads(json.dumps(params), cls=RuntimeDecoder)
    except Exception as exc:
        raise InvalidInputError(
            f"cannot decode the RuntimeEncoder values (QPY circuits, arrays) of the input: {exc}"
        ) from None
    return decoded


def _has_encoded_values(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "__type__" in value or any(_has_encoded_values(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_encoded_values(v) for v in value)
    return False


def _option_seed(options: Mapping[str, Any]) -> int | None:
    simulator = options.get("simulator")
    if isinstance(simulator, Mapping):
        seed = simulator.get("seed_simulator")
        if isinstance(seed, int) and not isinstance(seed, bool):
            return seed
    return None


def _first_number(*values: Any) -> float:
    return float(next(v for v in values if v is not None))


# ----- circuits -------------------------------------------------------------------------------


def _load_circuit(index: int, raw: Any) -> QuantumCircuit:
    if isinstance(raw, QuantumCircuit):
        return raw
    if not isinstance(raw, str):
        raise InvalidInputError(
            f"pub {index}: the circuit must be OpenQASM 3 text or a QPY circuit, "
            f"got {type(raw).__name__}"
        )
    try:
        if raw.lstrip().startswith("OPENQASM 2"):
            circuit = qasm2.loads(raw, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
        else:
            circuit = qasm3.loads(raw)
    except Exception as exc:
        raise InvalidInputError(
            f"pub {index}: the circuit is not valid OpenQASM 3 ({_one_line(exc)}); export it "
            "with qiskit.qasm3.dumps(circuit)"
        ) from None
    return _standardise_gates(circuit)


def _standardise_gates(circuit: QuantumCircuit) -> QuantumCircuit:
    """Swap gates that OpenQASM 3 defines inline (``ecr``, ``rzz``...) for Qiskit's own.

    The device noise model is keyed by standard gate names; a custom ``ecr`` would be unrolled
    by Aer and escape it.
    """
    standard = get_standard_gate_name_mapping()
    for position, item in enumerate(circuit.data):
        op = item.operation
        std = standard.get(op.name)
        if (
            std is None
            or isinstance(op, ControlFlowOp)
            or type(op) is std.base_class
            or op.num_qubits != std.num_qubits
            or len(op.params) != len(std.params)
        ):
            continue
        replacement: Instruction = std.base_class(*op.params)
        circuit.data[position] = item.replace(operation=replacement)
    return circuit


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_size(index: int, circuit: QuantumCircuit, device: _Device) -> None:
    if circuit.num_qubits > device.n_qubits:
        raise InvalidInputError(
            f"pub {index}: the circuit has {circuit.num_qubits} qubits but device "
            f"{device.name} has {device.n_qubits}; use fewer qubits or choose a larger device "
            "(QRMI_LOCAL_DEVICE, e.g. fake_sherbrooke with 127 qubits)"
        )


def _active_qubits(circuit: QuantumCircuit) -> list[int]:
    active: set[int] = set()
    for item in circuit.data:
        if item.operation.name not in _PASSIVE:
            active.update(circuit.find_bit(q).index for q in item.qubits)
    return sorted(active)


def _pad(circuit: QuantumCircuit, num_qubits: int) -> QuantumCircuit:
    """Add idle qubits so that the circuit is ``num_qubits`` wide (they cost nothing)."""
    if circuit.num_qubits < num_qubits:
        circuit = circuit.copy()
        circuit.add_register(QuantumRegister(num_qubits - circuit.num_qubits, "_idle"))
    return circuit


def _for_device(circuit: QuantumCircuit, ctx: _Run) -> tuple[QuantumCircuit, list[int] | None]:
    """With noise on, transpile non-ISA circuits for the device; returns the qubit mapping."""
    if not ctx.noise or _is_isa(circuit, _target(ctx.device.name)):
        return circuit, None
    manager = generate_preset_pass_manager(
        optimization_level=1,
        target=_target(ctx.device.name),
        seed_transpiler=ctx.seed if ctx.seed is not None else 0,
    )
    transpiled = manager.run(circuit)
    mapping = (
        transpiled.layout.final_index_layout()
        if transpiled.layout is not None
        else list(range(circuit.num_qubits))
    )
    return transpiled, mapping


def _is_isa(circuit: QuantumCircuit, target: Target) -> bool:
    for item in circuit.data:
        op = item.operation
        if op.name in _PASSIVE:
            continue
        qargs = tuple(circuit.find_bit(q).index for q in item.qubits)
        if not target.instruction_supported(op.name, qargs):
            return False
    return True


# ----- simulation method ----------------------------------------------------------------------


def _choose_method(
    index: int, circuit: QuantumCircuit, active: list[int], *, exact_noise: bool
) -> str:
    if exact_noise and len(active) <= engine.DENSITY_MATRIX_MAX_QUBITS:
        return "density_matrix"
    if len(active) <= engine.STATEVECTOR_MAX_QUBITS:
        return "statevector"
    needed = _mps_memory_bound(circuit, active)
    if needed > engine.MPS_MEMORY_LIMIT_BYTES:
        raise InvalidInputError(
            f"pub {index}: the circuit acts on {len(active)} qubits and its multi-qubit gates "
            f"may entangle them beyond what the emulator can hold (up to "
            f"{needed / 2**30:.3g} GiB as a matrix product state, limit "
            f"{engine.MPS_MEMORY_LIMIT_BYTES / 2**30:g} GiB); use at most "
            f"{engine.STATEVECTOR_MAX_QUBITS} active qubits, fewer or shorter-range two-qubit "
            "gates, or a real QPU"
        )
    return "matrix_product_state"


def _mps_memory_bound(circuit: QuantumCircuit, active: list[int]) -> float:
    """Upper bound (bytes) of a matrix product state over the active qubits, in index order.

    Each gate spanning qubits a..b can at most double the bond dimension of every cut between
    them; a cut's dimension is also at most 2**(qubits on its smaller side).
    """
    position = {qubit: i for i, qubit in enumerate(active)}
    size = len(active)
    crossings = [0] * max(size - 1, 0)
    for item in circuit.data:
        if item.operation.name in _PASSIVE or len(item.qubits) < 2:
            continue
        sites = [position[circuit.find_bit(q).index] for q in item.qubits]
        for cut in range(min(sites), max(sites)):
            crossings[cut] += 1
    log_bonds = [0] + [min(c, i + 1, size - i - 1, 60) for i, c in enumerate(crossings)] + [0]
    return float(sum(2.0 * 16.0 * 2.0 ** (log_bonds[i] + log_bonds[i + 1]) for i in range(size)))


@functools.cache
def _aer_instructions(method: str) -> frozenset[str]:
    basis = AerSimulator(method=method).configuration().basis_gates
    return frozenset(basis) | _NOT_GATES


@functools.cache
def _standard_basis(method: str) -> list[str]:
    standard = get_standard_gate_name_mapping()
    return sorted(name for name in _aer_instructions(method) - _NOT_GATES if name in standard)


def _unroll_for_aer(index: int, circuit: QuantumCircuit, method: str) -> QuantumCircuit:
    """Decompose gates Aer does not know (custom OpenQASM ``gate`` definitions) into ones it does.

    Aer runs its own instruction set directly; anything else (typically a user-defined gate)
    is expanded, so no circuit is refused for its gate names.
    """
    known = _aer_instructions(method)
    unknown = sorted({item.operation.name for item in circuit.data} - known)
    if not unknown:
        return circuit
    try:
        unrolled: QuantumCircuit = transpile(
            circuit, basis_gates=_standard_basis(method), optimization_level=0
        )
    except Exception as exc:
        raise InvalidInputError(
            f"pub {index}: instruction(s) {', '.join(unknown)} cannot be simulated "
            f"({_one_line(exc)}); give them a gate definition or use standard gates"
        ) from None
    return unrolled


def _backend_options(method: str, ctx: _Run) -> dict[str, Any]:
    options: dict[str, Any] = {"method": method}
    if ctx.noise:
        options["noise_model"] = _noise_model(ctx.device.name)
    return options


def _describe(method: str, active: list[int], ctx: _Run, transpiled: bool) -> dict[str, Any]:
    return {
        "method": method,
        "active_qubits": len(active),
        "device": ctx.device.name,
        "noise": ctx.noise,
        "transpiled_for_noise": transpiled,
    }


# ----- sampler --------------------------------------------------------------------------------


def _run_sampler_pub(index: int, raw: Any, default_shots: int, ctx: _Run) -> SamplerPubResult:
    circuit = _load_circuit(index, raw[0])
    _check_size(index, circuit, ctx.device)
    values = _in_circuit_order(raw[0], circuit, _parameter_values(raw[1] if len(raw) > 1 else None))
    shots = int(raw[2]) if len(raw) > 2 and raw[2] is not None else default_shots
    if shots > ctx.device.max_shots:
        raise InvalidInputError(
            f"pub {index}: {shots} shots exceed the {ctx.device.max_shots} that device "
            f"{ctx.device.name} allows; split the pub or lower the shots"
        )
    circuit, mapping = _for_device(circuit, ctx)
    pub = _coerce(index, lambda: SamplerPub.coerce((circuit, values, shots)))
    active = _active_qubits(circuit)
    method = _choose_method(index, circuit, active, exact_noise=False)
    circuit = _unroll_for_aer(index, circuit, method)
    pub = _coerce(index, lambda: SamplerPub.coerce((circuit, values, shots)))
    options = {"backend_options": _backend_options(method, ctx)}
    sampler = AerSamplerV2(seed=ctx.seed, options=options)
    result = _simulate(index, lambda: sampler.run([pub]).result()[0])
    metadata = {
        "shots": shots,
        "circuit_metadata": pub.circuit.metadata,
        "simulator": _describe(method, active, ctx, mapping is not None),
    }
    return SamplerPubResult(result.data, metadata=metadata)


_INPUT_DECLARATION = re.compile(r"^\s*input\s+[A-Za-z_][\w\[\]]*\s+([A-Za-z_]\w*)\s*;", re.M)


def _in_circuit_order(source: Any, circuit: QuantumCircuit, values: Any) -> Any:
    """Reorder positional parameter values from the text's ``input`` order to Qiskit's.

    Senders (qrmi.primitives, the reference) list values in the order the OpenQASM 3 text
    declares its inputs, but the reloaded circuit sorts its parameters by name, and
    ``_v_10_`` sorts before ``_v_2_``.
    """
    if not isinstance(source, str) or not isinstance(values, np.ndarray) or values.ndim == 0:
        return values
    declared = _INPUT_DECLARATION.findall(source)
    names = [p.name for p in circuit.parameters]
    if sorted(declared) != sorted(names) or declared == names:
        return values
    position = {name: i for i, name in enumerate(declared)}
    order = [position[name] for name in names]
    return values[..., order] if values.shape[-1] == len(order) else values


def _parameter_values(raw: Any) -> Any:
    if isinstance(raw, list):
        return np.asarray(raw, dtype=float) if raw else None
    return raw


def _coerce(index: int, build: Any) -> Any:
    try:
        return build()
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidInputError(f"pub {index}: {_one_line(exc)}") from None


def _simulate(index: int, execute: Any) -> Any:
    try:
        return execute()
    except QrmiError:
        raise
    except Exception as exc:
        raise QrmiError(f"pub {index}: the simulation failed: {_one_line(exc)}") from None


# ----- estimator ------------------------------------------------------------------------------


def _run_estimator_pub(index: int, raw: Any, default_precision: float, ctx: _Run) -> PubResult:
    circuit = _load_circuit(index, raw[0])
    _check_size(index, circuit, ctx.device)
    observables = _coerce(index, lambda: ObservablesArray.coerce(raw[1]))
    if circuit.num_qubits < observables.num_qubits <= ctx.device.n_qubits:
        circuit = _pad(circuit, observables.num_qubits)
    values = _in_circuit_order(raw[0], circuit, _parameter_values(raw[2] if len(raw) > 2 else None))
    precision = float(raw[3]) if len(raw) > 3 and raw[3] is not None else default_precision
    pub = _coerce(index, lambda: EstimatorPub.coerce((circuit, observables, values, precision)))
    circuit = pub.circuit.remove_final_measurements(inplace=False)
    circuit, mapping = _for_device(circuit, ctx)
    observables = pub.observables
    if mapping is not None:
        observables = _relabel(observables, mapping, circuit.num_qubits)
    active = _active_qubits(circuit)
    method = _choose_method(index, circuit, active, exact_noise=ctx.noise)
    circuit = _unroll_for_aer(index, circuit, method)
    evs = _simulate(index, lambda: _expectation_values(circuit, pub, observables, method, ctx))
    if ctx.noise and precision > 0:
        evs = np.random.default_rng(ctx.seed).normal(evs, precision)
        stds = np.full(evs.shape, precision)
    else:
        stds = np.zeros(evs.shape)
    metadata = {
        "target_precision": precision,
        "circuit_metadata": pub.circuit.metadata,
        "simulator": _describe(method, active, ctx, mapping is not None),
    }
    return PubResult(DataBin(evs=evs, stds=stds, shape=evs.shape), metadata=metadata)


def _relabel(observables: ObservablesArray, mapping: list[int], width: int) -> ObservablesArray:
    """Move each observable's Pauli letters to the physical qubits the transpiler chose."""

    def move(label: str) -> str:
        letters = ["I"] * width
        for virtual, letter in enumerate(reversed(label)):
            letters[width - 1 - mapping[virtual]] = letter
        return "".join(letters)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {move(label): coeff for label, coeff in node.items()}
        return [walk(child) for child in node]

    return ObservablesArray.coerce(walk(observables.tolist()))


def _expectation_values(
    circuit: QuantumCircuit,
    pub: EstimatorPub,
    observables: ObservablesArray,
    method: str,
    ctx: _Run,
) -> np.ndarray:
    circuit = circuit.copy()
    flat_obs = list(observables.ravel())
    labels = _save_paulis(circuit, {p for obs in flat_obs for p in obs})
    binds = _binds(pub, circuit)
    trajectories = ctx.noise and method != "density_matrix"
    job = AerSimulator(**_backend_options(method, ctx)).run(
        circuit,
        parameter_binds=[binds] if binds else None,
        shots=1024 if trajectories else 1,
        seed_simulator=ctx.seed,
    )
    result = job.result()
    if not result.success:
        raise QrmiError(f"Aer reported: {result.status}")
    values = pub.parameter_values
    param_index = np.arange(values.size).reshape(values.shape)
    obs_array = np.empty(len(flat_obs), dtype=object)
    obs_array[:] = flat_obs
    bc_params, bc_obs = np.broadcast_arrays(param_index, obs_array.reshape(observables.shape))
    evs = np.zeros(bc_params.shape, dtype=float)
    for where in np.ndindex(*bc_params.shape):
        data = result.data(int(bc_params[where]))
        observable = cast(dict[str, float], bc_obs[where])
        evs[where] = sum(
            coeff * (1.0 if labels[p] is None else float(np.real(data[labels[p]])))
            for p, coeff in observable.items()
        )
    return evs


def _save_paulis(circuit: QuantumCircuit, paulis: Iterable[str]) -> dict[str, str | None]:
    """Save each Pauli's expectation value on its support only (idle qubits stay truncated).

    Returns Pauli label -> Aer result key (``None`` for the identity, whose value is 1).
    """
    labels: dict[str, str | None] = {}
    width = circuit.num_qubits
    for number, pauli in enumerate(sorted(paulis)):
        support = [q for q in range(width) if pauli[width - 1 - q] != "I"]
        if not support:
            labels[pauli] = None
            continue
        reduced = "".join(pauli[width - 1 - q] for q in reversed(support))
        key = f"pauli_{number}"
        circuit.save_expectation_value(Pauli(reduced), qubits=support, label=key)
        labels[pauli] = key
    return labels


def _binds(pub: EstimatorPub, circuit: QuantumCircuit) -> dict[Any, Any]:
    parameters = pub.circuit.parameters
    if not len(parameters):
        return {}
    array = pub.parameter_values.as_array(parameters)
    by_name = {p.name: p for p in circuit.parameters}
    return {by_name[p.name]: array[..., i].ravel() for i, p in enumerate(parameters)}
