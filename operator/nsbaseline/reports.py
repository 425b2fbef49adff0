"""Compliance reports: one result per BaselinePolicy and piece in a namespace, as a PolicyReport
(``wgpolicyk8s.io/v1alpha2``) or an OpenReports ``Report`` (``openreports.io/v1alpha1``). Pure.

Security teams read policy results where Kyverno, Trivy and kube-bench put theirs (Policy
Reporter's UI and exporters). After every reconcile the operator already knows how each policy
stands (:mod:`nsbaseline.assessment`) and which pieces it wants (the plan); this module turns that
into the words of those APIs:

- ``pass``: the piece's NetworkPolicy is in place;
- ``fail``: it is missing or drifted (not yet repaired), a foreign NetworkPolicy holds its name,
  its template failed, or the API server refused the write;
- ``skip``: a time-boxed exception holds the piece back (reason and expiry in ``properties``);
- ``warn``: Audit mode, and enforcing would change it.

Each result carries a timestamp (when it was first reported). Comparing two reports ignores the
timestamps, and a result that did not change keeps the timestamp it already had, so an unchanged
namespace produces an identical report: nothing to write.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from nsbaseline import canonical, exemptions, names
from nsbaseline.assessment import Assessment
from nsbaseline.model import BaselinePolicy
from nsbaseline.plan import Plan
from nsbaseline.policy_render import pieces_of

ResultValue = Literal["pass", "fail", "warn", "skip"]
#: Every result value the report APIs know, in the order of their ``summary``.
SUMMARY_KEYS: Final = ("pass", "fail", "warn", "error", "skip")
SOURCE: Final = "nsbaseline"
CATEGORY: Final = "NetworkPolicy baseline"
#: One report per namespace, always by this name.
REPORT_NAME: Final = "nsbaseline"
NETWORK_POLICY: Final = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"}


@dataclass(frozen=True)
class ReportFormat:
    """One report API: where its objects live and what they are called."""

    flag: str
    group: str
    version: str
    kind: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"


POLICY_REPORT: Final = ReportFormat(
    "wgpolicyk8s", "wgpolicyk8s.io", "v1alpha2", "PolicyReport", "policyreports"
)
OPEN_REPORT: Final = ReportFormat("openreports", "openreports.io", "v1alpha1", "Report", "reports")
#: ``nsbaseline run --reports`` values.
FORMATS: Final = {f.flag: f for f in (POLICY_REPORT, OPEN_REPORT)}


@dataclass(frozen=True)
class PieceResult:
    """How one piece of one policy stands in one namespace."""

    policy: str
    piece: str
    #: The NetworkPolicy the piece is (or would be) kept as.
    name: str
    result: ResultValue
    message: str
    properties: tuple[tuple[str, str], ...] = ()


def piece_results(
    plan: Plan,
    policy: BaselinePolicy,
    assessment: Assessment,
    now: datetime.datetime,
    in_place: Collection[str] = (),
) -> list[PieceResult]:
    """One result per piece of ``policy`` in the plan's namespace, sorted by piece.

    ``in_place``: names of our NetworkPolicies in the namespace. Only needed for a policy whose
    templates failed there: the plan then keeps what is in place without comparing it.
    """
    ns, pname = plan.namespace, policy.name
    wanted = {o.piece: o.name for o in plan.selected.get(pname, ())}
    # Writes not done (Audit mode's, or drift the caller has not repaired), by object name.
    actions = {a.name: a for a in [*plan.audit, *plan.writes] if a.policy_name == pname}
    pending = {name: actions[name] for name, _ in assessment.pending if name in actions}
    errors = {e.piece: e for e in assessment.errors}
    template_failed = next((e.piece for e in assessment.errors if e.kind == "template"), None)
    known = set(pieces_of(policy))
    held = {
        piece: e
        for e in sorted(exemptions.valid(policy.spec), key=lambda e: e.deadline or now)
        if e.namespace == ns and e.active(now)
        for piece in e.pieces
        if piece in known
    }
    pieces = set(wanted) | set(errors) | set(held) | {a.piece for a in pending.values()}

    results: list[PieceResult] = []
    for piece in sorted(pieces):
        name = wanted.get(piece) or names.object_name(pname, piece)

        def result(value: ResultValue, message: str, state: str, **extra: str) -> PieceResult:
            props = tuple(sorted({"state": state, **extra}.items()))
            return PieceResult(pname, piece, name, value, message, props)  # noqa: B023

        action = pending.get(name)
        if piece in errors:
            error = errors[piece]
            results.append(result("fail", error.message, f"{error.kind}-error"))
        elif name in assessment.conflicts:
            message = f"NetworkPolicy {name} exists and is not managed by nsbaseline"
            results.append(result("fail", message + "; it is left untouched", "conflict"))
        elif piece in held:
            exemption = held[piece]
            message = f"held back until {exemption.expires_at} by an exception: {exemption.reason}"
            results.append(
                result(
                    "skip",
                    message,
                    "exception",
                    reason=exemption.reason,
                    expiresAt=exemption.expires_at,
                )
            )
        elif action is not None and policy.audit:
            message = f"Audit mode: enforcing would {action.verb.lower()} NetworkPolicy {name}"
            results.append(result("warn", message, "audit", action=action.verb))
        elif action is not None:
            state, message = {
                "Create": ("missing", f"NetworkPolicy {name} is missing"),
                "Update": ("drifted", f"NetworkPolicy {name} differs from the baseline"),
            }.get(action.verb, ("left-over", f"NetworkPolicy {name} is no longer wanted"))
            results.append(result("fail", message, state))
        elif template_failed is not None and name not in in_place:
            message = (
                f"NetworkPolicy {name} is missing: BaselinePolicy {pname} writes nothing "
                f"here while its template {template_failed!r} fails"
            )
            results.append(result("fail", message, "missing"))
        elif template_failed is not None:
            message = (
                f"NetworkPolicy {name} in place (kept as it is while template "
                f"{template_failed!r} fails)"
            )
            results.append(result("pass", message, "in-place"))
        else:
            results.append(result("pass", f"NetworkPolicy {name} in place", "in-place"))
    return results


def namespace_results(
    plan: Plan,
    policies: Iterable[BaselinePolicy],
    assessments: Mapping[str, Assessment],
    now: datetime.datetime,
    in_place: Collection[str] = (),
) -> tuple[PieceResult, ...]:
    """Every result of every selecting policy, sorted by policy then piece (empty: no report)."""
    out: list[PieceResult] = []
    for policy in sorted(policies, key=lambda p: p.name):
        assessment = assessments.get(policy.name)
        if assessment is not None:
            out.extend(piece_results(plan, policy, assessment, now, in_place))
    return tuple(out)


def _result_json(namespace: str, r: PieceResult) -> dict[str, Any]:
    return {
        "source": SOURCE,
        "policy": r.policy,
        "rule": r.piece,
        "category": CATEGORY,
        "result": r.result,
        "scored": True,
        "message": r.message,
        "resources": [{**NETWORK_POLICY, "name": r.name, "namespace": namespace}],
        "properties": dict(r.properties),
    }


def _digest(value: Any) -> str:
    """A short stable hash of a JSON-like value (kept per namespace: small beats readable)."""
    return hashlib.sha256(canonical.fingerprint(value).encode()).hexdigest()[:24]


def _key(result: Mapping[str, Any]) -> str:
    """A result's identity for comparisons: everything but its timestamp."""
    return _digest({k: v for k, v in result.items() if k != "timestamp"})


