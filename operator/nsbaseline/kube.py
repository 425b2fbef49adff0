"""The only module that talks to the Kubernetes API (besides Kopf's own watches).

A small aiohttp client on Kopf's credentials: server-side apply under our field manager, deletes
with a UID precondition (never a same-named object that replaced ours), status merge patches, and
core/v1 Events. It keeps one pooled session so a burst of writes reuses connections.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import ssl
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from nsbaseline import names

logger = logging.getLogger(__name__)

NP_PATH = "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
POLICY_PATH = f"/apis/{names.GROUP}/{names.VERSION}/{names.PLURAL}"
EVENT_NAMESPACE_FOR_CLUSTER_OBJECTS = "default"


class ApiError(Exception):
    """A non-success answer from the API server, with its status and message."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.message = message
        self.reason = reason


class Credentials:
    """What a request needs to authenticate, from a Kopf ``ConnectionInfo``-like object."""

    def __init__(self, info: Any) -> None:
        self.server: str = str(info.server).rstrip("/")
        self.token: str | None = info.token
        self.scheme: str = info.scheme or "Bearer"
        self.ssl = self._ssl_context(info)

    @staticmethod
    def _ssl_context(info: Any) -> ssl.SSLContext | bool:
        if info.insecure:
            return False
        ctx = ssl.create_default_context()
        if info.ca_path:
            ctx.load_verify_locations(cafile=info.ca_path)
        elif info.ca_data:
            data = info.ca_data
            pem = base64.b64decode(data).decode() if b"BEGIN" not in _b(data) else _b(data).decode()
            ctx.load_verify_locations(cadata=pem)
        cert, key = info.certificate_path, info.private_key_path
        if info.certificate_data:
            cert = _tempfile(info.certificate_data)
        if info.private_key_data:
            key = _tempfile(info.private_key_data)
        if cert:
            ctx.load_cert_chain(certfile=cert, keyfile=key)
        return ctx


def _b(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _tempfile(data: str | bytes) -> str:
    raw = _b(data)
    if b"BEGIN" not in raw:
        raw = base64.b64decode(raw)
    handle = tempfile.NamedTemporaryFile(delete=False, suffix=".pem")  # noqa: SIM115
    handle.write(raw)
    handle.close()
    return handle.name


def client_from_environment() -> KubeClient | None:
    """A client for the CLI: the kubeconfig (KUBECONFIG or ~/.kube/config), else the pod's
    ServiceAccount; ``None`` when neither exists. The operator itself logs in through Kopf.
    """
    import kopf

    settings = kopf.OperatorSettings()
    info = kopf.login_with_kubeconfig(settings=settings) or kopf.login_with_service_account(
        settings=settings
    )
    return KubeClient(Credentials(info)) if info is not None else None


class KubeClient:
    """Async API client. ``relogin`` is called once on a 401 to refresh rotated tokens."""

    def __init__(
        self,
        credentials: Credentials,
        relogin: Callable[[], Credentials] | None = None,
        max_connections: int = 64,
    ) -> None:
        self.credentials = credentials
        self._relogin = relogin
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, ssl=self.credentials.ssl, keepalive_timeout=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=30)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        for attempt in (1, 2):
            session = await self._get_session()
            headers = {"Accept": "application/json"}
            if self.credentials.token:
                headers["Authorization"] = f"{self.credentials.scheme} {self.credentials.token}"
            data = None
            if body is not None:
                headers["Content-Type"] = content_type
                data = json.dumps(body)
            url = self.credentials.server + path
            if params:
                url += "?" + urllib.parse.urlencode(params)
            async with session.request(method, url, data=data, headers=headers) as resp:
                text = await resp.text()
                if resp.status == 401 and attempt == 1 and self._relogin is not None:
                    self.credentials = self._relogin()
                    continue
                if resp.status >= 400:
                    raise _api_error(resp.status, text)
                return json.loads(text) if text else None
        raise AssertionError("unreachable")

    # ----- NetworkPolicies ------------------------------------------------------------------
    async def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply ``body`` as field manager ``nsbaseline`` (force: we own our fields)."""
        meta = body["metadata"]
        path = NP_PATH.format(namespace=meta["namespace"]) + "/" + meta["name"]
        result: dict[str, Any] = await self.request(
            "PATCH",
            path,
            params={"fieldManager": names.FIELD_MANAGER, "force": "true"},
            body=body,
            content_type="application/apply-patch+yaml",
        )
        return result

    async def replace_spec(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Overwrite the whole spec; for fields another manager added that apply cannot drop.

        The ``test`` of resourceVersion makes it fail rather than clobber a concurrent change.
        """
        path = NP_PATH.format(namespace=namespace) + "/" + name
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "replace", "path": "/spec", "value": spec},
        ]
        result: dict[str, Any] = await self.request(
            "PATCH",
            path,
            params={"fieldManager": names.FIELD_MANAGER},
            body=patch,
            content_type="application/json-patch+json",
        )
        return result

    async def delete(self, namespace: str, name: str, uid: str | None) -> bool:
        """Delete only the object with ``uid``; ``False`` if it is already gone."""
        path = NP_PATH.format(namespace=namespace) + "/" + name
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", path, body=body)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def list_network_policies(
        self, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request(
            "GET", "/apis/networking.k8s.io/v1/networkpolicies", params=params
        )
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def list_network_policies_at(self) -> tuple[list[dict[str, Any]], str]:
        """Every NetworkPolicy, with the resourceVersion the listing is consistent at."""
        result = await self.request("GET", "/apis/networking.k8s.io/v1/networkpolicies")
        items: list[dict[str, Any]] = result.get("items", [])
        return items, str(result.get("metadata", {}).get("resourceVersion", ""))

    # ----- BaselinePolicies -----------------------------------------------------------------
    async def list_policies(self) -> list[dict[str, Any]]:
        result = await self.request("GET", POLICY_PATH)
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def list_namespaces(self) -> list[dict[str, Any]]:
        result = await self.request("GET", "/api/v1/namespaces")
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def patch_policy_status(self, name: str, status: Mapping[str, Any]) -> None:
        """Replace the status lists and counters (merge patch; only called on real change)."""
        await self.request(
            "PATCH",
            f"{POLICY_PATH}/{name}/status",
            params={"fieldManager": names.FIELD_MANAGER},
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    # ----- Events ---------------------------------------------------------------------------
    async def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        reason: str,
        message: str,
        type_: str = "Normal",
    ) -> None:
        namespace = involved.get("namespace") or EVENT_NAMESPACE_FOR_CLUSTER_OBJECTS
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{involved.get('name', 'nsbaseline')}.",
                "namespace": namespace,
            },
            "involvedObject": dict(involved),
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "nsbaseline"},
            "reportingComponent": "nsbaseline",
            "reportingInstance": "nsbaseline",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)


def _api_error(status: int, text: str) -> ApiError:
    try:
        payload = json.loads(text)
        return ApiError(status, str(payload.get("message", text)), str(payload.get("reason", "")))
    except ValueError:
        return ApiError(status, text[:500])


async def gather_limited(limit: int, *coros: Any) -> list[Any]:
    """Run coroutines with at most ``limit`` at once; exceptions are returned, not raised."""
    semaphore = asyncio.Semaphore(limit)

    async def run(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros), return_exceptions=True)


__all__ = ["ApiError", "Credentials", "KubeClient", "gather_limited", "logger"]
