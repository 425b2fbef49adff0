"""A small HTTP CONNECT proxy on loopback, for the proxy tests.

It runs on an asyncio loop of its own in a background thread, on a free port, and counts the
CONNECTs it serves per target. ``routes`` maps the targets clients ask for to where the proxy
really connects: point a kubeconfig's server at a name only the proxy can reach (for instance
``kubernetes.default.svc``, which is in the API server's certificate but resolves nowhere
outside a cluster) and every successful request is proof that it went through the proxy.
Targets not in ``routes`` are refused (403) and counted in ``refused``.

With an :class:`Interceptor` the proxy terminates TLS itself (with a certificate from a test CA
that the test's kubeconfig trusts), answers the first request of some connections with an
error such as ``429 Too Many Requests`` + ``Retry-After``, and relays every other connection
byte for byte to the real API server over a verified TLS connection. The client's bearer token
passes through unchanged (client certificates cannot: use a token user with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import ssl
import tempfile
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Address = tuple[str, int]


@dataclass
class ProxyCA:
    """A throwaway CA and a serving certificate from it, for a TLS-terminating proxy."""

    names: Sequence[str]
    ca_pem: bytes = b""
    cert_pem: bytes = b""
    key_pem: bytes = b""

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        from hack.localcluster import self_signed_ca

        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nsbaseline-e2e-proxy-ca")])
        ca = self_signed_ca(ca_name, ca_key, datetime.timedelta(days=1))
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for name in self.names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.names[0])]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM)
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def server_context(self) -> ssl.SSLContext:
        """TLS server side for the proxy, HTTP/1.1 only (so requests can be told apart)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_bytes(self.cert_pem)
            key.write_bytes(self.key_pem)
            ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


@dataclass
class Interceptor:
    """Terminate TLS and answer the first request of every ``every``-th connection (the 1st,
    the (1+every)-th, ...) with ``status`` and ``Retry-After: retry_after``, then close it;
    relay all other connections to the upstream API server verified against ``upstream_ca``."""

    ca: ProxyCA
    upstream_ca: bytes
    upstream_name: str
    status: int = 429
    retry_after: int = 1
    every: int = 2
    injected: int = 0
    relayed: int = 0
    seen: list[str] = field(default_factory=list)

    def upstream_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.upstream_ca.decode())
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def response(self) -> bytes:
        reason = {429: "Too Many Requests", 503: "Service Unavailable"}.get(self.status, "Error")
        body = json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "injected by the e2e proxy: come back later",
                "reason": "TooManyRequests" if self.status == 429 else "ServiceUnavailable",
                "details": {"retryAfterSeconds": self.retry_after},
                "code": self.status,
            }
        ).encode()
        head = (
            f"HTTP/1.1 {self.status} {reason}\r\n"
            f"Content-Type: application/json\r\n"
            f"Retry-After: {self.retry_after}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n"
        )
        return head.encode() + body


class ConnectProxy:
    """An HTTP CONNECT proxy on ``127.0.0.1:<free port>`` in a thread of its own.

    Use as a context manager. ``connects`` counts served CONNECTs by the target asked for
    (``host:port``); ``refused`` those not in ``routes``; ``open_tunnels`` those still open.
    """

    def __init__(
        self, routes: Mapping[Address, Address], interceptor: Interceptor | None = None
    ) -> None:
        self.routes = dict(routes)
        self.interceptor = interceptor
        self.connects: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.open_tunnels = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server_ctx = interceptor.ca.server_context() if interceptor else None
        self._upstream_ctx = interceptor.upstream_context() if interceptor else None
        self._connection_number = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def total(self) -> int:
        return sum(self.connects.values())

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        host, _, port_text = target.rpartition(":")
        asked = (host.strip("[]"), int(port_text or 443))
        route = self.routes.get(asked)
        if route is None:
            self.refused[target] += 1
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        self.connects[target] += 1
        self._connection_number += 1
        number = self._connection_number
        if self.interceptor is None:
            up_reader, up_writer = await asyncio.open_connection(*route)
        else:
            up_reader, up_writer = await asyncio.open_connection(
                *route, ssl=self._upstream_ctx, server_hostname=self.interceptor.upstream_name
            )
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        self.open_tunnels += 1
        try:
            if self.interceptor is not None:
                assert self._server_ctx is not None
                await writer.start_tls(self._server_ctx)
                if (number - 1) % self.interceptor.every == 0:
                    await self._inject(reader, writer, self.interceptor)
                    return
                self.interceptor.relayed += 1
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self.open_tunnels -= 1
            with contextlib.suppress(Exception):
                up_writer.close()

    @staticmethod
    async def _inject(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, interceptor: Interceptor
    ) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        lines = request.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length:
            await reader.readexactly(length)
        interceptor.seen.append(lines[0])
        interceptor.injected += 1
        writer.write(interceptor.response())
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
