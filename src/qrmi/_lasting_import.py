"""Import a heavy module once per process, from a thread that never exits.

qiskit crashes the process (SIGSEGV) when it was first imported by a thread that has since
exited, as the short-lived request threads of a server or a fake are. The emulator engine and
the IBM fakes therefore import qiskit through :func:`lasting_import`.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType

__all__ = ["imported", "lasting_import"]

_lock = threading.Lock()
#: Modules whose import has *finished*: ``sys.modules`` holds a module from the start of its
#: import on, so a second thread must not take it from there.
_done: dict[str, ModuleType] = {}


def lasting_import(name: str) -> ModuleType:
    """Module ``name``, fully imported; from the main thread directly, from any other thread
    by a helper thread that stays parked for the life of the process."""
    module = _done.get(name)
    if module is None:
        with _lock:
            module = _done.get(name) or _import(name)
            _done[name] = module
    return module


def imported(name: str) -> bool:
    """Whether :func:`lasting_import` has finished importing ``name`` in this process."""
    return name in _done


def _import(name: str) -> ModuleType:
    if threading.current_thread() is threading.main_thread():
        return importlib.import_module(name)
    imported: list[ModuleType] = []
    failure: list[BaseException] = []
    finished = threading.Event()

    def import_and_park() -> None:
        try:
            imported.append(importlib.import_module(name))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)
        finished.set()
        threading.Event().wait()

    threading.Thread(target=import_and_park, name=f"import-{name}", daemon=True).start()
    finished.wait()
    if failure:
        raise failure[0]
    return imported[0]
