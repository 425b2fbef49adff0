"""Time-boxed exceptions: when they hold pieces back, and what status reports about them."""

from __future__ import annotations

import datetime
from typing import Any

from nsbaseline import exemptions
from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.policy_render import render_policy
from nsbaseline.render import TemplateSet
from nsbaseline.spec import BaselinePolicySpec

UTC = datetime.UTC
T0 = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
RAW: dict[str, Any] = {
    "exceptions": [
        {
            "namespace": "team-a",
            "pieces": ["allow-monitoring", "default-deny"],
            "reason": "INC-42 debugging",
            "expiresAt": "2030-01-01T13:00:00Z",
        },
        {
            "namespace": "team-a",
            "pieces": ["allow-dns"],
            "reason": "later",
            "expiresAt": "2030-01-01T12:30:00+00:00",
        },
        {
            "namespace": "team-b",
            "pieces": ["default-deny"],
            "reason": "old",
            "expiresAt": "2029-12-31T00:00:00Z",
        },
    ]
}
SPEC = BaselinePolicySpec.from_json(RAW)


def test_exception_is_active_strictly_before_its_deadline() -> None:
    [first, *_] = exemptions.valid(SPEC)
    assert first.deadline is not None
    assert first.active(T0)
    assert first.active(first.deadline - datetime.timedelta(microseconds=1))
    assert not first.active(first.deadline)


def test_active_exceptions_hold_back_their_pieces_for_their_namespace_only() -> None:
    assert exemptions.held_back(SPEC, "team-a", T0) == {
        "allow-monitoring",
        "default-deny",
        "allow-dns",
    }
    later = T0 + datetime.timedelta(minutes=45)
    assert exemptions.held_back(SPEC, "team-a", later) == {"allow-monitoring", "default-deny"}
    assert exemptions.held_back(SPEC, "team-b", T0) == frozenset()
    assert exemptions.held_back(SPEC, "team-c", T0) == frozenset()


def test_next_expiry_is_the_earliest_active_deadline() -> None:
    assert exemptions.next_expiry(SPEC, "team-a", T0) == datetime.datetime(
        2030, 1, 1, 12, 30, tzinfo=UTC
    )
    after = datetime.datetime(2030, 1, 1, 12, 30, tzinfo=UTC)
    assert exemptions.next_expiry(SPEC, "team-a", after) == datetime.datetime(
        2030, 1, 1, 13, 0, tzinfo=UTC
    )
    assert exemptions.next_expiry(SPEC, "team-b", T0) is None


def test_status_lists_active_before_expired() -> None:
    entries = exemptions.status_entries(SPEC, T0)
    assert [(e["namespace"], e["state"]) for e in entries] == [
        ("team-a", "Active"),
        ("team-a", "Active"),
        ("team-b", "Expired"),
    ]
    assert entries[0]["pieces"] == ["allow-dns"] and entries[0]["reason"] == "later"


def test_unparseable_entries_are_ignored() -> None:
    spec = BaselinePolicySpec.from_json(
        {"exceptions": [{"namespace": "a", "pieces": ["x"], "reason": "r", "expiresAt": "soon"}]}
    )
    assert exemptions.valid(spec) == []
    assert exemptions.valid(BaselinePolicySpec()) == []


def test_render_leaves_out_excepted_pieces_until_expiry() -> None:
    policy = BaselinePolicy.from_body(
        {"metadata": {"name": "base"}, "spec": {"monitoring": {"enabled": True}, **RAW}}
    )
    ns = Namespace("team-a", {"kubernetes.io/metadata.name": "team-a"})
    templates = TemplateSet()
    during = render_policy(templates, ns, policy, T0)
    assert [o.piece for o in during.objects] == []
    between = render_policy(templates, ns, policy, T0 + datetime.timedelta(minutes=31))
    assert [o.piece for o in between.objects] == ["allow-dns"]
    after = render_policy(templates, ns, policy, T0 + datetime.timedelta(hours=2))
    assert [o.piece for o in after.objects] == ["allow-dns", "allow-monitoring", "default-deny"]
