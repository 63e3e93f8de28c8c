"""Heavy half of :mod:`qrmi.backends.local_emulator.engine`: imports qiskit and qiskit-aer.

Only :func:`run` is used from outside; see the engine's docstring for the behaviour.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import re
import threading
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from qiskit import QuantumCircuit, QuantumRegister, qasm2, qasm3, transpile
from qiskit.circuit import ControlFlowOp, Instruction
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit.primitives.containers import (
    BitArray,
    DataBin,
    PrimitiveResult,
    PubResult,
    SamplerPubResult,
)
from qiskit.primitives.containers.estimator_pub import EstimatorPub
from qiskit.primitives.containers.observables_array import ObservablesArray
from qiskit.primitives.containers.sampler_pub import SamplerPub
from qiskit.quantum_info import Pauli
from qiskit.transpiler import Target
from qiskit.transpiler.preset_passmanagers import generate_preset_pass_manager
from qiskit_aer import AerSimulator
from qiskit_aer.library import SaveProbabilities
from qiskit_aer.noise import NoiseModel
from qiskit_aer.primitives import SamplerV2 as AerSamplerV2
from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

try:
    from qiskit_ibm_runtime.json import RuntimeDecoder, RuntimeEncoder
except ImportError:  # qiskit-ibm-runtime < 0.48
    from qiskit_ibm_runtime.utils.json import RuntimeDecoder, RuntimeEncoder

import itertools

from qrmi.backends.local_emulator import engine
from qrmi.backends.local_emulator._in_process import MAX_QUBITS
from qrmi.backends.local_emulator.devices import device_snapshot, snapshot_files
from qrmi.backends.local_emulator.inputs import Limits
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
    limits: Limits
    notes: list[str]


def run(
    program_id: str,
    params: Mapping[str, Any],
    *,
    device: str,
    noise: bool,
    seed: int | None,
    limits: Limits,
    notes: list[str],
) -> str:
    """Execute already shape-checked primitive input; see :func:`engine.run_primitive`.

    Lines for the task's log (approximations made) are appended to ``notes``.
    """
    decoded = _decode(params)
    options = decoded.get("options") or {}
    if not isinstance(options, Mapping):
        raise InvalidInputError(f'"options" must be a JSON object, got {type(options).__name__}')
    if seed is None:
        seed = _option_seed(options)
    ctx = _Run(_device(device), noise, seed, limits, notes)
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
    approximate = any(result.metadata["simulator"]["approximate"] for result in results)
    metadata = {
        "version": 2,
        "emulator": {"device": device, "noise": noise, "seed": seed, "approximate": approximate},
    }
    return json.dumps(PrimitiveResult(results, metadata=metadata), cls=_ResultEncoder)


class _ResultEncoder(RuntimeEncoder):  # type: ignore[misc]
    """RuntimeEncoder, with numeric arrays (the shots' bits) compressed at zlib's fastest level.

    The encoding is RuntimeEncoder's (``np.save``, zlib, base64), which RuntimeDecoder reads
    whatever the level; its default level takes 5 to 15 times longer and, shots' bits being
    nearly random, seldom saves much: 0.13 s of a 10^6-shot result.
    """

    def default(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray) and obj.dtype != object:
            with io.BytesIO() as buffer:
                np.save(buffer, obj, allow_pickle=False)
                packed = zlib.compress(buffer.getvalue(), 1)
            return {"__type__": "ndarray", "__value__": base64.b64encode(packed).decode("ascii")}
        return super().default(obj)


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


# ----- jobs small enough for the submitting process ---------------------------------------------

#: Most amplitudes of all parameter sets of one pub simulated in the submitting process
#: (64 MiB); at most ``_in_process.MAX_QUBITS`` active qubits.
_SMALL_MAX_AMPLITUDES = 1 << 22
#: Aer's fixed cost of one pub, and the cost of drawing and encoding one shot (2 busy cores).
_SECONDS_PER_PUB = 1e-3
_SECONDS_PER_SHOT = 1e-7


def small_job_seconds(
    program_id: str, params: Mapping[str, Any], *, device: str, noise: bool
) -> float | None:
    """Estimated seconds of a noise-free job whose pubs are all dense statevectors of at most
    ``_in_process.MAX_QUBITS`` active qubits; None for any other job, or one that does not parse
    (the worker then runs it, or says what is wrong with it)."""
    if noise:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _small_job_seconds(program_id, params, device)
    except Exception:
        return None


def _small_job_seconds(program_id: str, params: Mapping[str, Any], device: str) -> float | None:
    decoded = _decode(params)
    options = decoded.get("options") or {}
    if program_id == "sampler":
        shots = int(decoded.get("shots") or options.get("default_shots") or 0)
        costs = [
            _small_sampler_seconds(i, pub, shots or engine.DEFAULT_SHOTS, device)
            for i, pub in enumerate(decoded["pubs"])
        ]
    else:
        costs = [_small_estimator_seconds(i, pub, device) for i, pub in enumerate(decoded["pubs"])]
    if any(cost is None for cost in costs):
        return None
    return sum(cast(float, cost) for cost in costs)


def _small_sampler_seconds(index: int, raw: Any, default_shots: int, device: str) -> float | None:
    circuit = _load_circuit(index, raw[0])
    _check_size(index, circuit, _device(device))
    shots = int(raw[2]) if len(raw) > 2 and raw[2] is not None else default_shots
    values = _parameter_values(raw[1] if len(raw) > 1 else None)
    bindings = max(1, SamplerPub.coerce((circuit, values, shots)).parameter_values.size)
    per_shot = _final_measurements(circuit) is None  # Aer then simulates every shot
    return _small_seconds(circuit, bindings, repeats=shots if per_shot else 1, shots=shots)


def _small_estimator_seconds(index: int, raw: Any, device: str) -> float | None:
    circuit = _load_circuit(index, raw[0])
    _check_size(index, circuit, _device(device))
    observables = ObservablesArray.coerce(raw[1])
    values = _parameter_values(raw[2] if len(raw) > 2 else None)
    pub = EstimatorPub.coerce((circuit, observables, values))
    terms = sum(len(term) for term in np.ravel(observables.tolist()))
    return _small_seconds(circuit, max(1, pub.parameter_values.size), extra_operations=terms)


def _small_seconds(
    circuit: QuantumCircuit,
    bindings: int,
    *,
    repeats: int = 1,
    shots: int = 0,
    extra_operations: int = 0,
) -> float | None:
    width = len(_active_qubits(circuit))
    if width > MAX_QUBITS or bindings << width > _SMALL_MAX_AMPLITUDES:
        return None
    operations = extra_operations + sum(1 for item in circuit.data if item.name not in _PASSIVE)
    sweep = operations * 2.0**width * engine.STATEVECTOR_SECONDS_PER_UNIT
    return _SECONDS_PER_PUB + bindings * (sweep * repeats + shots * _SECONDS_PER_SHOT)


# ----- circuits -------------------------------------------------------------------------------


def _load_circuit(index: int, raw: Any) -> QuantumCircuit:
    if isinstance(raw, QuantumCircuit):
        return raw
    if not isinstance(raw, str):
        raise InvalidInputError(
            f"pub {index}: the circuit must be OpenQASM 3 text or a QPY circuit, "
            f"got {type(raw).__name__}"
        )
    cached = _parsed.get(raw)
    if cached is not None:
        return cached
    try:
        if raw.lstrip().startswith("OPENQASM 2"):
            circuit = qasm2.loads(raw, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
        else:
            circuit = _fast_qasm3(raw) or qasm3.loads(raw)
    except MemoryError:  # the task's memory budget, not the text, is the problem
        raise
    except Exception as exc:
        raise InvalidInputError(
            f"pub {index}: the circuit is not valid OpenQASM 3 ({_one_line(exc)}); export it "
            "with qiskit.qasm3.dumps(circuit)"
        ) from None
    circuit = _standardise_gates(circuit)
    _parsed.put(raw, circuit)
    return circuit


class _ParsedCircuits:
    """The last circuits parsed, by their text: a workload that sends the same circuit again
    (shots, parameter values or observables changing) skips the parser. Each hit is a copy, so
    nothing a pub does to its circuit reaches the next one. Bounded in entries and text size."""

    MAX_ENTRIES = 32
    MAX_CHARS = 8 * 2**20

    def __init__(self) -> None:
        self._entries: OrderedDict[str, QuantumCircuit] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def get(self, text: str) -> QuantumCircuit | None:
        with self._lock:
            circuit = self._entries.get(text)
            if circuit is None:
                return None
            self._entries.move_to_end(text)
        return circuit.copy()

    def put(self, text: str, circuit: QuantumCircuit) -> None:
        if len(text) > self.MAX_CHARS // 4:
            return
        with self._lock:
            if text in self._entries:
                return
            self._entries[text] = circuit.copy()
            self._chars += len(text)
            while len(self._entries) > self.MAX_ENTRIES or self._chars > self.MAX_CHARS:
                dropped, _ = self._entries.popitem(last=False)
                self._chars -= len(dropped)


_parsed = _ParsedCircuits()


# The fast path: OpenQASM 3 as qiskit.qasm3.dumps writes a circuit of standard gates (ISA
# circuits included) goes to Qiskit's native importer, ~100x faster than qasm3.loads. That
# importer knows less (no inputs, control flow, reset, delay, hardware qubits) and prints its parse
# errors, so a text is given to it only when every statement is of a form it handles; anything
# else takes qasm3.loads, as does any text it refuses.
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_OPERAND = r"(?:[A-Za-z_]\w*(?:\[\d+\])?|\$\d+)"
_OPERANDS = rf"{_OPERAND}(?:\s*,\s*{_OPERAND})*"
_FAST_STATEMENT = re.compile(
    r"OPENQASM\s+3(?:\.0)?;"
    r'|include\s+"stdgates\.inc";'
    r"|(?:qu)?bit\[\d+\]\s+[A-Za-z_]\w*;"
    rf"|(?P<gate>[A-Za-z_]\w*)(?:\(\s*{_NUMBER}(?:\s*,\s*{_NUMBER})*\s*\))?\s+{_OPERANDS};"
    rf"|[A-Za-z_]\w*(?:\[\d+\])?\s*=\s*measure\s+{_OPERAND};"
)
_GATE_DEFINITION = re.compile(r"gate\s+(?P<name>[A-Za-z_]\w*)\b[^{}]*\{[^{}]*\}")
_PHYSICAL_QUBIT = re.compile(r"\$(\d+)")
_PHYSICAL_REGISTER = "_qrmi_physical"


@functools.cache
def _fast_gates() -> tuple[frozenset[str], tuple[Any, ...]]:
    """Gate names the fast path accepts, and its constructors: ``stdgates.inc`` plus Qiskit's
    other standard gates (``ecr``, ``rzz``...), which qasm3.dumps defines inline and
    :func:`_standardise_gates` would map to the standard gate anyway."""
    from qiskit.circuit import Gate

    constructors = list(qasm3.STDGATES_INC_GATES)
    included = {gate.name for gate in constructors}
    for name, gate in get_standard_gate_name_mapping().items():
        if isinstance(gate, Gate) and name not in included and name != "global_phase":
            constructors.append(
                qasm3.CustomGate(type(gate), name, len(gate.params), gate.num_qubits)
            )
    names = frozenset(gate.name for gate in constructors) | {"barrier", "measure"}
    return names, tuple(constructors)


def _fast_qasm3(text: str) -> QuantumCircuit | None:
    """``text`` parsed by Qiskit's native importer, or None when it is not for the fast path."""
    if _PHYSICAL_REGISTER in text or not hasattr(qasm3, "loads_experimental"):
        return None
    try:
        names, constructors = _fast_gates()
    except (AttributeError, TypeError):  # a Qiskit whose native importer differs
        return None
    statements = _GATE_DEFINITION.sub(lambda m: "" if m["name"] in names else "\x00", text)
    for statement in statements.split(";")[:-1]:
        match = _FAST_STATEMENT.fullmatch(statement.strip() + ";")
        if match is None or (match["gate"] is not None and match["gate"] not in names):
            return None
    if statements.rsplit(";", 1)[-1].strip():
        return None
    physical = [int(k) for k in _PHYSICAL_QUBIT.findall(text)]
    if physical:
        if re.search(r"\bqubit\[", text):
            return None  # mixing both is not valid OpenQASM 3: let qasm3.loads say why
        text = _PHYSICAL_QUBIT.sub(rf"{_PHYSICAL_REGISTER}[\1]", text)
        header, _, rest = text.partition('include "stdgates.inc";')
        if not rest:
            return None
        declaration = f"qubit[{max(physical) + 1}] {_PHYSICAL_REGISTER};"
        text = f'{header}include "stdgates.inc";\n{declaration}{rest}'
    try:
        circuit: QuantumCircuit = qasm3.loads_experimental(text, custom_gates=constructors)
    except Exception:
        return None
    return circuit


def _standardise_gates(circuit: QuantumCircuit) -> QuantumCircuit:
    """Swap gates that OpenQASM 3 defines inline (``ecr``, ``rzz``...) for Qiskit's own.

    The device noise model is keyed by standard gate names; a custom ``ecr`` would be unrolled
    by Aer and escape it.
    """
    standard = get_standard_gate_name_mapping()
    for position, item in enumerate(circuit.data):
        if item.is_standard_gate():
            continue  # Qiskit's own gate already (and no Python gate object built to see it)
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
    # The instructions' names and qubits only: no Python gate object is built for them.
    active: set[Any] = set()
    for item in circuit.data:
        if item.name not in _PASSIVE:
            active.update(item.qubits)
    return sorted(circuit.find_bit(qubit).index for qubit in active)


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
        if item.name in _PASSIVE:  # the name alone: no Python gate object is built
            continue
        qargs = tuple(circuit.find_bit(q).index for q in item.qubits)
        if not target.instruction_supported(item.name, qargs):
            return False
    return True


# ----- simulation method ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """How a pub is simulated."""

    method: str
    #: Matrix product state only: the circuit's qubits in site order (``None``: index order).
    order: list[int] | None = None
    #: Matrix product state only: the bond dimension cap (``None``: exact, no cap).
    max_bond: int | None = None


#: Seconds per ``(2 chi)**3`` of one two-qubit step of a capped matrix product state, and per
#: ``chi**2`` of one measured qubit of one shot (measured on 2 cores, rounded up).
_MPS_SECONDS_PER_GATE_UNIT = 1e-8
_MPS_SECONDS_PER_SAMPLE_UNIT = 2e-8


def _plan(
    index: int, circuit: QuantumCircuit, active: list[int], ctx: _Run, *, shots: int, exact: bool
) -> _Plan:
    """Exact when it fits (statevector, density matrix, bounded MPS), else a capped MPS."""
    if exact and len(active) <= engine.DENSITY_MATRIX_MAX_QUBITS:
        return _Plan("density_matrix")
    if len(active) <= engine.STATEVECTOR_MAX_QUBITS:
        return _Plan("statevector")
    order, crossings = _site_order(circuit, active)
    if _mps_memory_bound(crossings) <= min(
        engine.MPS_MEMORY_LIMIT_BYTES, ctx.limits.memory_mb * 2**19
    ):
        return _Plan("matrix_product_state", order)
    if _statevector_fits(circuit, len(active), ctx.limits):
        return _Plan("statevector")
    cap = ctx.limits.mps_max_bond_dimension
    seconds = _capped_mps_seconds(circuit, crossings, cap, shots=shots, measured=len(active))
    if seconds > ctx.limits.timeout_seconds:
        raise InvalidInputError(
            f"pub {index}: the circuit acts on {len(active)} qubits with {sum(crossings)} "
            "crossings of two-qubit gates; even an approximate matrix product state with bond "
            f"dimension {cap} would take about {seconds:.0f} s, more than the task's time budget "
            f"of {ctx.limits.timeout_seconds:g} s (QRMI_LOCAL_TASK_TIMEOUT_SECONDS); use fewer "
            "gates or shots, a smaller QRMI_LOCAL_MPS_MAX_BOND_DIMENSION, or a real QPU"
        )
    return _Plan("matrix_product_state", order, cap)


#: Most active qubits ever simulated as a dense statevector (4 GiB of amplitudes).
_STATEVECTOR_HARD_MAX_QUBITS = 28


def _statevector_fits(circuit: QuantumCircuit, width: int, limits: Limits) -> bool:
    """An exact statevector of ``width`` qubits within the memory budget and half the time one."""
    if width > _STATEVECTOR_HARD_MAX_QUBITS:
        return False
    amplitudes = 2.0**width
    if 16.0 * amplitudes * 1.25 > limits.memory_mb * 2.0**20:
        return False
    operations = sum(1 for item in circuit.data if item.operation.name not in _PASSIVE)
    seconds = operations * amplitudes * engine.STATEVECTOR_SECONDS_PER_UNIT
    return seconds <= limits.timeout_seconds / 2


def _site_order(circuit: QuantumCircuit, active: list[int]) -> tuple[list[int], list[int]]:
    """The active qubits in the MPS site order with the fewest gate crossings, and those.

    Aer lays the sites out in qubit index order; a transpiled circuit's index order follows the
    device's numbering, not its entangling structure, so a bandwidth-reducing order (reverse
    Cuthill-McKee on the two-qubit interaction graph) is tried too and the cheaper one kept.
    """
    best: tuple[list[int], list[int]] | None = None
    for order in (active, _bandwidth_order(circuit, active)):
        crossings = _crossings(circuit, order)
        if best is None or sum(crossings) < sum(best[1]):
            best = (order, crossings)
    assert best is not None
    return best


def _bandwidth_order(circuit: QuantumCircuit, active: list[int]) -> list[int]:
    from scipy.sparse import csr_matrix  # type: ignore[import-untyped]
    from scipy.sparse.csgraph import reverse_cuthill_mckee  # type: ignore[import-untyped]

    position = {qubit: i for i, qubit in enumerate(active)}
    rows: list[int] = []
    cols: list[int] = []
    for sites in _multi_qubit_sites(circuit, position):
        for a, b in itertools.pairwise(sites):
            rows += [a, b]
            cols += [b, a]
    size = len(active)
    graph = csr_matrix(([1.0] * len(rows), (rows, cols)), shape=(size, size))
    return [active[int(i)] for i in reverse_cuthill_mckee(graph, symmetric_mode=True)]


def _multi_qubit_sites(circuit: QuantumCircuit, position: Mapping[int, int]) -> list[list[int]]:
    return [
        [position[circuit.find_bit(q).index] for q in item.qubits]
        for item in circuit.data
        if item.operation.name not in _PASSIVE and len(item.qubits) >= 2
    ]


def _crossings(circuit: QuantumCircuit, order: list[int]) -> list[int]:
    """For each cut between consecutive sites, how many multi-qubit gates span it."""
    position = {qubit: i for i, qubit in enumerate(order)}
    crossings = [0] * max(len(order) - 1, 0)
    for sites in _multi_qubit_sites(circuit, position):
        for cut in range(min(sites), max(sites)):
            crossings[cut] += 1
    return crossings


def _mps_memory_bound(crossings: list[int]) -> float:
    """Upper bound (bytes) of an exact matrix product state with these cut crossings.

    Each gate spanning a cut can at most double its bond dimension; a cut's dimension is also
    at most 2**(sites on its smaller side).
    """
    size = len(crossings) + 1
    log_bonds = [0] + [min(c, i + 1, size - i - 1, 60) for i, c in enumerate(crossings)] + [0]
    return float(sum(2.0 * 16.0 * 2.0 ** (log_bonds[i] + log_bonds[i + 1]) for i in range(size)))


def _capped_mps_seconds(
    circuit: QuantumCircuit, crossings: list[int], cap: int, *, shots: int, measured: int
) -> float:
    """Rough time of a matrix product state capped at bond dimension ``cap`` (for refusals).

    A two-qubit step costs an SVD of a ``2 cap`` square matrix; a gate between distant sites
    adds swaps there and back; sampling costs ``cap**2`` per measured qubit and shot.
    """
    gates = sum(
        1 for item in circuit.data if item.operation.name not in _PASSIVE and len(item.qubits) >= 2
    )
    steps = gates + 2 * sum(crossings)
    return (
        steps * (2 * cap) ** 3 * _MPS_SECONDS_PER_GATE_UNIT
        + shots * measured * cap**2 * _MPS_SECONDS_PER_SAMPLE_UNIT
    )


def _in_site_order(circuit: QuantumCircuit, order: list[int] | None) -> QuantumCircuit:
    """The circuit with qubit ``order[k]`` moved to index ``k`` (idle qubits after them).

    Classical bits are unchanged, so measured counts are the same; estimator observables are
    moved with :func:`_site_of`.
    """
    if order is None or order == list(range(len(order))):
        return circuit
    site = _site_of(order, circuit.num_qubits)
    moved = circuit.copy_empty_like()
    for item in circuit.data:
        qubits = [moved.qubits[site[circuit.find_bit(q).index]] for q in item.qubits]
        moved.append(item.operation, qubits, item.clbits, copy=False)
    return moved


def _site_of(order: list[int] | None, width: int) -> list[int]:
    """``site[qubit]``: where each qubit of the circuit sits after :func:`_in_site_order`."""
    if order is None:
        return list(range(width))
    rest = [q for q in range(width) if q not in set(order)]
    site = [0] * width
    for position, qubit in enumerate([*order, *rest]):
        site[qubit] = position
    return site


_DISCARDED = re.compile(r"discarded_value=([0-9.eE+-]+)")
_mps_log_lock = threading.Lock()
_mps_log_seen = 0


def mps_log_size() -> int:
    """Characters of Aer's process-wide MPS log seen so far (it only grows; see below)."""
    return _mps_log_seen


def _new_mps_log(log: str) -> str:
    """The part of Aer's ``MPS_log_data`` written by the last run.

    qiskit-aer 0.18 keeps the MPS log in a process-wide buffer that it never clears: each run
    returns the log of every earlier run too. The part already seen is skipped (a shorter log
    means the buffer was reset). The sandbox recycles its process when the log grows large.
    """
    global _mps_log_seen
    with _mps_log_lock:
        fresh = log[_mps_log_seen:] if len(log) >= _mps_log_seen else log
        _mps_log_seen = len(log)
    return fresh


def _truncation(plan: _Plan, experiment_metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What a capped matrix product state discarded, from Aer's ``MPS_log_data``."""
    if plan.max_bond is None:
        return {}
    log = _new_mps_log(str(experiment_metadata.get("MPS_log_data") or ""))
    discarded = [float(v) for v in _DISCARDED.findall(log)]
    return {
        "approximate": bool(discarded),
        "max_bond_dimension": plan.max_bond,
        "truncations": len(discarded),
        "discarded_weight": float(sum(discarded)),
    }


def _note_truncation(index: int, plan: _Plan, truncation: Mapping[str, Any], ctx: _Run) -> None:
    if plan.max_bond is None:
        return
    if truncation.get("approximate"):
        ctx.notes.append(
            f"pub {index}: APPROXIMATE result: matrix product state with bond dimension capped "
            f"at {plan.max_bond} (QRMI_LOCAL_MPS_MAX_BOND_DIMENSION); Aer truncated "
            f"{truncation['truncations']} times, discarding a total weight of "
            f"{truncation['discarded_weight']:.3g}"
        )
    else:
        ctx.notes.append(
            f"pub {index}: matrix product state with bond dimension capped at {plan.max_bond}; "
            "nothing was truncated, the result is exact"
        )


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
    unknown = sorted(set(circuit.count_ops()) - known)
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


def _backend_options(plan: _Plan, ctx: _Run) -> dict[str, Any]:
    options: dict[str, Any] = {"method": plan.method, "max_memory_mb": ctx.limits.memory_mb}
    if plan.max_bond is not None:
        options["matrix_product_state_max_bond_dimension"] = plan.max_bond
        options["mps_log_data"] = True  # the only place Aer reports what it truncated
    if ctx.noise:
        options["noise_model"] = _noise_model(ctx.device.name)
    return options


class _RecordingSimulator(AerSimulator):  # type: ignore[misc]
    """An AerSimulator that keeps its last job, whose per-experiment metadata Aer's SamplerV2
    does not pass on (the truncation log lives there)."""

    last_job: Any = None

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.last_job = super().run(*args, **kwargs)
        return self.last_job


def _experiment_metadata(simulator: _RecordingSimulator) -> Mapping[str, Any]:
    if simulator.last_job is None:
        return {}
    results = simulator.last_job.result().results
    return results[0].metadata if results else {}


def _describe(
    plan: _Plan, active: list[int], ctx: _Run, transpiled: bool, truncation: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "method": plan.method,
        "active_qubits": len(active),
        "device": ctx.device.name,
        "noise": ctx.noise,
        "transpiled_for_noise": transpiled,
        "approximate": False,
        **truncation,
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
    plan = _plan(index, circuit, active, ctx, shots=shots, exact=False)
    metadata_source = circuit.metadata
    circuit = _in_site_order(_unroll_for_aer(index, circuit, plan.method), plan.order)
    pub = _coerce(index, lambda: SamplerPub.coerce((circuit, values, shots)))
    data = _sample_exactly(index, pub, plan, ctx)
    exact = data is not None
    if exact:
        truncation = {}
    else:
        simulator = _RecordingSimulator(**_backend_options(plan, ctx))
        sampler = AerSamplerV2.from_backend(simulator, seed=ctx.seed)
        data = _simulate(index, lambda: sampler.run([pub]).result()[0]).data
        truncation = _truncation(plan, _experiment_metadata(simulator))
        _note_truncation(index, plan, truncation, ctx)
    described = _describe(plan, active, ctx, mapping is not None, truncation)
    described["sampling"] = "distribution" if exact else "aer"
    metadata = {"shots": shots, "circuit_metadata": metadata_source, "simulator": described}
    return SamplerPubResult(data, metadata=metadata)


# Exact sampling. When every measurement ends its qubit's part of the circuit, the shots are
# independent draws from one probability distribution. Aer draws them one by one (about 2 us a
# shot at 12 qubits, most of a small task's time); instead, Aer computes the distribution of the
# measured qubits once and the shots are drawn from it in one vectorised step.

#: Gates the exact path accepts: unitary, so that measuring at the end is all that is random.
_UNITARY_GATES = frozenset(get_standard_gate_name_mapping()) - {"measure", "reset", "delay"}
#: Most probabilities held at once (all parameter sets of a pub): 128 MiB of float64.
_EXACT_MAX_PROBABILITIES = 1 << 24


def _sample_exactly(index: int, pub: SamplerPub, plan: _Plan, ctx: _Run) -> DataBin | None:
    """The pub's measured bits, drawn from the exact distribution of its final measurements;
    None when the pub is not a noise-free statevector run measured only at the end."""
    if ctx.noise or plan.method != "statevector":
        return None
    split = _final_measurements(pub.circuit)
    if split is None:
        return None
    body, measured = split
    qubits = sorted(set(measured.values()))
    bindings = max(1, pub.parameter_values.size)
    if bindings << len(qubits) > _EXACT_MAX_PROBABILITIES:
        return None
    if qubits:
        body.append(SaveProbabilities(len(qubits)), [body.qubits[q] for q in qubits])
        bound = np.asarray(pub.parameter_values.bind_all(body), dtype=object).reshape(-1)
        simulator = AerSimulator(**_backend_options(plan, ctx))
        answer = _simulate(index, lambda: simulator.run(list(bound), shots=1).result())
        distributions = [np.asarray(answer.data(i)["probabilities"]) for i in range(len(bound))]
    else:  # nothing measured: every shot reads zeros
        distributions = [np.ones(1)] * bindings
    rng = np.random.default_rng(None if ctx.seed is None else (ctx.seed, index))
    outcomes = np.stack([_draw(p, pub.shots, rng) for p in distributions])
    outcomes = outcomes.reshape((*pub.shape, pub.shots))
    position = {qubit: bit for bit, qubit in enumerate(qubits)}
    registers: dict[str, BitArray] = {}
    for register in pub.circuit.cregs:
        sources = [
            position.get(measured.get(pub.circuit.find_bit(clbit).index, -1), -1)
            for clbit in register
        ]
        registers[register.name] = _packed_bits(outcomes, sources)
    return DataBin(**registers, shape=pub.shape)


def _final_measurements(circuit: QuantumCircuit) -> tuple[QuantumCircuit, dict[int, int]] | None:
    """The circuit without its measurements and, per measured clbit, the qubit it reads; None
    unless every instruction is a unitary gate, a barrier or delay, or a measurement whose
    qubit is not measured again nor acted on together with a qubit not yet measured.

    A gate acting only on measured qubits is left out: nothing it does can reach a later
    measurement.
    """
    body = circuit.copy_empty_like()
    measured: dict[int, int] = {}
    done: set[int] = set()
    for item in circuit.data:
        name = item.name
        if name in _PASSIVE:
            body._append(item)
            continue
        qubits = [circuit.find_bit(q).index for q in item.qubits]
        if done.issuperset(qubits) and name in _UNITARY_GATES and not item.clbits:
            continue
        if done.intersection(qubits):
            return None
        if name == "measure":
            measured[circuit.find_bit(item.clbits[0]).index] = qubits[0]
            done.add(qubits[0])
        elif name in _UNITARY_GATES and not item.clbits:
            body._append(item)
        else:
            return None
    return body, measured


def _draw(probabilities: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """``shots`` outcomes (indices into ``probabilities``) drawn independently."""
    cumulative = np.cumsum(probabilities)
    cumulative /= cumulative[-1]
    drawn = np.searchsorted(cumulative, rng.random(shots), side="right")
    return np.minimum(drawn, len(probabilities) - 1)


def _packed_bits(outcomes: np.ndarray, sources: list[int]) -> BitArray:
    """A register's BitArray: its bit ``i`` is bit ``sources[i]`` of each outcome (0 when -1)."""
    width = (len(sources) + 7) // 8
    packed = np.zeros((*outcomes.shape, width), dtype=np.uint8)
    for bit, source in enumerate(sources):
        if source >= 0:
            packed[..., width - 1 - bit // 8] |= ((outcomes >> source) & 1).astype(
                np.uint8
            ) << np.uint8(bit % 8)
    return BitArray(packed, len(sources))


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
    plan = _plan(index, circuit, active, ctx, shots=0, exact=ctx.noise)
    circuit = _unroll_for_aer(index, circuit, plan.method)
    evs, truncation = _simulate(
        index, lambda: _expectation_values(circuit, pub, observables, plan, ctx)
    )
    _note_truncation(index, plan, truncation, ctx)
    if ctx.noise and precision > 0:
        evs = np.random.default_rng(ctx.seed).normal(evs, precision)
        stds = np.full(evs.shape, precision)
    else:
        stds = np.zeros(evs.shape)
    metadata = {
        "target_precision": precision,
        "circuit_metadata": pub.circuit.metadata,
        "simulator": _describe(plan, active, ctx, mapping is not None, truncation),
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
    plan: _Plan,
    ctx: _Run,
) -> tuple[np.ndarray, dict[str, Any]]:
    site = _site_of(plan.order, circuit.num_qubits)
    circuit = _in_site_order(circuit, plan.order)
    circuit = circuit.copy() if plan.order is None else circuit
    flat_obs = list(observables.ravel())
    labels = _save_paulis(circuit, {p for obs in flat_obs for p in obs}, site)
    binds = _binds(pub, circuit)
    trajectories = ctx.noise and plan.method != "density_matrix"
    job = AerSimulator(**_backend_options(plan, ctx)).run(
        circuit,
        parameter_binds=[binds] if binds else None,
        shots=1024 if trajectories else 1,
        seed_simulator=ctx.seed,
    )
    result = job.result()
    if not result.success:
        raise QrmiError(f"Aer reported: {result.status}")
    truncation = _truncation(plan, result.results[0].metadata if result.results else {})
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
    return evs, truncation


def _save_paulis(
    circuit: QuantumCircuit, paulis: Iterable[str], site: list[int]
) -> dict[str, str | None]:
    """Save each Pauli's expectation value on its support only (idle qubits stay truncated).

    ``site[q]`` is where the circuit's qubit ``q`` sits (see :func:`_in_site_order`). Returns
    Pauli label -> Aer result key (``None`` for the identity, whose value is 1).
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
        circuit.save_expectation_value(Pauli(reduced), qubits=[site[q] for q in support], label=key)
        labels[pauli] = key
    return labels


def _binds(pub: EstimatorPub, circuit: QuantumCircuit) -> dict[Any, Any]:
    parameters = pub.circuit.parameters
    if not len(parameters):
        return {}
    array = pub.parameter_values.as_array(parameters)
    by_name = {p.name: p for p in circuit.parameters}
    return {by_name[p.name]: array[..., i].ravel() for i, p in enumerate(parameters)}
