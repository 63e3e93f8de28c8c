"""Logging: everything goes through the standard :mod:`logging` module under ``qrmi``.

:func:`set_log_callback` keeps the reference's hook for hosts that want the records themselves
(the Slurm helper forwards them to slurmd's log). A filter on the ``qrmi`` logger masks anything
that looks like a credential, as a second line of defence behind code that never logs secrets.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

__all__ = ["LogCallback", "redact", "set_log_callback"]

LogCallback = Callable[[str, str, str], None]

_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(basic\s+)[A-Za-z0-9+/=]+"),
    re.compile(
        r"(?i)((?:api[_-]?key|apikey|token|secret|password|client_secret|access_key|"
        r"x-munge-cred|authorization)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,}]+"
    ),
    re.compile(r"(?i)(X-Amz-Signature=|X-Amz-Credential=)[^&\s\"]+"),
]

_LEVEL_NAMES = {logging.ERROR: "ERROR", logging.WARNING: "WARN", logging.INFO: "INFO"}


def redact(text: str) -> str:
    """``text`` with credential-looking values replaced by ``***``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    return text


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class _CallbackHandler(logging.Handler):
    def __init__(self, callback: LogCallback) -> None:
        super().__init__()
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        level = _LEVEL_NAMES.get(record.levelno, "DEBUG")
        try:
            self.callback(level, record.name, record.getMessage())
        except Exception:  # a host callback must never break a QRMI call
            self.handleError(record)


_root = logging.getLogger("qrmi")
_root.addFilter(_RedactingFilter())
_callback_handler: _CallbackHandler | None = None


def set_log_callback(callback: LogCallback | None) -> None:
    """Send every ``qrmi`` log record to ``callback(level, target, message)``; ``None`` stops it.

    ``level`` is one of ``ERROR``, ``WARN``, ``INFO``, ``DEBUG``; ``target`` is the logger name.
    While a callback is set, records are not also passed to the root logger's handlers.
    """
    global _callback_handler
    if _callback_handler is not None:
        _root.removeHandler(_callback_handler)
        _callback_handler = None
        _root.propagate = True
    if callback is not None:
        _callback_handler = _CallbackHandler(callback)
        _callback_handler.addFilter(_RedactingFilter())
        _root.addHandler(_callback_handler)
        _root.propagate = False
