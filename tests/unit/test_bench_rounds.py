"""The bench's alternating fan-out rounds: the order of the windows and the figure taken."""

from __future__ import annotations

import sys

import pytest

from tests.support.kube import REPO

sys.path.insert(0, str(REPO / "bench"))

from rounds import OPERATOR, REFERENCE, Round, abba, summarise


def test_each_pair_of_windows_reverses_the_last_so_neither_side_always_goes_first() -> None:
    assert abba(3) == [OPERATOR, REFERENCE, REFERENCE, OPERATOR, OPERATOR, REFERENCE]
    assert abba(0) == []


def test_the_figure_is_the_median_of_the_ratios_of_adjacent_windows() -> None:
    # The machine slows down after the third window: both sides take longer from then on.
    rounds = [
        Round(OPERATOR, 11.0, 1100),  # 10 ms per object
        Round(REFERENCE, 10.0, 1000),  # 10: pair 1.0
        Round(REFERENCE, 10.0, 1000),  # 10
        Round(OPERATOR, 16.5, 1100),  # 15, the slowdown begins: pair 1.5
        Round(OPERATOR, 22.0, 1100),  # 20
        Round(REFERENCE, 19.0, 1000),  # 19: pair 20/19
    ]
    summary = summarise(rounds)
    assert summary.pair_ratios == pytest.approx([1.0, 1.5, 20 / 19])
    assert summary.ratio == pytest.approx(20 / 19)
    # Each side's own median would have read the slowdown as the operator's: 15 vs 10.
    assert summary.operator_ms == pytest.approx(15.0)
    assert summary.reference_ms == pytest.approx(10.0)


def test_a_pair_without_both_sides_is_an_error_not_a_figure() -> None:
    with pytest.raises(ValueError, match="a pair needs one operator and one reference"):
        summarise([Round(OPERATOR, 1.0, 10), Round(OPERATOR, 1.0, 10)])
    with pytest.raises(ValueError, match="no pair"):
        summarise([Round(OPERATOR, 1.0, 10)])
