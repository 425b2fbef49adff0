"""The dataplane's helper process: what a node's kubelet and the pods' programs would do.

One process (asyncio) for the whole node, started by :class:`hack.dataplane.dataplane.Dataplane`:

- **API forwarder**: kube-router runs in the node's network namespace, the API server listens on
  the host's loopback only. The agent opens a listening socket *inside* the node namespace
  (127.0.0.1:PORT) and connects upstream from the host namespace, copying bytes both ways: the
  host's network namespace is not changed at all (no veth, no route, no rule).
- **Listeners**: a TCP listener (accept, then close) and a UDP echo on every probed port of every
  pod, each socket created in the pod's namespace. One process serves them all.
- **Heartbeat**: every ``--heartbeat`` seconds (10) it renews the node's Lease in
  ``kube-node-lease`` and the Ready condition's ``lastHeartbeatTime``, as a kubelet does; without
  that the node turns NotReady after ~50 s and its pods are evicted.

Controlled over a Unix socket (``<state-dir>/agent.sock``), one JSON request per line:
``{"op": "listen", "netns": N, "tcp": [..], "udp": [..], "addresses": [..]}``,
``{"op": "close", "netns": N}``, ``{"op": "ping"}``. Answers ``{"ok": true}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hack.dataplane.kubeapi import ApiError, KubeAPI, now_rfc3339
from hack.dataplane.netns import forget, socket_in

log = logging.getLogger("dataplane-agent")


class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.servers: dict[str, list[asyncio.AbstractServer | asyncio.BaseTransport]] = {}
        self.stopping = asyncio.Event()

    # ----- API forwarder ---------------------------------------------------------------------
    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.args.upstream_host, self.args.upstream_port
            )
        except OSError as exc:
            log.warning("upstream connect failed: %s", exc)
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def start_forwarder(self) -> None:
        sock = socket_in(self.args.node_netns, socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.args.listen_port))
        sock.listen(128)
        sock.setblocking(False)
        await asyncio.start_server(self._forward, sock=sock)

    # ----- listeners -------------------------------------------------------------------------
    async def listen(
        self, netns: str, tcp: list[int], udp: list[int], addresses: list[str] | None = None
    ) -> None:
        """TCP listeners on 0.0.0.0 and UDP echoes on ``addresses`` (one socket per address:
        a wildcard UDP socket would answer from the outgoing interface's address, and a
        connected client drops an answer from another address than it asked)."""
        loop = asyncio.get_running_loop()
        held = self.servers.setdefault(netns, [])

        async def accept_and_close(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.transport.sendto(data, addr)  # type: ignore[attr-defined]

        for port in tcp:
            sock = socket_in(netns, socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", port))
            sock.listen(256)
            sock.setblocking(False)
            held.append(await asyncio.start_server(accept_and_close, sock=sock))
        for port in udp:
            for address in addresses or ["0.0.0.0"]:
                sock = socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((address, port))
                sock.setblocking(False)
                transport, _ = await loop.create_datagram_endpoint(Echo, sock=sock)
                held.append(transport)

    def close(self, netns: str) -> None:
        for item in self.servers.pop(netns, []):
            item.close()
        forget(netns)

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            try:
                req = json.loads(line)
                op = req.get("op")
                if op == "listen":
                    await self.listen(
                        req["netns"], req.get("tcp", []), req.get("udp", []), req.get("addresses")
                    )
                elif op == "close":
                    self.close(req["netns"])
                elif op != "ping":
                    raise ValueError(f"unknown op {op!r}")
                answer: dict[str, Any] = {"ok": True}
            except Exception as exc:
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            writer.write((json.dumps(answer) + "\n").encode())
            await writer.drain()
        writer.close()

    # ----- heartbeat -------------------------------------------------------------------------
    def heartbeat_loop(self, stop: threading.Event) -> None:
        api = KubeAPI.from_kubeconfig(Path(self.args.kubeconfig))
        node = self.args.node
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
        while not stop.is_set():
            try:
                api.merge_patch(lease_path, {"spec": {"renewTime": now_rfc3339(micro=True)}})
                status = api.get(f"/api/v1/nodes/{node}/status")
                conditions = status.get("status", {}).get("conditions", [])
                for cond in conditions:
                    if cond.get("type") == "Ready":
                        cond["lastHeartbeatTime"] = now_rfc3339()
                api.merge_patch(
                    f"/api/v1/nodes/{node}/status", {"status": {"conditions": conditions}}
                )
            except (ApiError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)
            stop.wait(self.args.heartbeat)

    async def run(self) -> None:
        await self.start_forwarder()
        sock_path = Path(self.args.control)
        sock_path.unlink(missing_ok=True)  # noqa: ASYNC240 - once, before serving
        await asyncio.start_unix_server(self.control, path=str(sock_path))
        stop = threading.Event()
        beat = threading.Thread(target=self.heartbeat_loop, args=(stop,), daemon=True)
        beat.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        print("ready", flush=True)
        await self.stopping.wait()
        stop.set()
        for netns in list(self.servers):
            self.close(netns)
        sock_path.unlink(missing_ok=True)  # noqa: ASYNC240 - once, after serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="dataplane agent (started by the dataplane)")
    parser.add_argument("--node", required=True)
    parser.add_argument("--node-netns", required=True)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--upstream-host", default="127.0.0.1")
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--heartbeat", type=float, default=10.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    start = time.monotonic()
    asyncio.run(Agent(args).run())
    log.info("agent stopped after %.0f s", time.monotonic() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
