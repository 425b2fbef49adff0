"""BaselinePolicy status from per-namespace outcomes, following Kubernetes API conventions. Pure.

``Ready`` says every selected namespace holds its full baseline; ``Degraded`` says something
needs a human (a template error, an apply the API server refused, a name conflict). Conditions
keep their ``lastTransitionTime`` unless their status flips, so an unchanged situation produces
an identical status and no write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nsbaseline.assessment import Assessment

MAX_ENTRIES = 50


@dataclass
class Summary:
    matched: int = 0
    compliant: int = 0
    conflicting: int = 0
    failed: int = 0
    conflicts: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    pending: list[dict[str, str]] = field(default_factory=list)


def summarise(outcomes: Iterable[Assessment]) -> Summary:
    summary = Summary()
    for o in sorted(outcomes, key=lambda o: o.namespace):
        summary.matched += 1
        if o.satisfied:
            summary.compliant += 1
        elif o.state == "conflict":
            summary.conflicting += 1
        elif o.state == "error":
            summary.failed += 1
        summary.conflicts.extend({"namespace": o.namespace, "name": n} for n in o.conflicts)
        summary.errors.extend(
            {"namespace": o.namespace, "template": e.piece, "message": e.message} for e in o.errors
        )
        summary.pending.extend(
            {"namespace": o.namespace, "name": n, "action": v} for n, v in o.pending
        )
    return summary


def _condition(
    previous: Mapping[str, Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> dict[str, Any]:
    text = "True" if status else "False"
    before = previous.get(type_)
    since = before["lastTransitionTime"] if before and before.get("status") == text else now
    return {
        "type": type_,
        "status": text,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    }


def policy_status(
    generation: int,
    audit: bool,
    outcomes: Iterable[Assessment],
    previous: Mapping[str, Any],
    now: str,
) -> dict[str, Any]:
    """The full status object for one policy."""
    s = summarise(outcomes)
    prev_conditions = {c["type"]: c for c in previous.get("conditions") or [] if "type" in c}
    problems: list[str] = []
    if s.errors:
        problems.append(f"{len(s.errors)} error(s), first: {s.errors[0]['message']}")
    if s.conflicts:
        first = s.conflicts[0]
        problems.append(
            f"{len(s.conflicts)} conflict(s), first: NetworkPolicy {first['namespace']}/"
            f"{first['name']} exists and is not managed by nsbaseline"
        )
    degraded = bool(problems)
    degraded_reason = "TemplateError" if s.errors else ("Conflict" if s.conflicts else "AsExpected")
    if s.matched == 0:
        ready, reason, message = True, "NoNamespacesSelected", "No namespace is selected."
    elif audit:
        # Auditing is the job: the policy works as intended while it reports what Enforce would
        # change, so it is Ready (GitOps health would otherwise stay Progressing for good).
        ready = not degraded
        reason = "ChangesPending" if s.pending else "AuditClean"
        message = (
            f"Audit mode: {len(s.pending)} change(s) pending in {s.matched} namespace(s)."
            if s.pending
            else f"Audit mode: all {s.matched} namespace(s) match the baseline."
        )
    elif s.compliant == s.matched:
        ready, reason, message = True, "Compliant", f"All {s.matched} namespace(s) are compliant."
    else:
        ready = False
        reason = "Degraded" if degraded else "Progressing"
        message = f"{s.compliant} of {s.matched} namespace(s) compliant."
    degraded_message = "; ".join(problems) if problems else "No errors or conflicts."
    conditions = [
        _condition(prev_conditions, "Ready", ready, reason, message, generation, now),
        _condition(
            prev_conditions,
            "Degraded",
            degraded,
            degraded_reason,
            degraded_message,
            generation,
            now,
        ),
        # kstatus (Flux, kubectl wait, cli-utils) reads a failure only from Stalled=True: the
        # same facts as Degraded, under the name the ecosystem's health libraries look for.
        _condition(
            prev_conditions, "Stalled", degraded, degraded_reason, degraded_message, generation, now
        ),
    ]
    return {
        "observedGeneration": generation,
        "matchedNamespaces": s.matched,
        "compliantNamespaces": s.compliant,
        "conflictingNamespaces": s.conflicting,
        "failedNamespaces": s.failed,
        "conditions": conditions,
        "conflicts": s.conflicts[:MAX_ENTRIES],
        "errors": s.errors[:MAX_ENTRIES],
        "pendingChanges": s.pending[:MAX_ENTRIES],
    }
