"""Network namespaces from Python: run a step inside one, or make a socket that lives in one.

A socket stays in the network namespace it was created in, whatever thread or process uses it
afterwards. So a single process can listen, probe and forward in many namespaces at once: it
enters a namespace with ``setns(2)`` only for the ``socket()`` call, then returns to where it was.
``setns`` changes the namespace of the calling *thread* only, which keeps other threads (and the
asyncio loop's other work) in the namespace they were in.

Needs CAP_SYS_ADMIN (root). Namespaces are the ones ``ip netns add NAME`` mounts under
``/run/netns``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_fds: dict[str, int] = {}
_fds_lock = threading.Lock()


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open as ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _fd(name: str) -> int:
    """An fd of the namespace ``name``, opened once per process and cached."""
    with _fds_lock:
        fd = _fds.get(name)
        if fd is None:
            fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
            _fds[name] = fd
        return fd


def forget(name: str) -> None:
    """Close the cached fd of ``name`` (before deleting the namespace, so nothing pins it)."""
    with _fds_lock:
        fd = _fds.pop(name, None)
    if fd is not None:
        os.close(fd)


_home = threading.local()


def _home_fd() -> int:
    """An fd of the namespace this thread was in when it first entered another (cached: a
    thread only ever leaves it inside :func:`entered`, which always comes back)."""
    fd: int | None = getattr(_home, "fd", None)
    if fd is None:
        fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        _home.fd = fd
    return fd


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside namespace ``name``, then come back."""
    home = _home_fd()
    setns(_fd(name))
    try:
        yield
    finally:
        setns(home)


def socket_in(
    name: str | None, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
) -> socket.socket:
    """A new socket created inside namespace ``name`` (``None``: the caller's namespace)."""
    if name is None:
        return socket.socket(family, kind)
    with entered(name):
        return socket.socket(family, kind)
