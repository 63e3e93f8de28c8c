"""Random UUIDs without the ``uuid`` module.

On Linux, ``import uuid`` imports ``platform`` (and compiles its regular expressions) to learn
the operating system's name; that is about 2 ms of every ``--qpu`` step's Slurm helper, which
needs nothing but a random token (the local emulator's lease).
"""

from __future__ import annotations

import os

__all__ = ["uuid4_text"]


def uuid4_text() -> str:
    """A random (version 4, RFC 4122) UUID, written as ``str(uuid.uuid4())`` writes one."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
