"""The transport under every API call: one pooled session, retries, pagination, streams.

API hygiene lives here once: 429 and 5xx answers are retried after the server's ``Retry-After``
(or a short backoff), lost connections are retried, a 401 logs in again once (rotated tokens, an
expired exec credential) before giving up, and every LIST is paginated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import orjson

from nsbaseline.kube.errors import ApiError, UnreachableError
from nsbaseline.kube.lean import LeanError, LeanPool
from nsbaseline.kube.login import Credentials

logger = logging.getLogger(__name__)

PAGE_SIZE = 500
#: Attempts for a request answered 429/5xx or cut off; the last failure is raised.
ATTEMPTS = 6
#: Never wait longer than this for one retry, whatever Retry-After says.
MAX_RETRY_AFTER = 30.0
#: Seconds one request may take (aiohttp's session timeout, and the lean pool's).
REQUEST_TIMEOUT = 60.0


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _backoff(attempt: int) -> float:
    return float(min(5.0, 0.2 * 2**attempt))


class Transport:
    """Requests over one pooled session; :class:`~nsbaseline.kube.client.KubeClient` adds the
    calls for each resource."""

    def __init__(
        self,
        credentials: Credentials,
        relogin: Callable[[], Credentials] | None = None,
        max_connections: int = 64,
        attempts: int = ATTEMPTS,
    ) -> None:
        self.credentials = credentials
        self._relogin = relogin if relogin is not None else credentials.reload
        self._max_connections = max_connections
        self._attempts = attempts
        self._session: aiohttp.ClientSession | None = None
        self._lean: LeanPool | None = None

    @property
    def server(self) -> str:
        return self.credentials.server

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self.credentials.session(
                limit=self._max_connections, timeout=REQUEST_TIMEOUT
            )
        return self._session

    def _get_lean(self) -> LeanPool | None:
        """The lean pool for hot-path requests; None through a proxy (aiohttp handles those)."""
        if self._lean is None and self.credentials.proxy is None:
            try:
                self._lean = LeanPool(
                    self.credentials.server,
                    self.credentials.ssl,
                    self._max_connections,
                    REQUEST_TIMEOUT,
                )
            except ValueError:
                return None
        return self._lean

    async def close(self) -> None:
        if self._lean is not None:
            self._lean.close()
            self._lean = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _login_again(self) -> None:
        if self._relogin is None:
            return
        fresh = await asyncio.to_thread(self._relogin)
        await self.close()
        self.credentials = fresh

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        lean: bool = False,
    ) -> Any:
        """One API call; JSON in and out. Raises :class:`ApiError` or :class:`UnreachableError`.

        ``lean``: send it over :class:`~nsbaseline.kube.lean.LeanPool` (the operator's writes,
        one per object in a rollout) rather than aiohttp, unless a proxy is configured.
        """
        url = path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = orjson.dumps(body) if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        relogged = False
        attempt = 0
        while True:
            attempt += 1
            if self.credentials.expired():
                await self._login_again()
            pool = self._get_lean() if lean else None
            try:
                if pool is not None:
                    status, raw, retry_after = await self._lean_request(
                        pool, method, url, data, headers
                    )
                else:
                    session = self._get_session()
                    async with session.request(
                        method, self.credentials.server + url, data=data, headers=headers
                    ) as resp:
                        raw = await resp.read()
                        retry_after = _retry_after(resp.headers.get("Retry-After"))
                        status = resp.status
            except (
                aiohttp.ClientConnectionError,
                aiohttp.ClientHttpProxyError,
                LeanError,
                TimeoutError,
            ) as exc:
                if attempt >= self._attempts:
                    raise UnreachableError(
                        f"cannot reach the API server at {self.credentials.server}: "
                        f"{_describe_connection_error(exc)}"
                    ) from exc
                await asyncio.sleep(_backoff(attempt))
                continue
            if status < 400:
                return orjson.loads(raw) if raw else None
            error = ApiError.from_response(
                status,
                raw.decode(errors="replace"),
                method=method,
                path=path,
                retry_after=retry_after,
            )
            if status == 401 and not relogged:
                relogged = True  # rotated token or expired credential: log in again, once
                if self._relogin is not None:
                    await self._login_again()
                else:
                    await self.credentials.token.renew(force=True)
                continue
            if error.retriable and attempt < self._attempts:
                delay = retry_after if retry_after is not None else _backoff(attempt)
                await asyncio.sleep(min(delay, MAX_RETRY_AFTER))
                continue
            raise error

    async def _lean_request(
        self,
        pool: LeanPool,
        method: str,
        url: str,
        data: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, bytes, float | None]:
        """One request over the lean pool, authorised as the aiohttp middleware does it."""
        token = self.credentials.token
        if token.stale():
            await token.renew()
        header = token.header()
        if header:
            headers = {**headers, "Authorization": header}
        answer = await pool.request(method, url, headers, data)
        return answer.status, answer.body, _retry_after(answer.headers.get("retry-after"))

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, params: Mapping[str, str], read_timeout: float
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A long-lived GET (a watch) yielding its body line by line.

        No retries here: the caller (a watch loop) decides to re-watch or list again.
        """
        if self.credentials.expired():
            await self._login_again()
        session = self._get_session()
        url = self.credentials.server + path + "?" + urllib.parse.urlencode(params)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=read_timeout)
        async with session.get(
            url, headers={"Accept": "application/json"}, timeout=timeout
        ) as resp:
            if resp.status >= 400:
                text = await resp.text()
                if resp.status == 401 and self._relogin is not None:
                    await self._login_again()
                raise ApiError.from_response(
                    resp.status, text, method="GET", path=path, retry_after=None
                )
            yield _lines(resp.content)

    async def pages(
        self, path: str, params: Mapping[str, str] | None = None, limit: int = PAGE_SIZE
    ) -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
        """A LIST, page by page (``limit``/``continue``): never the whole collection at once.

        Yields each page's items with the resourceVersion the listing is consistent at.
        """
        query = {**(params or {}), "limit": str(limit)}
        while True:
            result = await self.request("GET", path, params=query)
            meta = result.get("metadata") or {}
            yield result.get("items") or [], str(meta.get("resourceVersion", ""))
            token = meta.get("continue")
            if not token:
                return
            query["continue"] = token

    async def list_all(
        self, path: str, params: Mapping[str, str] | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Every item of a LIST (paginated) and the resourceVersion it is consistent at."""
        items: list[dict[str, Any]] = []
        consistent_at = ""
        async for page, page_version in self.pages(path, params):
            items.extend(page)
            consistent_at = page_version
        return items, consistent_at


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Complete lines of a watch stream (aiohttp's readline caps line length; events can be big)."""
    buffer = b""
    async for chunk in content.iter_any():
        buffer += chunk
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                break
            yield buffer[:end]
            buffer = buffer[end + 1 :]
    if buffer:
        yield buffer


def _describe_connection_error(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"the proxy answered {exc.status} {exc.message}".rstrip()
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"the proxy refused or failed: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate problem: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return str(exc.os_error) or str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, LeanError):
        return str(exc)
    return str(exc) or type(exc).__name__


__all__ = ["ATTEMPTS", "PAGE_SIZE", "Transport"]
