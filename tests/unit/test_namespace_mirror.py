"""The namespace mirror and the policy-index gate: what may wake a reconcile, and when it may run.

A reconcile that runs before every namespace and policy is known removes objects it should keep,
and a namespace event that changes nothing a reconcile reads must wake nothing (at 10,000
namespaces, status churn would otherwise keep the workers busy).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nsbaseline.kube.errors import ClusterError
from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.reconcile import policy_sync
from nsbaseline.reconcile.namespaces import ObservedNamespaces


def body(name: str, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}, **meta}, "status": {}}


def mirror() -> tuple[ObservedNamespaces, list[str]]:
    woken: list[str] = []
    return ObservedNamespaces(woken.append), woken


def listed(ns: ObservedNamespaces, *bodies: dict[str, Any]) -> None:
    ns.relist_begin()
    ns.relist_page(list(bodies))
    ns.relist_end("1")


def test_nothing_is_known_and_nothing_wakes_until_the_first_listing_is_whole() -> None:
    ns, woken = mirror()
    ns.relist_begin()
    ns.relist_page([body("a")])
    assert not ns.ready.is_set()
    assert ns.namespace("a") is None
    ns.relist_page([body("b")])
    ns.relist_end("7")
    assert ns.ready.is_set()
    assert sorted(ns.namespace_names()) == ["a", "b"]
    assert woken == []  # the start-up sweep reconciles everything anyway


def test_a_status_only_change_wakes_nothing_but_a_label_change_does() -> None:
    ns, woken = mirror()
    listed(ns, body("a", {"team": "x"}))
    ns.event("MODIFIED", {**body("a", {"team": "x"}), "status": {"conditions": [{"type": "X"}]}})
    assert woken == []
    ns.event("MODIFIED", body("a", {"team": "y"}))
    assert woken == ["a"]
    assert ns.namespace("a") == Namespace("a", {"team": "y"})


def test_a_namespace_created_while_we_watch_is_told_apart_from_a_change() -> None:
    woken: list[str] = []
    new: list[str] = []
    ns = ObservedNamespaces(woken.append, new.append)
    listed(ns, body("a"))
    ns.event("ADDED", body("b"))  # created while we watch
    ns.event("ADDED", body("a", {"team": "x"}))  # known already (a watch restart): a change
    ns.event("MODIFIED", body("b", {"team": "y"}))
    assert new == ["b"]
    assert woken == ["a", "b"]


def test_a_namespace_being_deleted_is_terminating_and_then_gone() -> None:
    ns, woken = mirror()
    listed(ns, body("a"))
    ns.event("MODIFIED", body("a", deletionTimestamp="2026-01-01T00:00:00Z"))
    view = ns.namespace("a")
    assert view is not None and view.terminating
    ns.event("DELETED", body("a"))
    assert ns.namespace("a") is None
    assert woken == ["a", "a"]


def test_a_relist_wakes_exactly_the_namespaces_that_changed_appeared_or_vanished_unseen() -> None:
    ns, woken = mirror()
    listed(ns, body("same"), body("relabelled", {"x": "1"}), body("vanished"))
    listed(ns, body("same"), body("relabelled", {"x": "2"}), body("new"))
    assert sorted(woken) == ["new", "relabelled", "vanished"]
    assert ns.namespace("vanished") is None


def test_label_keys_are_shared_between_namespaces() -> None:
    one = Namespace.from_body(body("a", {"nsbaseline.io/" + "enabled": "true"}))
    two = Namespace.from_body(body("b", {"nsbaseline.io/" + "enabled": "true"}))
    assert next(iter(one.labels)) is next(iter(two.labels))


# ----- the policy-index gate --------------------------------------------------------------------
def policy_body(name: str, uid: str, generation: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": uid, "generation": generation}}


def indexed(name: str, uid: str, generation: int) -> BaselinePolicy:
    return BaselinePolicy(name=name, uid=uid, generation=generation)


def test_the_index_is_incomplete_while_a_listed_policy_is_missing_replaced_or_older() -> None:
    listing = [policy_body("a", "u1", 2), policy_body("b", "u2", 1)]
    assert policy_sync.missing(listing, {"a": indexed("a", "u1", 2)}) == ["b"]
    assert policy_sync.missing(listing, {"a": indexed("a", "old", 2), "b": indexed("b", "u2", 1)})
    assert policy_sync.missing(listing, {"a": indexed("a", "u1", 1), "b": indexed("b", "u2", 1)})
    complete = {"a": indexed("a", "u1", 2), "b": indexed("b", "u2", 1)}
    assert policy_sync.missing(listing, complete) == []
    assert policy_sync.missing([], {}) == []  # no policies at all: ready at once


def test_the_gate_opens_when_the_index_catches_up_and_survives_a_failed_listing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(policy_sync, "POLL", 0.0)
    monkeypatch.setattr(policy_sync, "RETRY", 0.0)
    index: dict[str, BaselinePolicy] = {}
    calls = 0

    async def list_policies() -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ClusterError("the API server is restarting")
        if calls == 3:
            index["a"] = indexed("a", "u1", 1)  # Kopf's listing arrives meanwhile
        return [policy_body("a", "u1", 1)]

    async def scenario() -> None:
        await asyncio.wait_for(policy_sync.until_indexed(list_policies, lambda: index), 5)

    asyncio.run(scenario())
    assert calls == 3


def test_a_policy_event_waits_for_the_whole_namespace_listing_before_expecting_namespaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At 10,104 namespaces a restart wrote a policy's status twice: Kopf's policy event came
    while our namespace listing ran, so the new generation awaited only the namespaces known."""
    from nsbaseline import handlers

    seen: list[list[str]] = []

    class Reconciler:
        def policy_changed(self, policy: BaselinePolicy | None, name: str) -> None:
            seen.append(sorted(ns.namespace_names()))

    ns, _ = mirror()
    monkeypatch.setattr(handlers.RUNTIME, "reconciler", Reconciler())
    monkeypatch.setattr(handlers.RUNTIME, "namespaces", ns)

    async def scenario() -> None:
        new = policy_body("base", "u1", 1)
        event = asyncio.create_task(handlers.policy_seen("base", new, None))
        ns.relist_begin()
        ns.relist_page([body("a")])
        await asyncio.sleep(0.01)
        assert seen == []  # still listing
        ns.relist_page([body("b")])
        ns.relist_end("9")
        await asyncio.wait_for(event, 5)

    asyncio.run(scenario())
    assert seen == [["a", "b"]]
