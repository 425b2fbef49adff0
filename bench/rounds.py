"""Alternating fan-out rounds: the operator and the reference, turn about, on one cluster state.

Why: the control plane's cost for the same writes drifts within a run (etcd compaction, Go's
garbage collector, the hypervisor's steal). Two reference runs of one fan-out in one N = 5000
run took between 0.64x and 2.07x of each other across five runs, so one operator window against
one or two reference windows minutes apart measures the drift as much as the operator. Here
both object sets are present, and the rounds go ABBA (operator, reference, reference,
operator, ...), so a slow stretch of the machine falls on both sides alike; the figure is the
median time per object of each side.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

OPERATOR, REFERENCE = "operator", "reference"


@dataclass(frozen=True)
class Round:
    """One fan-out window: who wrote, how long until every object showed the change, how many."""

    side: str
    seconds: float
    objects: int

    @property
    def per_object(self) -> float:
        return self.seconds / self.objects


def abba(pairs: int) -> list[str]:
    """The order of the windows: each pair reverses the last, so neither side always goes first."""
    order: list[str] = []
    for i in range(pairs):
        order += [OPERATOR, REFERENCE] if i % 2 == 0 else [REFERENCE, OPERATOR]
    return order


@dataclass(frozen=True)
class Summary:
    operator_ms: float
    reference_ms: float

    @property
    def ratio(self) -> float:
        return self.operator_ms / self.reference_ms


def summarise(rounds: Sequence[Round]) -> Summary:
    """Median milliseconds per object of each side (sides may differ in object count)."""

    def median_ms(side: str) -> float:
        values = [r.per_object for r in rounds if r.side == side]
        if not values:
            raise ValueError(f"no {side} round")
        return statistics.median(values) * 1000

    return Summary(median_ms(OPERATOR), median_ms(REFERENCE))


__all__ = ["OPERATOR", "REFERENCE", "Round", "Summary", "abba", "summarise"]
