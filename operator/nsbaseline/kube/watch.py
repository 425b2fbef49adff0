"""List-then-watch of one resource, as client-go's reflector does it, for a :class:`Mirror`.

The initial listing is paginated and streamed page by page into the mirror (never held whole);
then a watch continues from the listing's resourceVersion with bookmarks. When the server says
the version is too old (410 Gone), or the connection is lost for long, it lists again — and a
relist tells the mirror what exists *now*, so objects deleted while nobody watched are noticed
(a plain watch restart never reports them).

Lines are parsed with orjson: at thousands of events per second the JSON decoding of watch lines
is a large share of the operator's own CPU.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import orjson

from nsbaseline.kube.client import KubeClient
from nsbaseline.kube.errors import ApiError, ClusterError

logger = logging.getLogger(__name__)

#: Seconds a watch request may stay open before the server closes it (we then re-watch).
WATCH_TIMEOUT = 290
#: Pause between attempts when the API server cannot be reached.
RETRY_DELAY = (0.5, 1.0, 2.0, 5.0, 10.0)


class Mirror(Protocol):
    """What a watch feeds: a relist in pages, then single events."""

    def relist_begin(self) -> None: ...
    def relist_page(self, items: list[dict[str, Any]]) -> None: ...
    def relist_end(self, resource_version: str) -> None: ...
    def event(self, kind: str, body: dict[str, Any]) -> None: ...


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


async def run(
    client: KubeClient,
    path: str,
    mirror: Mirror,
    params: Mapping[str, str] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Keep ``mirror`` in step with the resource at ``path`` until ``stop`` is set (or cancelled).

    Never raises for lost connections, API server restarts or 410s: it lists again and goes on.
    """
    failures = 0
    while stop is None or not stop.is_set():
        try:
            version = await _relist(client, path, mirror, params)
            failures = 0
            while True:
                version = await _watch(client, path, mirror, params, version)
        except Gone:
            logger.debug("watch of %s expired (410): listing again", path)
        except (ClusterError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            delay = RETRY_DELAY[min(failures, len(RETRY_DELAY) - 1)]
            failures += 1
            logger.warning("watch of %s failed (%s); listing again in %.1f s", path, exc, delay)
            await asyncio.sleep(delay)


async def _relist(
    client: KubeClient, path: str, mirror: Mirror, params: Mapping[str, str] | None
) -> str:
    mirror.relist_begin()
    version = ""
    async for page, page_version in client.pages(path, params):
        mirror.relist_page(page)
        version = page_version
    mirror.relist_end(version)
    return version


async def _watch(
    client: KubeClient,
    path: str,
    mirror: Mirror,
    params: Mapping[str, str] | None,
    version: str,
) -> str:
    """One watch request; returns the last version seen (to continue from)."""
    query = {
        **(params or {}),
        "watch": "1",
        "resourceVersion": version,
        "allowWatchBookmarks": "true",
        "timeoutSeconds": str(WATCH_TIMEOUT),
    }
    async with client.stream(path, query, read_timeout=WATCH_TIMEOUT + 30) as lines:
        async for line in lines:
            if not line.strip():
                continue
            event = orjson.loads(line)
            kind = event.get("type")
            body = event.get("object") or {}
            if kind == "ERROR":
                if body.get("code") == 410:
                    raise Gone
                raise ApiError(int(body.get("code") or 500), str(body.get("message", "")))
            meta = body.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            if kind != "BOOKMARK":
                mirror.event(str(kind), body)
    return version


__all__ = ["Gone", "Mirror", "run"]
