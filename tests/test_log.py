"""Logging reaches callbacks and never carries credentials."""

from __future__ import annotations

import logging

import pytest

from qrmi import set_log_callback
from qrmi.log import redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("apikey=SuperSecret123&grant_type=x", "SuperSecret123"),
        ('{"client_secret": "s3cr3t"}', "s3cr3t"),
        ("https://s3/b/k?X-Amz-Signature=deadbeef&x=1", "deadbeef"),
        ("password: hunter2", "hunter2"),
    ],
)
def test_redact(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "***" in cleaned


def test_callback_receives_records_without_secrets() -> None:
    seen: list[tuple[str, str, str]] = []
    set_log_callback(lambda level, target, message: seen.append((level, target, message)))
    try:
        logging.getLogger("qrmi.test").warning("token=%s refused", "abcdef")
    finally:
        set_log_callback(None)
    assert seen == [("WARN", "qrmi.test", "token=*** refused")]
    logging.getLogger("qrmi.test").warning("after")
    assert len(seen) == 1
