"""Conformance harness of the ``pasqal-cloud`` backend against its fake."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

from conformance.harness import BackendHarness
from qrmi.models import Payload, ResourceType
from qrmi.protocol import QuantumResourceProtocol
from qrmi.resource import QuantumResource
from qrmi.testing.pasqal_cloud import PasqalCloudFake

#: Emulated QPU time per run: a quick task (20 runs) takes 0.1 s, a slow one (6000) 30 s.
SECONDS_PER_RUN = 0.005


@cache
def pulser_sequence() -> str:
    """A two-atom Rydberg pulse on Pulser's AnalogDevice, as abstract representation."""
    from pulser.devices import AnalogDevice
    from pulser.pulse import Pulse
    from pulser.sequence import Sequence

    register = AnalogDevice.pre_calibrated_layouts[0].define_register(0, 1)
    sequence = Sequence(register, AnalogDevice)
    sequence.declare_channel("rydberg", "rydberg_global")
    sequence.add(Pulse.ConstantPulse(200, 2.0, 0.0, 0.0), "rydberg")
    sequence.measure("ground-rydberg")
    return str(sequence.to_abstract_repr())


def check_counter(text: str) -> None:
    counter = json.loads(text)["counter"]
    assert counter and all(len(bits) == 2 for bits in counter)


def pulser_harness(
    make_resource: Callable[[], QuantumResourceProtocol], teardown: Callable[[], None]
) -> BackendHarness:
    """The harness of a Pasqal backend (cloud or local) whose fake runs one Pulser job at a
    time at :data:`SECONDS_PER_RUN`."""
    return BackendHarness(
        make_resource=make_resource,
        quick_payload=lambda: Payload.PasqalCloud(sequence=pulser_sequence(), job_runs=20),
        slow_payload=lambda: Payload.PasqalCloud(sequence=pulser_sequence(), job_runs=6000),
        unsupported_payload=lambda: Payload.QiskitPrimitive(input="{}", program_id="sampler"),
        concurrency=1,
        timeout=60.0,
        check_result=check_counter,
        teardown=teardown,
    )


def make_harness(workdir: Path) -> BackendHarness:
    fake = PasqalCloudFake(seconds_per_run=SECONDS_PER_RUN, seed=7).start()
    settings = fake.settings(HOME=str(workdir))
    return pulser_harness(
        lambda: QuantumResource.from_config("EMU_FREE", ResourceType.PasqalCloud, settings),
        teardown=fake.stop,
    )
