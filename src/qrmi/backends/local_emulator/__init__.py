"""The local emulator: an embedded QPU stand-in on qiskit-aer (type string ``local-emulator``)."""

from qrmi.backends.local_emulator.backend import LocalEmulatorBackend

__all__ = ["LocalEmulatorBackend"]
