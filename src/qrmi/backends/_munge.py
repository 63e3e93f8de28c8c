"""MUNGE credentials through ``libmunge.so.2`` (ctypes), for Pasqal's on-prem Warden.

MUNGE authenticates a local uid/gid to another host sharing the same key: ``munged`` encodes a
credential on the client node and ``munged`` on the server node decodes it. The Warden expects
a fresh credential with an empty payload in the ``x-munge-cred`` header of every request.

:class:`Munge` talks to the daemon listening on ``socket`` (default: the system socket,
``/run/munge/munge.socket.2``). Every failure raises :class:`MungeError` with libmunge's own
reason (daemon not running, socket missing, credential replayed or expired ...). The library is
loaded on first use, so importing this module costs nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass

__all__ = ["DEFAULT_SOCKET", "Munge", "MungeError", "MungeIdentity"]

#: Where ``munged`` listens unless told otherwise.
DEFAULT_SOCKET = "/run/munge/munge.socket.2"

# ``munge_opt_t`` values from munge.h (stable ABI since MUNGE 0.5).
_MUNGE_OPT_SOCKET = 8
_EMUNGE_SUCCESS = 0

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_libc: ctypes.CDLL | None = None


class MungeError(RuntimeError):
    """libmunge failed; ``code`` is the ``munge_err_t`` value (0 when the library is missing)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class MungeIdentity:
    """What a decoded credential proves: the uid and gid of the process that encoded it."""

    uid: int
    gid: int
    payload: bytes


def _load() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    global _lib, _libc
    with _lock:
        if _lib is None or _libc is None:
            path = ctypes.util.find_library("munge") or "libmunge.so.2"
            try:
                lib = ctypes.CDLL(path)
            except OSError as exc:
                raise MungeError(
                    f"the MUNGE library (libmunge.so.2) cannot be loaded: {exc}. Install it "
                    "(Debian/Ubuntu: apt install libmunge2; RHEL: dnf install munge-libs)."
                ) from None
            _declare(lib)
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.free.argtypes = [ctypes.c_void_p]
            _lib = lib
        return _lib, _libc


def _declare(lib: ctypes.CDLL) -> None:
    lib.munge_ctx_create.restype = ctypes.c_void_p
    lib.munge_ctx_destroy.argtypes = [ctypes.c_void_p]
    lib.munge_ctx_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
    lib.munge_ctx_set.restype = ctypes.c_int
    lib.munge_ctx_strerror.argtypes = [ctypes.c_void_p]
    lib.munge_ctx_strerror.restype = ctypes.c_char_p
    lib.munge_strerror.argtypes = [ctypes.c_int]
    lib.munge_strerror.restype = ctypes.c_char_p
    lib.munge_encode.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
    ]
    lib.munge_encode.restype = ctypes.c_int
    lib.munge_decode.argtypes = [
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_uint),
        ctypes.POINTER(ctypes.c_uint),
    ]
    lib.munge_decode.restype = ctypes.c_int


class Munge:
    """Encode and decode MUNGE credentials through the daemon at ``socket``; thread-safe."""

    def __init__(self, socket: str | None = None) -> None:
        self.socket = socket or DEFAULT_SOCKET

    def encode(self, payload: bytes = b"") -> str:
        """A fresh credential carrying ``payload`` (the Warden uses an empty one)."""
        lib, libc = _load()
        ctx = self._context(lib)
        cred = ctypes.c_void_p()
        try:
            buffer = ctypes.create_string_buffer(payload, len(payload)) if payload else None
            code = lib.munge_encode(ctypes.byref(cred), ctx, buffer, len(payload))
            if code != _EMUNGE_SUCCESS:
                raise MungeError(self._describe(lib, ctx, code, "encode"), code)
            return ctypes.string_at(cred.value).decode("ascii") if cred.value else ""
        finally:
            if cred.value:
                libc.free(cred.value)
            lib.munge_ctx_destroy(ctx)

    def decode(self, credential: str) -> MungeIdentity:
        """Check ``credential`` and return who made it.

        Raises:
            MungeError: the credential is malformed, forged, expired, replayed, or the daemon
                cannot be reached.
        """
        lib, libc = _load()
        ctx = self._context(lib)
        data = ctypes.c_void_p()
        length = ctypes.c_int()
        uid, gid = ctypes.c_uint(), ctypes.c_uint()
        try:
            code = lib.munge_decode(
                credential.encode("ascii", errors="replace"),
                ctx,
                ctypes.byref(data),
                ctypes.byref(length),
                ctypes.byref(uid),
                ctypes.byref(gid),
            )
            if code != _EMUNGE_SUCCESS:
                raise MungeError(self._describe(lib, ctx, code, "decode"), code)
            payload = ctypes.string_at(data.value, length.value) if data.value else b""
            return MungeIdentity(uid.value, gid.value, payload)
        finally:
            if data.value:
                libc.free(data.value)
            lib.munge_ctx_destroy(ctx)

    def _context(self, lib: ctypes.CDLL) -> int:
        ctx = lib.munge_ctx_create()
        if not ctx:
            raise MungeError("libmunge could not allocate a context (out of memory)")
        if lib.munge_ctx_set(ctx, _MUNGE_OPT_SOCKET, self.socket.encode()) != _EMUNGE_SUCCESS:
            lib.munge_ctx_destroy(ctx)
            raise MungeError(f"libmunge refused the socket path {self.socket!r}")
        return int(ctx)

    def _describe(self, lib: ctypes.CDLL, ctx: int, code: int, what: str) -> str:
        reason = lib.munge_ctx_strerror(ctx) or lib.munge_strerror(code) or b"unknown error"
        return f"MUNGE {what} failed via socket {self.socket}: {reason.decode(errors='replace')}"

    def __repr__(self) -> str:
        return f"Munge(socket={self.socket!r})"
