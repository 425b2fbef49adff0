"""The ``Authorization`` header of every request, kept valid (see :class:`TokenSource`)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from pathlib import Path

import aiohttp

from nsbaseline.kube.errors import LoginError

#: Renew a token this long before it expires, so no request goes out with a dying one.
EXPIRY_MARGIN = datetime.timedelta(seconds=5)

Reload = Callable[[], tuple[str | None, datetime.datetime | None]]


class TokenSource:
    """The ``Authorization`` header of every request, kept valid.

    Three kinds: a fixed header (a static token, basic auth; none for client certificates), a
    file re-read whenever it changes (``tokenFile``, the in-cluster token), and a header that
    expires and is renewed by running the loader again (exec plugins, auth-providers).
    """

    def __init__(
        self,
        header: str | None,
        *,
        expiry: datetime.datetime | None = None,
        path: Path | None = None,
        reload: Reload | None = None,
    ) -> None:
        self._header = header
        self._expiry = expiry
        self._path = path
        self._reload = reload
        self._stamp: tuple[int, int] | None = None
        self._lock: asyncio.Lock | None = None
        if path is not None:
            self._read_file()

    @property
    def expiry(self) -> datetime.datetime | None:
        return self._expiry

    def header(self) -> str | None:
        """The current header; a token file is re-read when its size or mtime changed."""
        if self._path is not None:
            try:
                stat = self._path.stat()
            except OSError:
                return self._header  # mid-rotation: keep the last good token
            if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                self._read_file()
        return self._header

    def _read_file(self) -> None:
        assert self._path is not None
        try:
            stat = self._path.stat()
            token = self._path.read_text().strip()
        except OSError as exc:
            if self._header is None:
                raise LoginError(f"cannot read token file {self._path}: {exc.strerror}") from exc
            return
        if token:
            self._header = f"Bearer {token}"
            self._stamp = (stat.st_mtime_ns, stat.st_size)

    def stale(self, now: datetime.datetime | None = None) -> bool:
        """Whether the header is about to expire (only renewable headers expire)."""
        if self._expiry is None or self._reload is None:
            return False
        now = now or datetime.datetime.now(datetime.UTC)
        return now >= self._expiry - EXPIRY_MARGIN

    @property
    def renewable(self) -> bool:
        return self._reload is not None or self._path is not None

    def renew_now(self) -> None:
        """Get a fresh header (runs the exec plugin again); blocking."""
        if self._path is not None:
            self._stamp = None
            self._read_file()
        if self._reload is not None:
            self._header, self._expiry = self._reload()

    async def renew(self, *, force: bool = False) -> None:
        """Renew once for all the requests that found the header stale at the same moment."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        before = self._header
        async with self._lock:
            if self._header != before:
                return  # another request renewed it while this one waited
            if force or self.stale():
                await asyncio.to_thread(self.renew_now)

    async def middleware(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """aiohttp client middleware: every request (ours and Kopf's) carries a valid header."""
        if self.stale():
            await self.renew()
        header = self.header()
        if header:
            request.headers["Authorization"] = header
        return await handler(request)


__all__ = ["EXPIRY_MARGIN", "Reload", "TokenSource"]
