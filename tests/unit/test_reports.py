"""Compliance reports from assessments: one result per policy and piece, against golden YAML.

Each case goes the operator's own way — render, plan against what is "in the cluster", assess —
and the resulting PolicyReport is compared with ``tests/unit/golden/reports/<case>.yaml``. After an
intended change, regenerate with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_reports.py``
and review the diff: the goldens are the reviewed statement of what security teams will read.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from nsbaseline import names
from nsbaseline.assessment import assess
from nsbaseline.model import BaselinePolicy, ManagedObject, Namespace
from nsbaseline.plan import build_plan
from nsbaseline.policy_render import render_policy
from nsbaseline.render import TemplateSet
from nsbaseline.reports import (
    OPEN_REPORT,
    POLICY_REPORT,
    PieceResult,
    content_key,
    namespace_results,
    report_body,
    timestamps,
)
from tests.support.builders import NOW, foreign, in_cluster, netpol_template, opted_in, policy

GOLDEN = Path(__file__).parent / "golden" / "reports"
NS = "team-a"
BROKEN = TemplateSet.from_sources(
    {"extra": netpol_template(), "broken": "{{ values.no_such_value.port }}"}
)
EXCEPTION = {
    "namespace": NS,
    "pieces": ["allow-dns"],
    "reason": "INC-42: DNS moved to a sidecar for a week",
    "expiresAt": "2030-01-08T00:00:00Z",
}


def results(
    policies: Sequence[BaselinePolicy],
    present: Sequence[str | tuple[str, str]] = (),
    *,
    templates: TemplateSet | None = None,
    ns: Namespace | None = None,
    failed: Mapping[str, str] | None = None,
    executed: bool = True,
) -> tuple[PieceResult, ...]:
    """Results as the operator records them after a reconcile.

    ``present``: object names of ours already in place as rendered, or (name, "edited") for one
    whose spec someone changed, or (name, "foreign") for a NetworkPolicy that is not ours.
    """
    templates = templates or TemplateSet()
    ns = ns or opted_in(NS)
    renders = [render_policy(templates, ns, p, NOW) for p in policies]
    rendered = {o.name: o for r in renders for o in r.objects}
    actual: list[ManagedObject] = []
    for entry in present:
        name, how = entry if isinstance(entry, tuple) else (entry, "")
        if how == "foreign":
            actual.append(foreign(ns.name, name))
        elif how == "edited":
            actual.append(in_cluster(rendered[name], spec={"podSelector": {"x": "y"}}))
        else:
            actual.append(in_cluster(rendered[name]))
    plan = build_plan(ns, renders, actual, {p.name: p for p in policies})
    assessments = {p.name: assess(plan, p, NOW, failed=failed, executed=executed) for p in policies}
    in_place = {o.name for o in actual if o.ours}
    return namespace_results(plan, policies, assessments, NOW, in_place)


def name(piece: str, policy_name: str = "base") -> str:
    return names.object_name(policy_name, piece)


BOTH = (name("allow-dns"), name("default-deny"))

#: case -> results (built lazily: policies carry their spec as the API server would default it)
CASES: dict[str, Any] = {
    "compliant": lambda: results([policy("base")], BOTH),
    "conflict": lambda: results(
        [policy("base")], [name("allow-dns"), (name("default-deny"), "foreign")]
    ),
    "template-error": lambda: results(
        [policy("base", templates=[{"name": "extra"}, {"name": "broken"}])],
        [name("allow-dns")],
        templates=BROKEN,
    ),
    "exception": lambda: results([policy("base", exceptions=[EXCEPTION])], [name("default-deny")]),
    "audit": lambda: results([policy("base", mode="Audit")], [name("allow-dns")]),
    "write-error": lambda: results(
        [policy("base")],
        [name("allow-dns")],
        failed={name("default-deny"): "422 Unprocessable Entity: spec.ingress[0].ports: invalid"},
    ),
    "not-yet-repaired": lambda: results(
        [policy("base")], [(name("allow-dns"), "edited")], executed=False
    ),
    "two-policies": lambda: results(
        [policy("base"), policy("audit-me", mode="Audit", monitoring={"enabled": True})],
        BOTH,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_report_matches_golden(case: str) -> None:
    body = report_body(POLICY_REPORT, NS, CASES[case](), NOW)
    text = yaml.safe_dump(body, sort_keys=False, width=100)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text()


def by_rule(body: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["policy"], r["rule"]): r for r in body["results"]}


def test_each_state_gets_the_result_the_issue_names() -> None:
    """pass in place; fail for conflicts, template and write errors, unrepaired drift; skip for
    exceptions; warn for Audit mode's would-be changes."""
    expected = {
        "compliant": {"allow-dns": "pass", "default-deny": "pass"},
        "conflict": {"allow-dns": "pass", "default-deny": "fail"},
        "template-error": {
            "allow-dns": "pass",
            "default-deny": "fail",
            "extra": "fail",
            "broken": "fail",
        },
        "exception": {"allow-dns": "skip", "default-deny": "pass"},
        "audit": {"allow-dns": "pass", "default-deny": "warn"},
        "write-error": {"allow-dns": "pass", "default-deny": "fail"},
        "not-yet-repaired": {"allow-dns": "fail", "default-deny": "fail"},
    }
    for case, pieces in expected.items():
        got = {r.piece: r.result for r in CASES[case]()}
        assert got == pieces, case


