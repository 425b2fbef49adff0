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


def test_the_figure_is_each_side_s_median_time_per_object() -> None:
    rounds = [
        Round(OPERATOR, 11.0, 1100),  # 10 ms per object
        Round(REFERENCE, 8.0, 1000),  # 8
        Round(REFERENCE, 30.0, 1000),  # 30: a slow stretch of the machine, outvoted
        Round(OPERATOR, 13.2, 1100),  # 12
        Round(OPERATOR, 9.9, 1100),  # 9
        Round(REFERENCE, 9.0, 1000),  # 9
    ]
    summary = summarise(rounds)
    assert summary.operator_ms == pytest.approx(10.0)
    assert summary.reference_ms == pytest.approx(9.0)
    assert summary.ratio == pytest.approx(10.0 / 9.0)


def test_a_side_without_rounds_is_an_error_not_a_figure() -> None:
    with pytest.raises(ValueError, match="no reference round"):
        summarise([Round(OPERATOR, 1.0, 10)])
