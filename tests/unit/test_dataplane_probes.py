"""The dataplane's pure parts, without packets: DNS messages, how lane records turn into the
two figures, and why a machine cannot run the dataplane tests.

The packets themselves are tested in tests/dataplane (root only); these pin the bookkeeping
those tests rely on, so that a figure of zero cannot come from a counting mistake.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct

import pytest

from hack.dataplane import dataplane
from hack.dataplane.probes import (
    ALLOWED,
    DENIED,
    Flow,
    LaneRecord,
    Result,
    dns_answers,
    dns_query,
    summarize,
)
from tests.support import dataplane as support

EGRESS = Flow("ns-a", "198.51.100.10", 443, "tcp", name="egress")
INGRESS = Flow("ns-b", "10.244.0.2", 8080, "tcp", name="ingress")
DNS = Flow("ns-a", "10.244.0.3", 53, "dns-udp", name="dns")


def _answer(query: bytes, address: str) -> bytes:
    """What a DNS server answers to ``query``: one A record, by a compression pointer."""
    qid = struct.unpack("!H", query[:2])[0]
    header = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + socket.inet_aton(address)
    return header + query[12:] + record


def test_a_dns_query_is_read_back_from_a_real_answer_shape() -> None:
    query = dns_query("probe.nsbaseline.test", 0x1234)
    assert query[:2] == b"\x12\x34" and b"\x05probe\x0ansbaseline\x04test\x00" in query
    assert dns_answers(_answer(query, "198.51.100.53"), 0x1234) == ["198.51.100.53"]


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda m: b"\x00\x00" + m[2:], "not the answer to our query"),
        (lambda m: m[:3] + bytes([m[3] | 0x03]) + m[4:], "rcode 3"),
        (lambda m: m[:5], "short"),
    ],
)
def test_a_dns_answer_from_someone_else_or_an_error_is_not_an_answer(
    mutate: object, error: str
) -> None:
    query = dns_query("probe.nsbaseline.test", 7)
    reply = mutate(_answer(query, "198.51.100.53"))  # type: ignore[operator]
    with pytest.raises(ValueError, match=error):
        dns_answers(reply, 7)


def _record(expect: str, *results: tuple[Flow, str, float], flows: int = 2) -> LaneRecord:
    rec = LaneRecord("lane", expect, "ns-a", flows)
    for flow, verdict, t in results:
        rec.add(Result(flow, verdict, t, 0.001))
    return rec


def test_a_lane_is_isolated_once_every_flow_was_denied_and_only_later_successes_count() -> None:
    # Ingress is isolated first (allow-monitoring applied), egress a moment later (allow-dns):
    # egress succeeding in between is not a violation; egress succeeding after its own first
    # denial is.
    rec = _record(
        DENIED,
        (EGRESS, ALLOWED, 1.0),
        (INGRESS, DENIED, 2.0),
        (EGRESS, ALLOWED, 3.0),
        (EGRESS, DENIED, 4.0),
        (INGRESS, DENIED, 5.0),
        (EGRESS, ALLOWED, 6.0),
    )
    assert rec.isolated_at == 4.0
    fig = summarize([rec], opted_in_at={"ns-a": 0.5})
    assert [e[1] for e in fig.forbidden_successes] == [6.0]
    assert fig.isolation_latency == {"ns-a": 3.5}
    assert not fig.never_isolated


def test_successes_while_the_test_lifted_the_isolation_are_not_violations() -> None:
    rec = _record(
        DENIED,
        (EGRESS, DENIED, 1.0),
        (INGRESS, DENIED, 1.1),
        (EGRESS, ALLOWED, 5.0),  # exception started at 4.0
        (EGRESS, ALLOWED, 9.5),  # expired at 9.0, not re-isolated yet
        (EGRESS, DENIED, 10.0),  # re-isolated
        (EGRESS, ALLOWED, 11.0),  # a violation again
    )
    fig = summarize([rec], released={"ns-a": [(4.0, 9.0)]})
    assert [e[1] for e in fig.forbidden_successes] == [11.0]


def test_every_dns_failure_is_counted_with_its_time() -> None:
    rec = _record(
        ALLOWED,
        (DNS, ALLOWED, 1.0),
        (DNS, DENIED, 2.0),
        (DNS, "timeout", 3.0),
        (DNS, ALLOWED, 4.0),
        flows=1,
    )
    fig = summarize([rec])
    assert [(e[1], e[2]) for e in fig.dns_failures] == [(2.0, DENIED), (3.0, "timeout")]
    assert fig.dns_probes == 4
    assert rec.runs == [
        [ALLOWED, 1.0, 1.0, 1],
        [DENIED, 2.0, 2.0, 1],
        ["timeout", 3.0, 3.0, 1],
        [ALLOWED, 4.0, 4.0, 1],
    ]


def test_a_lane_never_denied_is_reported_as_never_isolated() -> None:
    rec = _record(DENIED, (EGRESS, ALLOWED, 1.0), (INGRESS, DENIED, 2.0))
    fig = summarize([rec], opted_in_at={"ns-a": 0.0})
    assert fig.never_isolated == ["lane"] and fig.isolation_latency == {}


def test_without_root_the_dataplane_tests_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("NSBASELINE_TEST_KUBECONFIG", raising=False)
    reason = support.unavailable_reason()
    assert reason == (
        "the dataplane needs: root (running as uid 1000; network namespaces and iptables need it)"
    )


def test_a_missing_command_is_named_with_its_debian_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd: None if cmd == "dnsmasq" else real_which(cmd))
    missing = dataplane.missing_requirements()
    assert "dnsmasq (Debian package dnsmasq-base)" in missing
