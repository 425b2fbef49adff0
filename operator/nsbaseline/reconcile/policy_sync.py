"""When may reconciles trust Kopf's BaselinePolicy index? When it holds what the API server lists.

A reconcile run with a policy missing from memory would remove that policy's NetworkPolicies, so
none may run before the index is complete — after start-up, and again after this replica takes
over from another (Kopf stops its watches on a standby and lists anew when it resumes). Kopf
knows when its indexes are complete but tells no handler, so we ask the API server: one small
listing of BaselinePolicies, held against the index until every listed policy is there at the
listed generation. The listing is re-read on every try, so a policy deleted meanwhile cannot keep
us waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from nsbaseline.kube.errors import ClusterError
from nsbaseline.model import BaselinePolicy

logger = logging.getLogger("nsbaseline")

#: Seconds between two comparisons (the index usually catches up within one or two).
POLL = 0.2
#: Seconds to wait after the API server could not be asked.
RETRY = 2.0


def missing(listed: list[dict[str, Any]], indexed: Mapping[str, BaselinePolicy]) -> list[str]:
    """Names of listed policies the index lacks, or holds at another uid or generation. Pure."""
    absent = []
    for body in listed:
        meta = body.get("metadata") or {}
        policy = indexed.get(str(meta.get("name", "")))
        if (
            policy is None
            or policy.uid != meta.get("uid", "")
            or policy.generation != int(meta.get("generation") or 0)
        ):
            absent.append(str(meta.get("name", "")))
    return absent


async def until_indexed(
    list_policies: Callable[[], Awaitable[list[dict[str, Any]]]],
    indexed: Callable[[], Mapping[str, BaselinePolicy]],
) -> None:
    """Return once ``indexed()`` covers every policy ``list_policies()`` returns."""
    tries = 0
    while True:
        try:
            absent = missing(await list_policies(), indexed())
        except ClusterError as exc:
            logger.warning("cannot list BaselinePolicies (%s); trying again", exc)
            await asyncio.sleep(RETRY)
            continue
        if not absent:
            return
        tries += 1
        if tries % 50 == 0:
            logger.info("waiting for Kopf to index BaselinePolicies %s", ", ".join(absent))
        await asyncio.sleep(POLL)


__all__ = ["missing", "until_indexed"]
