"""Task-end notifications: a client waiting for a task blocks on a socket, not a polling loop.

A waiter binds a Unix datagram socket ``DIR/waiters/<task id>.<pid>.<n>`` before it first looks
at the task's status; whoever ends the task (the worker, or a client cancelling it) sends a
datagram to every socket of that task after the store says so. The waiter then reads the status
from the store as before: a datagram only cuts a wait short, so a lost, late or forged one costs
nothing but a look at the store, and the waiter still looks now and then (its timeout) in case
the task ends with nobody to notify it (a worker killed outright).

Waiters are optional: a task id that is not a plain id, or a waiter that cannot bind (no
``/proc`` to shorten a state directory path too long for ``AF_UNIX``), makes
:meth:`Waiter.open` return None and the caller polls.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ["WAITERS_DIR", "Waiter", "notify", "sweep"]

WAITERS_DIR = "waiters"
#: ``sun_path`` holds 108 bytes, the terminating NUL included.
_MAX_SOCKET_PATH = 107
#: ``/`` + a plain task id + ``.pid.number``.
_LONGEST_NAME = 1 + 64 + 1 + 10 + 1 + 20
_PLAIN_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_numbers = itertools.count()


class Waiter:
    """A bound socket that receives the end of one task; use as a context manager."""

    def __init__(self, sock: socket.socket, path: Path) -> None:
        self._sock = sock
        self._path = path

    @classmethod
    def open(cls, state_dir: Path, task_id: str) -> Waiter | None:
        """Bind a waiter for ``task_id``, or None where notifications cannot be used."""
        if _PLAIN_ID.fullmatch(task_id) is None:
            return None
        directory = state_dir / WAITERS_DIR
        name = f"{task_id}.{os.getpid()}.{next(_numbers)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            with _short_path(directory) as short:
                if short is None:
                    sock.close()
                    return None
                sock.bind(f"{short}/{name}")
        except OSError:
            sock.close()
            return None
        return cls(sock, directory / name)

    def wait(self, seconds: float) -> bool:
        """Block until a notification arrives (True) or ``seconds`` pass (False)."""
        self._sock.settimeout(max(seconds, 0.0) or 1e-6)
        try:
            self._sock.recv(16)
        except (TimeoutError, BlockingIOError):
            return False
        except OSError:  # never let the socket break a wait: the caller polls on
            return False
        return True

    def close(self) -> None:
        """Unbind: remove the socket file."""
        self._sock.close()
        with contextlib.suppress(OSError):
            self._path.unlink()

    def __enter__(self) -> Waiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def notify(state_dir: Path, task_id: str) -> None:
    """Wake every waiter of ``task_id`` (best effort, never blocks); removes dead waiters'
    sockets (a client that was killed while it waited)."""
    prefix = f"{task_id}."
    directory = state_dir / WAITERS_DIR
    try:
        names = [e.name for e in os.scandir(directory) if e.name.startswith(prefix)]
    except OSError:
        return
    if not names:
        return
    with _short_path(directory) as short, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if short is None:
            return
        sock.setblocking(False)
        for name in names:
            try:
                sock.sendto(b"e", f"{short}/{name}")
            except ConnectionRefusedError:  # nobody bound: its waiter is gone
                with contextlib.suppress(OSError):
                    (directory / name).unlink()
            except OSError:
                pass


def sweep(state_dir: Path) -> int:
    """Remove the sockets nobody reads any more (clients killed while they waited for a task
    that has not ended yet); returns how many. Sends nothing: live waiters are not woken."""
    directory = state_dir / WAITERS_DIR
    try:
        names = [entry.name for entry in os.scandir(directory)]
    except OSError:
        return 0
    removed = 0
    with _short_path(directory) as short:
        if short is None:
            return 0
        for name in names:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
                try:
                    probe.connect(f"{short}/{name}")
                except ConnectionRefusedError:
                    with contextlib.suppress(OSError):
                        (directory / name).unlink()
                        removed += 1
                except OSError:
                    pass
    return removed


@contextlib.contextmanager
def _short_path(directory: Path) -> Iterator[str | None]:
    """A path to ``directory`` short enough for socket names in it: itself when short, else
    ``/proc/self/fd/N`` of an open descriptor of it (None without ``/proc``).

    ``sun_path`` holds 108 bytes, and state directories under a home directory or a test's
    temporary directory often leave too little room for a task id.
    """
    if len(os.fsencode(directory)) + _LONGEST_NAME <= _MAX_SOCKET_PATH:
        yield str(directory)
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        proc = f"/proc/self/fd/{fd}"
        yield proc if os.path.isdir(proc) else None
    finally:
        os.close(fd)
