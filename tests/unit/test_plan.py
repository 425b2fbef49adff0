"""build_plan: desired versus actual in one namespace, ordered so traffic is never cut wrongly."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from nsbaseline.model import BaselinePolicy, ManagedObject, Namespace
from nsbaseline.plan import (
    HASH_ANNOTATION,
    Action,
    Plan,
    build_plan,
    desired_hash,
    in_sync,
    with_hash,
)
from nsbaseline.policy_render import PolicyRender, render_policy
from nsbaseline.render import RenderedObject, TemplateSet
from tests.support.builders import NOW, foreign, in_cluster, opted_in, policy

NS = opted_in("team-a")
TEMPLATES = TemplateSet()
BROKEN = TemplateSet.from_sources({"allow-dns": "{{ nope }}"})
FULL: dict[str, Any] = {"monitoring": {"enabled": True}, "ingressController": {"enabled": True}}


def render(
    pol: BaselinePolicy, ns: Namespace = NS, templates: TemplateSet = TEMPLATES
) -> PolicyRender:
    return render_policy(templates, ns, pol, NOW)


def converged(*renders: PolicyRender) -> list[ManagedObject]:
    """What the cluster holds once every render was applied."""
    return [in_cluster(o, uid=f"uid-{o.name}") for r in renders for o in r.objects]


def plan_for(
    renders: Sequence[PolicyRender],
    actual: Sequence[ManagedObject],
    policies: Sequence[BaselinePolicy] | None = None,
    applied: dict[tuple[str, str], str] | None = None,
) -> Plan:
    all_policies = {p.name: p for p in policies or [r.policy for r in renders]}
    return build_plan(NS, renders, actual, all_policies, applied)


def verbs(actions: Sequence[Action]) -> list[tuple[str, str]]:
    return [(a.verb, a.piece) for a in actions]


# --- creates, ordering ---


def test_new_namespace_gets_allows_first_then_default_deny() -> None:
    pol = policy("base", **FULL)
    plan = plan_for([render(pol)], [])
    assert [sorted(verbs(p)) for p in plan.phases] == [
        [
            ("Create", "allow-dns"),
            ("Create", "allow-ingress-controller"),
            ("Create", "allow-monitoring"),
        ],
        [("Create", "default-deny")],
    ]
    assert not plan.audit and not plan.conflicts and not plan.errors
    for action in plan.writes:
        assert action.body is not None
        assert action.body["metadata"]["annotations"][HASH_ANNOTATION] == action.digest
        assert action.digest == desired_hash(
            next(o.body for o in render(pol).objects if o.name == action.name)
        )
        assert not action.repair


def test_converged_namespace_needs_no_write() -> None:
    r = render(policy("base", **FULL))
    plan = plan_for([r], converged(r))
    assert plan.phases == [] and plan.audit == [] and plan.conflicts == []
    assert [o.name for o in plan.selected["base"]] == [o.name for o in r.objects]


# --- updates and repair ---


def test_changed_policy_updates_only_what_changed_and_is_not_a_repair() -> None:
    before = render(policy("base", generation=1))
    after = render(policy("base", generation=2, dns={"ports": [{"port": 53, "protocol": "UDP"}]}))
    plan = plan_for([after], converged(before), applied=_applied(before))
    assert verbs(plan.writes) == [("Update", "allow-dns")]
    assert not plan.writes[0].repair


def test_drift_from_what_we_applied_is_a_repair() -> None:
    r = render(policy("base"))
    actual = [
        in_cluster(r.objects[0], spec={"podSelector": {}, "policyTypes": ["Egress"]}),
        *converged(r)[1:],
    ]
    plan = plan_for([r], actual, applied=_applied(r))
    [action] = plan.writes
    assert (action.verb, action.name, action.repair) == ("Update", r.objects[0].name, True)


def test_deleted_managed_object_is_recreated_as_a_repair() -> None:
    r = render(policy("base"))
    dns = next(o for o in r.objects if o.piece == "allow-dns")
    actual = [o for o in converged(r) if o.name != dns.name]
    plan = plan_for([r], actual, applied=_applied(r))
    assert [(a.verb, a.piece, a.repair) for a in plan.writes] == [("Create", "allow-dns", True)]


def test_object_that_lost_our_labels_but_kept_our_owner_reference_is_repaired() -> None:
    r = render(policy("base"))
    deny = next(o for o in r.objects if o.piece == "default-deny")
    stripped = in_cluster(deny, labels={"tenant": "edit"})
    assert stripped.ours
    actual = [stripped, *(o for o in converged(r) if o.name != deny.name)]
    plan = plan_for([r], actual, applied=_applied(r))
    assert [(a.verb, a.piece, a.repair) for a in plan.writes] == [("Update", "default-deny", True)]


def _applied(r: PolicyRender) -> dict[tuple[str, str], str]:
    return {(NS.name, o.name): desired_hash(o.body) for o in r.objects}


# --- deletes, ordering ---


def test_unselected_policy_objects_are_deleted_deny_first() -> None:
    r = render(policy("base", **FULL))
    actual = converged(r)
    plan = plan_for([], actual, policies=[r.policy])
    assert [verbs(p) for p in plan.phases] == [
        [("Delete", "default-deny")],
        [
            ("Delete", "allow-dns"),
            ("Delete", "allow-ingress-controller"),
            ("Delete", "allow-monitoring"),
        ],
    ]
    by_name = {o.name: o for o in actual}
    for action in plan.writes:
        assert action.uid == by_name[action.name].uid  # delete preconditioned on the uid we saw
        assert action.policy_name == "base"


def test_objects_of_a_deleted_policy_are_removed() -> None:
    gone = render(policy("gone"))
    kept = render(policy("kept"))
    plan = plan_for([kept], converged(gone, kept), policies=[kept.policy])
    assert sorted((a.verb, a.policy_name, a.piece) for a in plan.writes) == [
        ("Delete", "gone", "allow-dns"),
        ("Delete", "gone", "default-deny"),
    ]


def test_full_phase_order_allow_apply_deny_apply_deny_delete_other_delete() -> None:
    """Turning egress denial off: the deny is narrowed before DNS goes; another policy's new
    allowances arrive before its deny, and a removed policy loses its deny before its allows."""
    old = render(policy("old"))
    a_before = render(policy("a"))
    a_after = render(policy("a", generation=2, defaultDeny={"egress": False}))
    b = render(policy("b", monitoring={"enabled": True}))
    plan = plan_for([a_after, b], converged(old, a_before), policies=[a_after.policy, b.policy])
    assert [sorted((x.verb, x.policy_name, x.piece) for x in p) for p in plan.phases] == [
        [("Create", "b", "allow-dns"), ("Create", "b", "allow-monitoring")],
        [("Create", "b", "default-deny"), ("Update", "a", "default-deny")],
        [("Delete", "old", "default-deny")],
        [("Delete", "a", "allow-dns"), ("Delete", "old", "allow-dns")],
    ]


def test_object_kept_only_by_owner_reference_is_deleted_under_that_policy() -> None:
    r = render(policy("gone"))
    obj = in_cluster(r.objects[0], labels={})
    plan = plan_for([], [obj], policies=[])
    [action] = plan.writes
    assert (action.verb, action.policy_name, action.piece) == ("Delete", "gone", r.objects[0].piece)


# --- what is never touched ---


def test_foreign_object_holding_our_name_is_a_conflict_and_never_written() -> None:
    r = render(policy("base"))
    deny_name = "nsbaseline-base-default-deny"
    actual = [foreign(NS.name, deny_name), *(o for o in converged(r) if o.name != deny_name)]
    plan = plan_for([r], actual)
    assert [(c.policy_name, c.namespace, c.name) for c in plan.conflicts] == [
        ("base", NS.name, deny_name)
    ]
    assert plan.writes == []


def test_foreign_object_is_not_deleted_when_no_longer_wanted() -> None:
    plan = plan_for([], [foreign(NS.name, "nsbaseline-old-default-deny")], policies=[])
    assert plan.writes == [] and plan.conflicts == []


def test_objects_of_other_owners_are_never_touched() -> None:
    others = [
        foreign(NS.name, "allow-web", **{"app.kubernetes.io/managed-by": "Helm"}),
        foreign(NS.name, "nsbaseline-x-allow-dns", **{"nsbaseline.io/policy": "x"}),
        foreign(NS.name, "deny-all"),
    ]
    r = render(policy("base"))
    plan = plan_for([r], [*others, *converged(r)])
    assert plan.writes == [] and plan.conflicts == [] and plan.audit == []


# --- failures and audit ---


def test_policy_that_failed_to_render_keeps_everything_in_place() -> None:
    before = render(policy("base", **FULL))
    after = render(policy("base", generation=2, monitoring={"enabled": True}), templates=BROKEN)
    assert after.errors and after.objects  # some pieces rendered, allow-dns did not
    actual = [
        in_cluster(o, spec={"podSelector": {}}) if o.piece == "default-deny" else in_cluster(o)
        for o in before.objects
    ]
    plan = plan_for([after], actual)
    assert plan.writes == []  # no update of the drifted deny, no delete of ingress-controller
    assert [e.template for e in plan.errors] == ["allow-dns"]
    assert "base" in plan.selected


def test_a_failed_policy_does_not_hold_back_the_others() -> None:
    bad = render(policy("bad"), templates=BROKEN)
    good = render(policy("good"))
    plan = plan_for([bad, good], [])
    assert {a.policy_name for a in plan.writes} == {"good"}
    assert len(plan.errors) == 1


def test_audit_mode_writes_nothing_and_reports_every_pending_change() -> None:
    pol = policy("audit", mode="Audit", monitoring={"enabled": True})
    earlier = render(policy("audit", uid=pol.uid))
    drifted = [in_cluster(o, spec={"podSelector": {}}) for o in earlier.objects]
    stale = in_cluster(
        render(policy("audit", uid=pol.uid, ingressController={"enabled": True})).objects[1]
    )
    assert stale.piece == "allow-ingress-controller"
    plan = plan_for([render(pol)], [*drifted, stale])
    assert plan.phases == [] and plan.writes == []
    assert sorted(verbs(plan.audit)) == [
        ("Create", "allow-monitoring"),
        ("Delete", "allow-ingress-controller"),
        ("Update", "allow-dns"),
        ("Update", "default-deny"),
    ]


def test_audit_policy_that_stopped_selecting_reports_deletes_instead_of_deleting() -> None:
    pol = policy("audit", mode="Audit")
    plan = plan_for([], converged(render(pol)), policies=[pol])
    assert plan.writes == []
    assert sorted(verbs(plan.audit)) == [("Delete", "allow-dns"), ("Delete", "default-deny")]


# --- in_sync ---


def _deny() -> RenderedObject:
    return next(o for o in render(policy("base")).objects if o.piece == "default-deny")


def test_in_sync_ignores_labels_and_annotations_others_add() -> None:
    obj = _deny()
    extra_labels = {**obj.body["metadata"]["labels"], "team": "a"}
    actual = in_cluster(obj, labels=extra_labels)
    actual = dataclasses.replace(actual, annotations={**actual.annotations, "note": "x"})
    assert in_sync(obj.body, actual)


def test_in_sync_compares_specs_canonically() -> None:
    obj = _deny()
    reordered = {"policyTypes": ["Ingress", "Egress"]}  # podSelector absent means {}
    assert in_sync(obj.body, in_cluster(obj, spec=reordered))


def test_in_sync_detects_spec_drift() -> None:
    obj = _deny()
    assert not in_sync(obj.body, in_cluster(obj, spec={"policyTypes": ["Ingress"]}))


def test_in_sync_detects_a_changed_or_missing_label() -> None:
    obj = _deny()
    labels = dict(obj.body["metadata"]["labels"])
    labels["nsbaseline.io/piece"] = "other"
    assert not in_sync(obj.body, in_cluster(obj, labels=labels))
    del labels["nsbaseline.io/piece"]
    assert not in_sync(obj.body, in_cluster(obj, labels=labels))


def test_in_sync_detects_a_changed_annotation_we_set() -> None:
    obj = _deny()
    sent = with_hash(obj.body)
    annotations = {**sent["metadata"]["annotations"], "nsbaseline.io/description": "edited"}
    assert not in_sync(obj.body, in_cluster(sent, applied=False, annotations=annotations))


def test_in_sync_detects_a_removed_owner_reference() -> None:
    obj = _deny()
    assert not in_sync(obj.body, in_cluster(obj, ownerReferences=[]))
    other_uid = [{**obj.body["metadata"]["ownerReferences"][0], "uid": "someone-else"}]
    assert not in_sync(obj.body, in_cluster(obj, ownerReferences=other_uid))


def test_in_sync_requires_our_hash_annotation() -> None:
    obj = _deny()
    assert in_sync(obj.body, in_cluster(obj))
    assert not in_sync(obj.body, in_cluster(obj, applied=False))
    stale = {**with_hash(obj.body)["metadata"]["annotations"], HASH_ANNOTATION: "0" * 16}
    assert not in_sync(obj.body, in_cluster(obj, applied=False, annotations=stale))


def test_in_sync_treats_an_unreadable_spec_as_drift() -> None:
    obj = _deny()
    assert not in_sync(obj.body, in_cluster(obj, spec={"ingress": [{"ports": [{"endPort": "x"}]}]}))


def test_desired_hash_is_stable_and_content_sensitive() -> None:
    a, b = _deny(), _deny()
    assert desired_hash(a.body) == desired_hash(b.body)
    assert len(desired_hash(a.body)) == 16
    other = next(o for o in render(policy("base")).objects if o.piece == "allow-dns")
    assert desired_hash(other.body) != desired_hash(a.body)
