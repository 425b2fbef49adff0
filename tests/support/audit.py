"""Read the local API server's audit log: which LISTs a client made, with which parameters.

``hack/localcluster.py`` writes it when started with ``audit=True`` (the e2e session does):
LIST and WATCH requests at Metadata level, one JSON line per completed request. The request URI
shows whether a listing was paginated (``limit=``) and whether its continuations were followed
(``continue=``); the user names the client.
"""

from __future__ import annotations

import datetime
import json
import math
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: The page size of a LIST that only checks access or existence.
PROBE_LIMIT = 1


@dataclass(frozen=True)
class Call:
    """One LIST or WATCH request, as the API server recorded it."""

    verb: str
    user: str
    user_agent: str
    uri: str
    received: datetime.datetime
    code: int

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]

    @property
    def params(self) -> dict[str, str]:
        query = self.uri.split("?", 1)[1] if "?" in self.uri else ""
        return dict(urllib.parse.parse_qsl(query, keep_blank_values=True))

    @property
    def limit(self) -> int | None:
        value = self.params.get("limit")
        return int(value) if value else None

    @property
    def continued(self) -> bool:
        return bool(self.params.get("continue"))


def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def calls(
    log: Path,
    user: str,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    verbs: Iterable[str] = ("list",),
) -> list[Call]:
    """The user's requests of ``verbs`` received in [since, until), oldest first."""
    wanted = set(verbs)
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line being written as we read
        if event.get("verb") not in wanted or event.get("user", {}).get("username") != user:
            continue
        received = _time(event["requestReceivedTimestamp"])
        if (since and received < since) or (until and received >= until):
            continue
        out.append(
            Call(
                verb=event["verb"],
                user=user,
                user_agent=event.get("userAgent", ""),
                uri=event["requestURI"],
                received=received,
                code=int(event.get("responseStatus", {}).get("code", 0)),
            )
        )
    return sorted(out, key=lambda c: c.received)


def pagination_problems(listing: list[Call], path: str, at_least: int) -> list[str]:
    """What is wrong with the LISTs of ``path`` when the collection held ``at_least`` items
    throughout: each first page must carry ``limit`` and be followed by enough continuations
    (``ceil(at_least / limit) - 1`` of them) to read the whole collection. A LIST with
    ``limit=1`` is taken for a probe (access or existence check) and needs no continuation."""
    mine = [c for c in listing if c.path == path]
    # ``limit=1`` asks "may I list / is there any?", not for the collection: a probe is not a
    # listing that stopped early (that nothing was missed is checked on the results).
    firsts = [c for c in mine if not c.continued and c.limit != PROBE_LIMIT]
    continuations = [c for c in mine if c.continued]
    problems = [f"no limit: {c.uri}" for c in firsts if c.limit is None]
    needed = sum(math.ceil(at_least / c.limit) - 1 for c in firsts if c.limit)
    if len(continuations) < needed:
        problems.append(
            f"{path}: {len(firsts)} listing(s) of >= {at_least} items need >= {needed} "
            f"continue request(s), saw {len(continuations)}: {[c.uri for c in mine]}"
        )
    return problems
