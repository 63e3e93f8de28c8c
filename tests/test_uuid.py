"""``qrmi._uuid``: the random tokens the local emulator hands out, as ``uuid.uuid4()`` would."""

from __future__ import annotations

import uuid

from qrmi._uuid import uuid4_text


def test_a_token_is_a_version_4_uuid_written_as_uuid_writes_it() -> None:
    for _ in range(200):
        text = uuid4_text()
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_tokens_differ() -> None:
    assert len({uuid4_text() for _ in range(1000)}) == 1000
