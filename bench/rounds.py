"""Alternating fan-out rounds: the operator and the reference, turn about, on one cluster state.

Why: the control plane's cost for the same writes drifts within a run (etcd compaction, Go's
garbage collector, the hypervisor's steal). Two reference runs of one fan-out in one N = 5000
run took between 0.64x and 2.07x of each other across five runs, so one operator window against
one or two reference windows minutes apart measures the drift as much as the operator. Here
both object sets are present, and the rounds go in pairs, ABBA (operator, reference, reference,
operator, ...). The figure is the median of the pairs' ratios: each pair's two windows are
adjacent in time, so drift between pairs cancels. Each side's median time per object on its own
did not: in one N = 5000 run the machine slowed down from the fourth window on (both sides took
12 s before and 17-22 s after), and those medians gave 1.38x where the three pairs gave 1.01x,
1.38x and 1.05x.
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
    #: Each side's median milliseconds per object, for the table.
    operator_ms: float
    reference_ms: float
    #: Per pair of adjacent windows: operator / reference time per object.
    pair_ratios: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.pair_ratios)


def summarise(rounds: Sequence[Round]) -> Summary:
    """Pairs are consecutive windows, as :func:`abba` orders them (sides may differ in count)."""
    pairs = [rounds[i : i + 2] for i in range(0, len(rounds) - 1, 2)]
    ratios: list[float] = []
    for pair in pairs:
        by_side = {r.side: r for r in pair}
        if set(by_side) != {OPERATOR, REFERENCE}:
            raise ValueError(f"a pair needs one {OPERATOR} and one {REFERENCE} round: {pair}")
        ratios.append(by_side[OPERATOR].per_object / by_side[REFERENCE].per_object)
    if not ratios:
        raise ValueError("no pair of rounds")

    def median_ms(side: str) -> float:
        return statistics.median(r.per_object for r in rounds if r.side == side) * 1000

    return Summary(median_ms(OPERATOR), median_ms(REFERENCE), ratios)


__all__ = ["OPERATOR", "REFERENCE", "Round", "Summary", "abba", "summarise"]
