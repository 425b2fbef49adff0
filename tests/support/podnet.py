"""A pod's network namespace for a container, with the API server reachable from inside it.

The operator's manifest binds fixed ports (8080 health, 9090 metrics), and tests share the
machine, so a container must not use the host's network namespace; podman's own networks would
add a bridge, iptables rules and CNI state to the host. Instead a small forwarder process creates
a network namespace of its own (only ``lo``, up), listens inside it on ``127.0.0.1:443`` (where
the pod's in-cluster client finds "the kubernetes Service") and relays each connection to the API
server on the host's loopback: a socket stays in the namespace it was created in, so the listener
is made inside the new namespace and the upstream connections after switching back to the host's.

Nothing is left behind: the namespace has no name in ``/run/netns``; it lives as long as the
forwarder (which holds it open) and the containers that joined it, and the forwarder dies with
the process that started it. Tests reach the pod's ports the same way, with sockets created
inside the namespace (:func:`http_get`), as the kubelet's probes reach the pod's IP.

Run as ``python -m tests.support.podnet --upstream 127.0.0.1:PORT``: prints the namespace's path
(for ``podman run --network ns:PATH``) once it is ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import http.client
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
#: Where the in-cluster client inside the namespace finds the API server (kubernetes.default.svc).
SERVICE_HOST = "127.0.0.1"
SERVICE_PORT = 443

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace ``fd`` (Python 3.11 has no os.setns)."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def unshare_net() -> None:
    """Move the calling thread into a new, empty network namespace."""
    _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")


def loopback_up() -> None:
    """``ip link set lo up`` in the calling thread's namespace, without needing iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def in_namespace(ns_path: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a short-lived thread that has joined the namespace at ``ns_path``.

    Only that thread changes namespace, so the calling process stays where it was; sockets
    ``fn`` creates keep belonging to the pod's namespace after the thread is gone.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(ns_path, os.O_RDONLY)
            try:
                setns(fd)
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="podnet", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def connect(ns_path: str, port: int, host: str = "127.0.0.1", timeout: float = 5) -> socket.socket:
    """A TCP connection from inside the namespace to ``host:port`` (there)."""
    sock = in_namespace(ns_path, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def http_get(ns_path: str, port: int, path: str, timeout: float = 5) -> tuple[int, str]:
    """``GET http://127.0.0.1:port/path`` from inside the namespace: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.sock = connect(ns_path, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


class PodNetwork:
    """The forwarder process and the namespace it owns; ``path`` is for ``--network ns:``."""

    def __init__(self, upstream_host: str, upstream_port: int, log: Path) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self.path = ""

    def start(self, timeout: float = 30) -> PodNetwork:
        host, port = self.upstream
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.podnet", "--upstream", f"{host}:{port}"],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=Path(__file__).resolve().parents[2],
            )
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, timeout)
        if not line.startswith("/proc/"):
            self.stop()
            raise RuntimeError(f"the forwarder did not start: {line!r}; see {self.log}")
        self.path = line.strip()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def http_get(self, port: int, path: str, timeout: float = 5) -> tuple[int, str]:
        return http_get(self.path, port, path, timeout)


def _readline(stream: IO[str], timeout: float) -> str:
    """One line from a child's pipe, or '' after ``timeout`` seconds."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""


# ----- the forwarder process ---------------------------------------------------------------
async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(listener: socket.socket, upstream: tuple[str, int]) -> None:
    async def relay(down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*upstream)  # in the host's namespace
        except OSError:
            down_w.close()
            return
        await asyncio.gather(_pipe(down_r, up_w), _pipe(up_r, down_w))

    server = await asyncio.start_server(relay, sock=listener)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the API server (host side)")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    # Die with the test process, so a killed test run leaves no forwarder (and no namespace).
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0), "prctl")
    host_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    unshare_net()
    loopback_up()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((SERVICE_HOST, SERVICE_PORT))
    listener.listen(128)
    pod_ns = os.open("/proc/self/ns/net", os.O_RDONLY)  # held open: the namespace's handle
    setns(host_ns)
    os.close(host_ns)
    print(f"/proc/{os.getpid()}/fd/{pod_ns}", flush=True)
    asyncio.run(_serve(listener, (host, int(port))))


if __name__ == "__main__":
    main()
