"""The lean HTTP/1.1 pool that carries the operator's writes, against a scripted local server.

A keep-alive client has one way to go badly wrong: reading an answer as the wrong request's.
These tests pin that a connection is reused only when it is clean, and that every failure
(lost connection, timeout, ``Connection: close``, leftover bytes) retires it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop

from nsbaseline.kube.lean import LeanError, LeanPool
from nsbaseline.kube.login import Credentials
from nsbaseline.kube.tokens import TokenSource
from nsbaseline.kube.transport import Transport

Reply = Callable[[bytes, bytes, asyncio.StreamWriter], Any]
Runner = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Each test on asyncio's loop and on uvloop's (the operator's): their transports differ."""
    if request.param == "uvloop":
        return uvloop.run
    return asyncio.run


def answer(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


class Server:
    """Accepts connections on an ephemeral localhost port; ``reply`` answers each request."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[tuple[int, bytes, bytes]] = []  # (connection no., head, body)
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode().split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append((number, head, body))
                result = self.reply(head, body, writer)
                if asyncio.iscoroutine(result):
                    await result
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(reply: Reply) -> AsyncIterator[tuple[Server, str]]:
    server = Server(reply)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        listener.close()


def echo(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(answer(b'{"got": "' + body + b'"}'))


def test_sequential_requests_share_one_connection_and_each_gets_its_own_answer(run: Runner) -> None:
    async def scenario() -> None:
        async with serving(echo) as (server, url):
            pool = LeanPool(url, None)
            first = await pool.request("POST", "/a", {"Accept": "application/json"}, b"one")
            second = await pool.request("PATCH", "/b?x=1", {}, b"two")
            assert (first.status, first.body) == (200, b'{"got": "one"}')
            assert second.body == b'{"got": "two"}'
            assert pool.opened == 1 and server.connections == 1
            head = server.requests[1][1].decode()
            assert head.startswith("PATCH /b?x=1 HTTP/1.1\r\n")
            assert f"Host: {url.split('//')[1]}" in head and "Content-Length: 3" in head
            pool.close()

    run(scenario())


def test_a_chunked_answer_arriving_in_pieces_is_put_together(run: Runner) -> None:
    async def reply(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"5\r\nhel", b"lo\r\n", b"6\r\n world\r\n", b"0\r\n", b"\r\n"):
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(piece)

    async def scenario() -> None:
        async with serving(reply) as (_, url):
            pool = LeanPool(url, None)
            got = await pool.request("POST", "/x", {}, b"{}")
            assert (got.status, got.body) == (201, b"hello world")
            again = await pool.request("POST", "/x", {}, b"{}")
            assert again.body == b"hello world" and pool.opened == 1
            pool.close()

    run(scenario())


def test_a_connection_the_server_closed_while_idle_is_replaced(run: Runner) -> None:
    def reply(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(b"{}"))
        writer.close()  # an idle timeout on the server's side, right after answering

    async def scenario() -> None:
        async with serving(reply) as (server, url):
            pool = LeanPool(url, None)
            await pool.request("POST", "/x", {}, b"{}")
            await asyncio.sleep(0.05)
            got = await pool.request("POST", "/x", {}, b"{}")
            assert got.status == 200 and pool.opened == 2 and server.connections == 2
            pool.close()

    run(scenario())


def test_an_answer_cut_off_fails_the_request_and_retires_the_connection(run: Runner) -> None:
    calls = 0

    def reply(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
            writer.close()
        else:
            writer.write(answer(b"{}"))

    async def scenario() -> None:
        async with serving(reply) as (_, url):
            pool = LeanPool(url, None)
            with pytest.raises(LeanError):
                await pool.request("POST", "/x", {}, b"{}")
            assert (await pool.request("POST", "/x", {}, b"{}")).body == b"{}"
            assert pool.opened == 2
            pool.close()

    run(scenario())


def test_a_late_answer_after_a_timeout_never_reaches_the_next_request(run: Runner) -> None:
    calls = 0

    async def reply(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.3)  # answers after the client gave up
            writer.write(answer(b'"late"'))
        else:
            writer.write(answer(b'"fresh"'))

    async def scenario() -> None:
        async with serving(reply) as (_, url):
            pool = LeanPool(url, None, request_timeout=0.1)
            with pytest.raises(TimeoutError):
                await pool.request("POST", "/x", {}, b"{}")
            await asyncio.sleep(0.3)
            assert (await pool.request("POST", "/x", {}, b"{}")).body == b'"fresh"'
            assert pool.opened == 2
            pool.close()

    run(scenario())


def test_connection_close_and_leftover_bytes_retire_the_connection(run: Runner) -> None:
    calls = 0

    def reply(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            writer.write(answer(b"{}", extra="Connection: close\r\n"))
        elif calls == 2:
            writer.write(answer(b"{}") + b"HTTP/1.1 200 OK\r\n")  # out of step
        else:
            writer.write(answer(b'"third"'))

    async def scenario() -> None:
        async with serving(reply) as (_, url):
            pool = LeanPool(url, None)
            await pool.request("POST", "/x", {}, b"{}")
            await pool.request("POST", "/x", {}, b"{}")
            assert (await pool.request("POST", "/x", {}, b"{}")).body == b'"third"'
            assert pool.opened == 3
            pool.close()

    run(scenario())


def _transport(url: str) -> Transport:
    credentials = Credentials(
        server=url, ssl=ssl.create_default_context(), token=TokenSource("Bearer t")
    )
    return Transport(credentials, attempts=3)


def test_the_transport_sends_lean_requests_authorised_and_retries_a_429(run: Runner) -> None:
    calls = 0

    def reply(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            writer.write(
                answer(
                    b'{"kind":"Status","code":429}', "429 Too Many Requests", "Retry-After: 0\r\n"
                )
            )
        else:
            writer.write(answer(b'{"metadata": {"name": "x"}}', "201 Created"))

    async def scenario() -> None:
        async with serving(reply) as (server, url):
            transport = _transport(url)
            got = await transport.request("POST", "/api/v1/x", body={"a": 1}, lean=True)
            assert got == {"metadata": {"name": "x"}}
            assert calls == 2
            assert all(b"Authorization: Bearer t\r\n" in head for _, head, _ in server.requests)
            assert server.requests[0][2] == b'{"a":1}'
            await transport.close()

    run(scenario())


def test_an_unreachable_server_is_one_readable_error_from_the_lean_path(run: Runner) -> None:
    async def scenario() -> None:
        async with serving(echo) as (_, url):
            pass  # closed again: nothing listens on that port now
        transport = _transport(url)
        with pytest.raises(Exception) as caught:
            await transport.request("POST", "/api/v1/x", body={}, lean=True)
        assert type(caught.value).__name__ == "UnreachableError"
        assert "cannot reach the API server" in str(caught.value)
        assert "\n" not in str(caught.value)
        await transport.close()

    run(scenario())
