"""The emulator's execution engine: IBM primitive V2 jobs run on qiskit-aer.

This is the public, in-process API that the local emulator's worker and the vendor fakes in
:mod:`qrmi.testing` call to "execute" submitted IBM jobs::

    text = run_primitive("sampler", {"pubs": [[qasm3_text, None, 1000]], "version": 2})
    result = qiskit_ibm_runtime.utils.result_decoder.ResultDecoder.decode(text)  # PrimitiveResult

Input is IBM's SamplerV2 / EstimatorV2 params JSON (already parsed): ``{"pubs": [...],
"version": 2, "support_qiskit": true, "shots"?, "precision"?, "options"?}``. A circuit is
OpenQASM 3 text (OpenQASM 2 is accepted too) or a QPY circuit in qiskit-ibm-runtime's
``RuntimeEncoder`` form; parameter values are nested lists ordered like
``circuit.parameters`` (or a ``{name: values}`` mapping); observables are Pauli strings,
``{pauli: coeff}`` mappings or nested lists of them. Options honoured:
``options.default_shots`` (sampler), ``options.default_precision`` (estimator) and
``options.simulator.seed_simulator`` (when no ``seed`` is given).

The result is the JSON text IBM returns: ``RuntimeEncoder`` applied to a ``PrimitiveResult``
of ``SamplerPubResult`` (one ``BitArray`` per classical register, keyed by register name) or
``PubResult`` (``evs``, ``stds``).

Simulation: noise-free by default (exact expectation values, shot-sampled counts);
``noise=True`` applies the device snapshot's noise model (circuits that are not in the device's
instruction set are first transpiled for it, seeded) and adds shot noise of the requested
precision to expectation values. The method is chosen per pub from the number of *active*
qubits (those some instruction touches; idle qubits cost nothing): ``statevector`` up to
:data:`STATEVECTOR_MAX_QUBITS`, ``matrix_product_state`` above. The MPS is exact when its memory,
bounded from the circuit's two-qubit gate structure (in the cheaper of index order and a
bandwidth-reducing qubit order), stays under :data:`MPS_MEMORY_LIMIT_BYTES`; failing that, up to
28 active qubits run as an exact statevector when it fits the task's memory budget and is
estimated to take under half its time budget; otherwise the MPS bond
dimension is capped at ``limits.mps_max_bond_dimension`` and the result may be *approximate*:
each pub's ``metadata["simulator"]`` then has ``approximate``, ``max_bond_dimension``,
``truncations`` and ``discarded_weight`` (the sum of the weights Aer's ``MPS_log_data`` reports
discarded), the result's ``metadata["emulator"]["approximate"]`` is true if any pub is, and a
line per pub is added to ``notes``. A pub whose capped simulation is estimated to exceed
``limits.timeout_seconds`` is refused with :class:`~qrmi.errors.InvalidInputError`.

Size limits (:class:`~qrmi.backends.local_emulator.inputs.Limits`: declared qubits and bits,
``for`` loop iterations) are checked on the OpenQASM text before any parser sees it.

Importing this module is cheap: qiskit is imported on the first :func:`run_primitive` call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qrmi.backends.local_emulator.devices import (
    DEFAULT_DEVICE,
    available_devices,
    canonical_device_name,
    device_qubits,
    device_snapshot,
)
from qrmi.backends.local_emulator.inputs import PROGRAM_IDS, Limits, check_limits, check_params

__all__ = [
    "DEFAULT_DEVICE",
    "DEFAULT_PRECISION",
    "DEFAULT_SHOTS",
    "MPS_MEMORY_LIMIT_BYTES",
    "PROGRAM_IDS",
    "STATEVECTOR_MAX_QUBITS",
    "STATEVECTOR_SECONDS_PER_UNIT",
    "Limits",
    "available_devices",
    "device_snapshot",
    "loaded",
    "run_primitive",
    "small_job_seconds",
]

#: Shots per pub when neither the pub, ``shots`` nor ``options.default_shots`` give any
#: (IBM SamplerV2's default).
DEFAULT_SHOTS = 4096
#: Estimator precision when neither the pub, ``precision`` nor ``options.default_precision``
#: give any (IBM EstimatorV2's default).
DEFAULT_PRECISION = 0.015625
#: Largest number of active qubits simulated as a dense statevector (16 MiB at 20 qubits).
STATEVECTOR_MAX_QUBITS = 20
#: Largest number of active qubits of a noisy estimator pub simulated as an exact density
#: matrix; above, noise is averaged over sampled trajectories.
DENSITY_MATRIX_MAX_QUBITS = 10
#: Upper bound of the memory a matrix product state may need before a pub is refused.
MPS_MEMORY_LIMIT_BYTES = 1 << 30
#: Seconds per operation and amplitude of a dense statevector (measured on 2 busy cores).
STATEVECTOR_SECONDS_PER_UNIT = 2.4e-9


def run_primitive(
    program_id: str,
    params: Mapping[str, Any],
    *,
    device: str | None = None,
    noise: bool = False,
    seed: int | None = None,
    limits: Limits | None = None,
    notes: list[str] | None = None,
) -> str:
    """Run a sampler or estimator job and return its result as IBM-encoded JSON text.

    Args:
        program_id: ``"sampler"`` or ``"estimator"``.
        params: the primitive V2 input (parsed JSON object).
        device: device snapshot whose size (and, with ``noise``, noise) is emulated;
            default :data:`DEFAULT_DEVICE`.
        noise: apply the device's noise model.
        seed: seed of the simulator and of the estimator's shot noise, for reproducible runs.
        limits: size limits and MPS bond dimension cap (default :class:`Limits`()); the
            time and memory budgets in it are enforced by the caller (the worker), except
            that Aer gets the memory budget as ``max_memory_mb``.
        notes: a list to which lines for the task's log are appended (approximations made).

    Raises:
        UnsupportedPayloadError: unknown ``program_id``.
        InvalidInputError: malformed input, a circuit too large for the device or the limits,
            or too costly to simulate even approximately; the message names the pub and the fix.
        QrmiError: the simulator failed.
    """
    check_params(program_id, params)
    name = canonical_device_name(device or DEFAULT_DEVICE)
    limits = limits or Limits()
    check_limits(params, limits, device=name, device_qubits=device_qubits(name))
    result: str = _simulator().run(
        program_id,
        params,
        device=name,
        noise=noise,
        seed=seed,
        limits=limits,
        notes=[] if notes is None else notes,
    )
    return result


def small_job_seconds(
    program_id: str, params: Mapping[str, Any], *, device: str, noise: bool
) -> float | None:
    """Estimated seconds of a job small enough to simulate in the submitting process (noise
    free, every pub a dense statevector of a few qubits), or None for any other job."""
    seconds: float | None = _simulator().small_job_seconds(
        program_id, params, device=canonical_device_name(device), noise=noise
    )
    return seconds


def loaded() -> bool:
    """Whether this process has qiskit and the simulator imported (a first job imports them)."""
    from qrmi._lasting_import import imported

    return imported(_SIMULATE_MODULE)


def _simulator() -> Any:
    """The heavy simulation module (qiskit, qiskit-aer), imported once per process from a
    thread that never exits (see :mod:`qrmi._lasting_import`)."""
    from qrmi._lasting_import import lasting_import

    return lasting_import(_SIMULATE_MODULE)


_SIMULATE_MODULE = "qrmi.backends.local_emulator._simulate"
