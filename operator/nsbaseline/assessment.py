"""How one namespace stands with each BaselinePolicy: one vocabulary, one function. Pure.

The operator's status (after it has written what the plan asked for) and ``nsbaseline status``
(which writes nothing) both ask the same question of the same plan, so they cannot disagree:

- ``compliant``: every piece in place;
- ``exception``: in place, except pieces a time-boxed exception holds back;
- ``drifted``: writes are needed (a piece missing, changed, or left over) — the operator repairs
  this at once, so only a reader that does not write (the CLI) sees it for long;
- ``conflict``: a NetworkPolicy that is not ours holds one of the policy's names;
- ``error``: a template failed, or the API server refused a write;
- ``audit-pending``: an Audit-mode policy would change something;
- ``excluded``: the selector matches but ``excludedNamespaces`` lists the namespace.

The plan must cover the whole namespace (every policy that selects it), as the operator's does:
planning one policy against all managed objects of a namespace would count another policy's
objects as leftovers.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from nsbaseline import exemptions
from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.plan import Action, Plan
from nsbaseline.selection import policy_selects, selector_matches

State = Literal[
    "compliant", "exception", "drifted", "conflict", "error", "audit-pending", "excluded"
]
#: States in which the namespace holds what the policy asks (Ready counts these).
SATISFIED: frozenset[str] = frozenset({"compliant", "exception"})
#: Why a piece is missing: its template failed, or the API server refused to write it.
ErrorKind = Literal["template", "write"]


class Failure(NamedTuple):
    """One piece that is not in place, and why (an ``error`` state)."""

    piece: str
    message: str
    kind: ErrorKind


@dataclass(frozen=True)
class Assessment:
    """One BaselinePolicy in one namespace."""

    policy_name: str
    namespace: str
    state: State
    detail: str
    conflicts: tuple[str, ...] = ()
    errors: tuple[Failure, ...] = ()
    #: (object name, verb): Audit mode's would-be writes, or drift not yet repaired.
    pending: tuple[tuple[str, str], ...] = ()
    #: How many NetworkPolicies the policy keeps in this namespace.
    managed: int = 0

    @property
    def satisfied(self) -> bool:
        return self.state in SATISFIED


def _verbs(actions: Iterable[Action]) -> str:
    return ", ".join(f"{a.verb.lower()} {a.name}" for a in actions)


def assess(
    plan: Plan,
    policy: BaselinePolicy,
    now: datetime.datetime,
    *,
    failed: Mapping[str, str] | None = None,
    executed: bool = False,
) -> Assessment:
    """How ``policy`` stands in the plan's namespace.

    ``executed``: the plan's writes have been sent, and ``failed`` maps the object names whose
    write failed to the reason; successful writes then count as in place.
    """
    failed = failed or {}
    name, ns = policy.name, plan.namespace
    writes = plan.policy_writes(name)
    render_errors = tuple(
        Failure(e.template, str(e), "template") for e in plan.errors if e.policy_name == name
    )
    write_errors = tuple(
        Failure(
            a.piece,
            f"template {a.piece!r} for namespace {ns!r}: API server refused "
            f"{a.verb.lower()} of {ns}/{a.name}: {failed[a.name]}",
            "write",
        )
        for a in writes
        if a.name in failed
    )
    errors = render_errors + write_errors
    conflicts = tuple(c.name for c in plan.conflicts if c.policy_name == name)
    audit = [a for a in plan.audit if a.policy_name == name]
    remaining = [] if executed else writes
    managed = len(plan.selected.get(name, []))

    def result(state: State, detail: str) -> Assessment:
        pending = tuple((a.name, a.verb) for a in (audit or remaining))
        return Assessment(name, ns, state, detail, conflicts, errors, pending, managed)

    if errors:
        return result("error", errors[0].message)
    if conflicts:
        return result("conflict", ", ".join(conflicts) + " not managed by nsbaseline")
    if audit:
        return result("audit-pending", "would " + _verbs(audit))
    if remaining:
        return result("drifted", _verbs(remaining))
    held = [
        f"{', '.join(e.pieces)} held back until {e.expires_at} ({e.reason})"
        for e in exemptions.valid(policy.spec)
        if e.namespace == ns and e.active(now)
    ]
    in_place = f"{managed} NetworkPolicies in place"
    if held:
        return result("exception", in_place + "; exception: " + "; ".join(held))
    return result("compliant", in_place)


def excluded(policy: BaselinePolicy, namespace: Namespace) -> bool:
    """Whether the policy's selector matches ``namespace`` but it is listed as excluded."""
    return (
        not namespace.terminating
        and namespace.name in policy.spec.excluded_namespaces
        and selector_matches(policy.spec.namespace_selector, namespace.labels)
    )


def assess_namespace(
    namespace: Namespace,
    policies: Sequence[BaselinePolicy],
    plan: Plan,
    now: datetime.datetime,
) -> list[Assessment]:
    """Every policy with something to say about ``namespace``, sorted by policy name.

    Selecting policies are assessed; excluded ones are listed as such; a policy that no longer
    selects the namespace but still has objects there shows as drifted (they are to be removed).
    """
    rows: list[Assessment] = []
    for policy in sorted(policies, key=lambda p: p.name):
        if policy_selects(policy, namespace):
            rows.append(assess(plan, policy, now))
        elif plan.policy_writes(policy.name) or any(
            a.policy_name == policy.name for a in plan.audit
        ):
            row = assess(plan, policy, now)
            rows.append(
                Assessment(
                    row.policy_name,
                    row.namespace,
                    row.state,
                    "no longer selected: " + row.detail,
                    row.conflicts,
                    row.errors,
                    row.pending,
                    0,
                )
            )
        elif excluded(policy, namespace):
            rows.append(
                Assessment(policy.name, namespace.name, "excluded", "listed in excludedNamespaces")
            )
    return rows


__all__ = [
    "SATISFIED",
    "Assessment",
    "ErrorKind",
    "Failure",
    "State",
    "assess",
    "assess_namespace",
    "excluded",
]
