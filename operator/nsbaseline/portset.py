"""Sets of ports per protocol, as NetworkPolicy rules allow them: unions, intersections, text.

Part of the NetworkPolicy evaluator (:mod:`nsbaseline.evaluator`). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nsbaseline.names import MAX_PORT, PROTOCOLS


@dataclass(frozen=True)
class PortSet:
    """Per protocol, sorted disjoint inclusive port ranges."""

    ranges: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = ()

    @classmethod
    def all(cls) -> PortSet:
        return cls(tuple((p, ((1, MAX_PORT),)) for p in PROTOCOLS))

    @classmethod
    def of(cls, items: Iterable[tuple[str, int, int]]) -> PortSet:
        by_proto: dict[str, list[tuple[int, int]]] = {}
        for proto, lo, hi in items:
            by_proto.setdefault(proto, []).append((lo, hi))
        return cls(tuple((p, _merge(by_proto[p])) for p in PROTOCOLS if by_proto.get(p)))

    def _map(self) -> dict[str, tuple[tuple[int, int], ...]]:
        return dict(self.ranges)

    def union(self, other: PortSet) -> PortSet:
        items = [(p, lo, hi) for s in (self, other) for p, rs in s.ranges for lo, hi in rs]
        return PortSet.of(items)

    def intersect(self, other: PortSet) -> PortSet:
        mine, theirs = self._map(), other._map()
        items = []
        for proto in PROTOCOLS:
            for lo1, hi1 in mine.get(proto, ()):
                for lo2, hi2 in theirs.get(proto, ()):
                    if max(lo1, lo2) <= min(hi1, hi2):
                        items.append((proto, max(lo1, lo2), min(hi1, hi2)))
        return PortSet.of(items)

    def contains(self, protocol: str, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self._map().get(protocol, ()))

    @property
    def empty(self) -> bool:
        return not self.ranges

    def __str__(self) -> str:
        if self == PortSet.all():
            return "all"
        if self.empty:
            return "none"
        parts = []
        for proto, rs in self.ranges:
            if rs == ((1, MAX_PORT),):
                parts.append(f"all/{proto}")
                continue
            parts.extend(f"{lo}/{proto}" if lo == hi else f"{lo}-{hi}/{proto}" for lo, hi in rs)
        return ",".join(parts)


def _merge(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


__all__ = ["PortSet"]