def report_body(
    fmt: ReportFormat,
    namespace: str,
    results: Sequence[PieceResult],
    now: datetime.datetime,
    previous: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """The report for ``namespace``; results seen before (``previous``, from
    :func:`timestamps`) keep their timestamps, new ones are stamped ``now``."""
    previous = previous or {}
    stamp = {"seconds": int(now.timestamp()), "nanos": 0}
    items = []
    for r in results:
        item = _result_json(namespace, r)
        item["timestamp"] = dict(previous.get(_key(item)) or stamp)
        items.append(item)
    summary = {key: 0 for key in SUMMARY_KEYS}
    for r in results:
        summary[r.result] += 1
    body: dict[str, Any] = {
        "apiVersion": fmt.api_version,
        "kind": fmt.kind,
        "metadata": {
            "name": REPORT_NAME,
            "namespace": namespace,
            "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE},
        },
        "summary": summary,
        "results": items,
    }
    if fmt is OPEN_REPORT:
        body["source"] = SOURCE  # OpenReports names the source once, for the whole report
    return body


def timestamps(body: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Each result of a stored (or written) report -> its timestamp, for :func:`report_body`."""
    out: dict[str, dict[str, int]] = {}
    for item in body.get("results") or ():
        stamp = item.get("timestamp") or {}
        out[_key(item)] = {
            "seconds": int(stamp.get("seconds", 0)),
            "nanos": int(stamp.get("nanos", 0)),
        }
    return out


def content_key(body: Mapping[str, Any]) -> str:
    """What a report says, without timestamps: two reports with equal keys need no write."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    return _digest(
        {
            "managed": labels.get(names.MANAGED_BY_LABEL),
            "source": body.get("source"),
            "summary": body.get("summary") or {},
            "results": sorted(_key(item) for item in body.get("results") or ()),
        }
    )


__all__ = [
    "CATEGORY",
    "FORMATS",
    "OPEN_REPORT",
    "POLICY_REPORT",
    "REPORT_NAME",
    "SOURCE",
    "PieceResult",
    "ReportFormat",
    "ResultValue",
    "content_key",
    "namespace_results",
    "piece_results",
    "report_body",
    "timestamps",
]
