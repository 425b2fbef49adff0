"""The bench's summary of the requests in one window: what a slow window sent, at a glance."""

from __future__ import annotations

import sys

from tests.support.kube import REPO

sys.path.insert(0, str(REPO / "bench"))

from run import requests_summary


def test_writes_and_reads_of_the_operators_resources_are_listed_largest_first() -> None:
    delta = {
        ("POST", "events"): 7.0,
        ("APPLY", "networkpolicies"): 5000.0,
        ("GET", "networkpolicies"): 12.0,
    }
    assert requests_summary(delta) == (
        "APPLY networkpolicies 5000, GET networkpolicies 12, POST events 7"
    )


def test_watches_and_other_resources_are_left_out() -> None:
    delta = {
        ("WATCH", "networkpolicies"): 1.0,
        ("GET", "pods"): 3.0,
        ("PUT", "leases"): 40.0,
        ("PATCH", "networkpolicies"): 2.0,
    }
    assert requests_summary(delta) == "PATCH networkpolicies 2"


def test_the_benchs_own_requests_can_be_skipped() -> None:
    delta = {("PATCH", "baselinepolicies"): 3.0, ("APPLY", "networkpolicies"): 10.0}
    skipped = [("PATCH", "baselinepolicies")]
    assert requests_summary(delta, skipped) == "APPLY networkpolicies 10"
    assert requests_summary({}, skipped) == ""
