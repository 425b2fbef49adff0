"""A minimal Kubernetes REST client for the dataplane: Nodes, Leases, Pods and their status.

The dataplane writes what a kubelet would (a Node and its heartbeat, Pod status) many times per
test; spawning kubectl for each write would cost more CPU than the packets. Standard library
only, one keep-alive HTTPS connection per thread, credentials from a kubeconfig (bearer token or
client certificate, as the local control plane and kind produce).
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import os
import ssl
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ApiError(Exception):
    """The API server answered with an error status; ``status`` and ``reason`` say which."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def now_rfc3339(micro: bool = False) -> str:
    """The current UTC time as Kubernetes writes it (``MicroTime`` when ``micro``)."""
    t = datetime.datetime.now(datetime.UTC)
    if micro:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Kubeconfig:
    """The parts of a kubeconfig's current context this client uses."""

    server: str
    ca_pem: bytes | None
    insecure: bool
    token: str | None
    cert_pem: bytes | None
    key_pem: bytes | None
    tls_server_name: str | None

    @classmethod
    def load(cls, path: Path) -> Kubeconfig:
        doc = yaml.safe_load(path.read_text())
        ctx_name = doc.get("current-context") or doc["contexts"][0]["name"]
        ctx = next(c for c in doc["contexts"] if c["name"] == ctx_name)["context"]
        cluster = next(c for c in doc["clusters"] if c["name"] == ctx["cluster"])["cluster"]
        entry: dict[str, Any] = next(
            (u for u in doc.get("users", []) if u["name"] == ctx.get("user")), {}
        )
        user: dict[str, Any] = entry.get("user", {}) if entry else {}

        def blob(data_key: str, file_key: str, src: dict[str, Any]) -> bytes | None:
            if src.get(data_key):
                return base64.b64decode(src[data_key])
            if src.get(file_key):
                return Path(src[file_key]).read_bytes()
            return None

        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = Path(user["tokenFile"]).read_text().strip()
        return cls(
            server=str(cluster["server"]).rstrip("/"),
            ca_pem=blob("certificate-authority-data", "certificate-authority", cluster),
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
            token=token,
            cert_pem=blob("client-certificate-data", "client-certificate", user),
            key_pem=blob("client-key-data", "client-key", user),
            tls_server_name=cluster.get("tls-server-name"),
        )

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_pem:
            ctx.load_verify_locations(cadata=self.ca_pem.decode())
        if self.cert_pem and self.key_pem:
            # ssl wants files; keep them only as long as loading takes.
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
                cert.write_bytes(self.cert_pem)
                key.write_bytes(self.key_pem)
                os.chmod(key, 0o600)
                ctx.load_cert_chain(str(cert), str(key))
        return ctx


class KubeAPI:
    """JSON over HTTPS to one API server; thread-safe (a connection per thread)."""

    def __init__(self, config: Kubeconfig) -> None:
        self.config = config
        url = urllib.parse.urlsplit(config.server)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 443
        self._ctx = config.ssl_context()
        self._local = threading.local()

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeAPI:
        return cls(Kubeconfig.load(path))

    def _conn(self) -> http.client.HTTPSConnection:
        conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=30)
            self._local.conn = conn
        return conn

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
    ) -> Any:
        """Send one request; the decoded JSON answer, or :class:`ApiError`."""
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        headers = {"Accept": "application/json"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, OSError):
                # A keep-alive connection the server closed: one fresh try.
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        text = raw.decode(errors="replace")
        if resp.status >= 400:
            try:
                status = json.loads(text)
                raise ApiError(resp.status, status.get("reason", ""), status.get("message", text))
            except ValueError:
                raise ApiError(resp.status, resp.reason, text) from None
        return json.loads(text) if text else None

    # Conveniences for the calls the dataplane makes.
    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def create(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, "application/merge-patch+json")

    def delete(self, path: str, grace_period: int | None = None) -> Any:
        body = None if grace_period is None else {"gracePeriodSeconds": grace_period}
        return self.request("DELETE", path, body)