def test_an_exception_result_carries_its_reason_and_expiry() -> None:
    skip = next(r for r in CASES["exception"]() if r.result == "skip")
    assert dict(skip.properties) == {
        "state": "exception",
        "reason": EXCEPTION["reason"],
        "expiresAt": EXCEPTION["expiresAt"],
    }
    assert EXCEPTION["reason"] in skip.message


def test_a_template_error_names_the_template_and_keeps_pieces_in_place_as_pass() -> None:
    found = {r.piece: r for r in CASES["template-error"]()}
    assert "undefined" in found["broken"].message and "'broken'" in found["broken"].message
    assert dict(found["broken"].properties)["state"] == "template-error"
    assert dict(found["default-deny"].properties)["state"] == "missing"
    assert "kept as it is" in found["allow-dns"].message


def test_the_networkpolicy_is_the_result_resource_and_the_summary_counts_results() -> None:
    body = report_body(POLICY_REPORT, NS, CASES["conflict"](), NOW)
    deny = by_rule(body)[("base", "default-deny")]
    assert deny["resources"] == [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "name": name("default-deny"),
            "namespace": NS,
        }
    ]
    assert deny["source"] == "nsbaseline"
    assert body["summary"] == {"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 0}
    assert body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "nsbaseline"}


def test_an_unchanged_report_keeps_its_timestamps_and_compares_equal() -> None:
    first = report_body(POLICY_REPORT, NS, CASES["compliant"](), NOW)
    later = NOW + datetime.timedelta(hours=1)
    again = report_body(POLICY_REPORT, NS, CASES["compliant"](), later, timestamps(first))
    assert again == first
    fresh = report_body(POLICY_REPORT, NS, CASES["compliant"](), later)
    assert fresh != first, "timestamps differ without the previous ones..."
    assert content_key(fresh) == content_key(first), "...but the comparison ignores them"


def test_only_a_changed_result_gets_a_new_timestamp() -> None:
    first = report_body(POLICY_REPORT, NS, CASES["compliant"](), NOW)
    later = NOW + datetime.timedelta(hours=1)
    changed = report_body(POLICY_REPORT, NS, CASES["conflict"](), later, timestamps(first))
    assert content_key(changed) != content_key(first)
    stamps = {rule: r["timestamp"]["seconds"] for rule, r in by_rule(changed).items()}
    assert stamps[("base", "allow-dns")] == int(NOW.timestamp())
    assert stamps[("base", "default-deny")] == int(later.timestamp())


def test_openreports_names_the_source_once_and_uses_its_own_kind() -> None:
    body = report_body(OPEN_REPORT, NS, CASES["compliant"](), NOW)
    assert (body["apiVersion"], body["kind"], body["source"]) == (
        "openreports.io/v1alpha1",
        "Report",
        "nsbaseline",
    )
    assert body["results"] == report_body(POLICY_REPORT, NS, CASES["compliant"](), NOW)["results"]
