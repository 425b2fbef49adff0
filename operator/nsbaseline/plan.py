"""Desired versus actual: what to write in one namespace, in a safe order. Pure.

Level-triggered: the plan is computed from the whole desired state of a namespace (every policy
that selects it) and everything of ours found there, so any trigger — a new namespace, an edited
policy, a tampered object, a periodic sweep — converges the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nsbaseline import canonical, names
from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.observed import ManagedObject, spec_digest
from nsbaseline.policy_render import PolicyRender
from nsbaseline.render import RenderedObject, RenderError

HASH_ANNOTATION = names.ANNOTATION_PREFIX + "applied-hash"

Verb = Literal["Create", "Update", "Delete"]


def desired_hash(body: Mapping[str, Any]) -> str:
    """Hash of everything we set on an object; stored on it to notice changes we must push."""
    digest = hashlib.sha256(canonical.fingerprint(body).encode()).hexdigest()
    return digest[:16]


def with_hash(body: Mapping[str, Any], digest: str = "") -> dict[str, Any]:
    """The object to send: ``body`` plus the hash annotation of ``body`` itself (``digest``,
    when the caller knows it already)."""
    meta = dict(body["metadata"])
    annotations = {**(meta.get("annotations") or {})}
    annotations[HASH_ANNOTATION] = digest or desired_hash(body)
    meta["annotations"] = annotations
    return {**body, "metadata": meta}


@dataclass(frozen=True)
class Action:
    """One write. ``repair`` marks restoring something that drifted from what we had applied."""

    verb: Verb
    namespace: str
    name: str
    policy_name: str
    piece: str
    body: Mapping[str, Any] | None = None
    uid: str | None = None
    repair: bool = False
    digest: str = ""

    @property
    def is_deny(self) -> bool:
        return self.piece == names.DEFAULT_DENY


@dataclass(frozen=True)
class Conflict:
    """A NetworkPolicy that is not ours holds a name a BaselinePolicy needs."""

    policy_name: str
    namespace: str
    name: str


@dataclass
class Plan:
    """Writes grouped in phases that must run in order; a phase runs only if the last succeeded.

    Phase order: apply allow pieces, apply default-deny, delete default-deny, delete the rest.
    So a namespace gains its allowances before it is isolated, and is un-isolated before it loses
    them: no moment denies egress without DNS.
    """

    namespace: str
    phases: list[list[Action]] = field(default_factory=list)
    audit: list[Action] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    errors: list[RenderError] = field(default_factory=list)
    #: Policies selecting this namespace -> their desired objects, for status and bookkeeping.
    selected: dict[str, list[RenderedObject]] = field(default_factory=dict)

    @property
    def writes(self) -> list[Action]:
        return [a for phase in self.phases for a in phase]

    def policy_writes(self, policy_name: str) -> list[Action]:
        return [a for a in self.writes if a.policy_name == policy_name]


def in_sync(
    desired: Mapping[str, Any], actual: ManagedObject, digest: str = "", spec_hash: str = ""
) -> bool:
    """Whether ``actual`` already carries everything ``desired`` sets (and nothing we dropped).

    ``digest`` and ``spec_hash``: the desired body's hashes when the caller knows them already.
    """
    meta = desired["metadata"]
    if actual.annotations.get(HASH_ANNOTATION) != (digest or desired_hash(desired)):
        return False
    for key, value in (meta.get("labels") or {}).items():
        if actual.labels.get(key) != value:
            return False
    for key, value in (meta.get("annotations") or {}).items():
        if actual.annotations.get(key) != value:
            return False
    for ref in meta.get("ownerReferences") or []:
        if not any(r.uid == ref["uid"] for r in actual.owner_references):
            return False
    return actual.spec_digest == (spec_hash or spec_digest(desired["spec"]))


def owner_policy(obj: ManagedObject) -> str | None:
    """The policy an object of ours belongs to: its label, else its controller ownerReference."""
    if obj.policy:
        return obj.policy
    for ref in obj.owner_references:
        if ref.kind == names.KIND and ref.controller:
            return ref.name
    return None


def _piece_of(obj: ManagedObject, policy: str) -> str:
    if obj.piece:
        return obj.piece
    prefix = f"{names.NAME_PREFIX}{policy}-"
    return obj.name[len(prefix) :] if obj.name.startswith(prefix) else obj.name


def build_plan(
    namespace: Namespace,
    renders: Sequence[PolicyRender],
    actual: Collection[ManagedObject],
    all_policies: Mapping[str, BaselinePolicy],
    applied_hashes: Mapping[tuple[str, str], str] | None = None,
) -> Plan:
    """Compare what the selecting policies want with what exists, and order the writes.

    ``renders`` holds one entry per policy that selects the namespace. Objects of ours belonging
    to any other policy (deleted, or no longer selecting) are removed — except that a policy
    whose templates failed here keeps everything it has in place, and an Audit policy only
    reports.
    """
    applied_hashes = applied_hashes or {}
    plan = Plan(namespace=namespace.name)
    by_name = {obj.name: obj for obj in actual}
    failed = {r.policy.name for r in renders if r.errors}
    audit_policies = {name for name, p in all_policies.items() if p.audit}
    allow_applies: list[Action] = []
    deny_applies: list[Action] = []
    wanted: set[str] = set()

    for render in renders:
        plan.errors.extend(render.errors)
        plan.selected[render.policy.name] = list(render.objects)
        for obj in render.objects:
            wanted.add(obj.name)
            if render.policy.name in failed:
                continue  # keep what is in place until the templates render again
            current = by_name.get(obj.name)
            if current is not None and not current.ours:
                plan.conflicts.append(Conflict(render.policy.name, namespace.name, obj.name))
                continue
            digest = obj.digest or desired_hash(obj.body)
            if current is not None and in_sync(obj.body, current, digest, obj.spec_digest):
                continue
            repair = applied_hashes.get((namespace.name, obj.name)) == digest
            action = Action(
                verb="Create" if current is None else "Update",
                namespace=namespace.name,
                name=obj.name,
                policy_name=obj.policy_name,
                piece=obj.piece,
                body=with_hash(obj.body, digest),
                repair=repair,
                digest=digest,
            )
            if render.policy.audit:
                plan.audit.append(action)
            elif action.is_deny:
                deny_applies.append(action)
            else:
                allow_applies.append(action)

    deny_deletes: list[Action] = []
    other_deletes: list[Action] = []
    for existing in sorted(actual, key=lambda o: o.name):
        if existing.name in wanted or not existing.ours:
            continue
        policy = owner_policy(existing)
        if policy is None or policy in failed:
            # We always set the policy label and a controller ownerReference; an object with
            # neither was not made by us (someone copied our managed-by label): leave it alone.
            continue
        action = Action(
            verb="Delete",
            namespace=namespace.name,
            name=existing.name,
            policy_name=policy,
            piece=_piece_of(existing, policy),
            uid=existing.uid,
        )
        if policy in audit_policies:
            plan.audit.append(action)
        elif action.is_deny:
            deny_deletes.append(action)
        else:
            other_deletes.append(action)

    plan.phases = [p for p in (allow_applies, deny_applies, deny_deletes, other_deletes) if p]
    return plan
