"""Logging: everything goes through the standard :mod:`logging` module under ``qrmi``.

:func:`set_log_callback` keeps the reference's hook for hosts that want the records themselves
(the Slurm helper forwards them to slurmd's log). Anything that looks like a credential is
masked in every record of ``qrmi`` and its children (``qrmi.http``, ``qrmi.backends.*``, ...), as
a second line of defence behind code that never logs secrets.

Where the masking happens: a logger's filters see only the records created on that very logger,
not those propagated from its children, so a filter on ``qrmi`` alone would let a ``qrmi.http``
record reach a handler the application put on the root logger unmasked. The records are therefore
masked when they are created, by a wrapper around the log record factory that touches only
``qrmi`` records; the filter on ``qrmi`` and on the handler of :func:`set_log_callback` stay as
a fallback for an application that replaces the record factory without chaining it.
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

_TRACEBACK_FORMATTER = logging.Formatter()
_LEVEL_NAMES = {logging.ERROR: "ERROR", logging.WARNING: "WARN", logging.INFO: "INFO"}


def redact(text: str) -> str:
    """``text`` with credential-looking values replaced by ``***``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    return text


def _is_qrmi(name: str) -> bool:
    return name == "qrmi" or name.startswith("qrmi.")


def _redact_record(record: logging.LogRecord) -> None:
    """Mask credentials in the message, the traceback text and the stack text of ``record``."""
    try:
        message = record.getMessage()
    except Exception:  # bad %-arguments: the handler reports them, logging must not raise here
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        text = _TRACEBACK_FORMATTER.formatException(record.exc_info)
        if redact(text) != text:
            record.exc_text = redact(text)  # formatters reuse exc_text instead of re-formatting
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def _install_record_factory() -> None:
    """Wrap the current log record factory so that every ``qrmi`` record is born masked."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_qrmi_redacting", False):
        return  # already installed (e.g. the module was reloaded)

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _is_qrmi(record.name):
            _redact_record(record)
        return record

    factory._qrmi_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


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


_install_record_factory()
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
