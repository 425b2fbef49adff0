"""A minimal asyncio API client for the benchmark, independent of the operator's own client.

The benchmark's watcher and its reference writer must not share code paths with the operator
they measure, so this reads the kubeconfig itself (token or client-certificate users) and talks
to the API server with a plain pooled ``aiohttp`` session.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml


class ApiFailure(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:300]}")
        self.status = status


def _pem_file(data: str) -> str:
    handle = tempfile.NamedTemporaryFile(delete=False, suffix=".pem")  # noqa: SIM115
    handle.write(base64.b64decode(data))
    handle.close()
    return handle.name


@dataclass
class Access:
    """Server address, TLS context and auth header taken from a kubeconfig."""

    server: str
    ssl_context: ssl.SSLContext | bool
    headers: dict[str, str]

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Access:
        config = yaml.safe_load(path.read_text())
        context_name = config.get("current-context")
        contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
        context = contexts[context_name] if context_name else next(iter(contexts.values()))
        cluster = {c["name"]: c["cluster"] for c in config["clusters"]}[context["cluster"]]
        user = {u["name"]: u["user"] for u in config.get("users", [])}.get(context.get("user"), {})
        ctx: ssl.SSLContext | bool
        if cluster.get("insecure-skip-tls-verify"):
            ctx = False
        else:
            ctx = ssl.create_default_context()
            if "certificate-authority-data" in cluster:
                ctx.load_verify_locations(
                    cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
                )
            elif "certificate-authority" in cluster:
                ctx.load_verify_locations(cafile=cluster["certificate-authority"])
            cert = user.get("client-certificate") or (
                _pem_file(user["client-certificate-data"])
                if "client-certificate-data" in user
                else None
            )
            key = user.get("client-key") or (
                _pem_file(user["client-key-data"]) if "client-key-data" in user else None
            )
            if cert:
                ctx.load_cert_chain(certfile=cert, keyfile=key)
        headers = {"Accept": "application/json"}
        if user.get("token"):
            headers["Authorization"] = f"Bearer {user['token']}"
        return cls(str(cluster["server"]).rstrip("/"), ctx, headers)


class Api:
    """One pooled session; ``limit`` bounds concurrent connections (the client's concurrency)."""

    def __init__(self, access: Access, limit: int = 16) -> None:
        self.access = access
        self.limit = limit
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.limit, ssl=self.access.ssl_context, keepalive_timeout=120
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
                read_bufsize=2**20,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        url = self.access.server + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        return url

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        ok_missing: bool = False,
    ) -> Any:
        headers = dict(self.access.headers)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with self.session.request(
            method, self.url(path, params), data=data, headers=headers
        ) as resp:
            text = await resp.text()
            if resp.status == 404 and ok_missing:
                return None
            if resp.status >= 400:
                raise ApiFailure(resp.status, text)
            return json.loads(text) if text and text[0] == "{" else text

    async def text(self, path: str) -> str:
        async with self.session.get(self.url(path), headers=self.access.headers) as resp:
            if resp.status >= 400:
                raise ApiFailure(resp.status, await resp.text())
            return await resp.text()


NP_COLLECTION = "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"


def np_path(namespace: str, name: str | None = None) -> str:
    path = NP_COLLECTION.format(ns=namespace)
    return f"{path}/{name}" if name else path
