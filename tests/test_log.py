"""Logging reaches callbacks and never carries credentials."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator

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


@pytest.fixture
def root_output() -> Iterator[io.StringIO]:
    """What a handler the application put on the root logger writes (qrmi adds none of its own)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


@pytest.mark.parametrize("name", ["qrmi.http", "qrmi.backends.ibm_quantum_system", "qrmi"])
def test_records_of_every_qrmi_logger_reach_a_root_handler_masked(
    name: str, root_output: io.StringIO
) -> None:
    logging.getLogger(name).warning("Authorization: Bearer %s refused", "tok3n-Secret")
    written = root_output.getvalue()
    assert f"{name} Authorization: ***" in written and "refused" in written
    assert "tok3n-Secret" not in written


def test_a_logged_traceback_is_masked_too(root_output: io.StringIO) -> None:
    try:
        raise ValueError("apikey=Hunter2Secret rejected")
    except ValueError:
        logging.getLogger("qrmi.backends.pasqal_cloud").exception("call failed")
    written = root_output.getvalue()
    assert "call failed" in written and "ValueError: apikey=***" in written
    assert "Hunter2Secret" not in written


def test_other_libraries_records_are_left_alone(root_output: io.StringIO) -> None:
    logging.getLogger("someapp").warning("token=%s", "not-ours")
    assert "token=not-ours" in root_output.getvalue()


def test_masking_holds_when_a_submodule_is_imported_directly() -> None:
    # No qrmi.X name is touched: the application imports a submodule and logs through it.
    code = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stdout, format='%(name)s %(message)s')\n"
        "import qrmi.backends.base\n"
        "logging.getLogger('qrmi.backends.base').warning('password=%s', 'Hunter2Secret')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "qrmi.backends.base password=***"
