"""``nsbaseline lint`` reports what the guardrail admission policy refuses, in its words.

The table in ``tests.support.widening_cases`` is shared with the e2e test that sends every case
to the real guardrail on the control plane; here it drives lint (the library and the CLI).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from hack import gen_admission
from nsbaseline import cli, lint, lint_findings, widening, widening_codes
from tests.support.widening_cases import CASES, PROFILES, Case, netpol, policy

SELECTOR = {"matchLabels": {"guardrail-test": "on"}}


def _namespace(name: str, case: Case, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {"guardrail-test": "on"} if labels is None else labels,
            "annotations": case.annotations,
        },
    }


def _widenings(docs: list[dict[str, Any]]) -> list[lint_findings.Finding]:
    located = [lint.Located(d, "cases.yaml") for d in docs]
    return [f for f in lint.lint(located) if f.code in widening_codes.CODES]


def _docs(case: Case, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    return [
        policy(case.profile, "guarded", SELECTOR),
        _namespace("team-a", case, labels),
        netpol(case, "team-a"),
    ]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_lint_reports_the_refusal_the_guardrail_makes_in_every_case(case: Case) -> None:
    found = _widenings(_docs(case))
    if case.expect is None:
        assert found == [], [str(f) for f in found]
        return
    # lint lists every finding, by line; the first in evaluation order is the API server's.
    docs = _docs(case)
    first = widening.for_documents(docs[-1], docs)[0]
    assert (first.code, first.field) == case.expect
    assert (first.code, first.field, first.text) in {(f.code, f.path, f.message) for f in found}
    assert "BaselinePolicy guarded" in first.text


@pytest.mark.parametrize("case", [c for c in CASES if c.expect], ids=lambda c: c.id)
def test_namespaces_the_policy_does_not_select_are_never_reported(case: Case) -> None:
    assert _widenings(_docs(case, labels={"other": "team"})) == []


def test_every_rule_has_a_refused_case_in_the_shared_table() -> None:
    refused = {c.expect[0] for c in CASES if c.expect}
    assert refused == set(widening_codes.CODES)
    assert {c.profile for c in CASES} == set(PROFILES)


def test_lint_orders_findings_as_the_admission_policy_evaluates_its_validations() -> None:
    """The first finding is the API server's message: validations run in MESSAGES order."""
    case = next(c for c in CASES if c.id == "first-problem-wins")
    found = widening.widenings(
        netpol(case, "team-a"),
        policy(case.profile, "guarded", SELECTOR),
        widening.NamespaceView("team-a", {"guardrail-test": "on"}),
    )
    assert [w.check for w in found] == sorted(w.check for w in found)
    assert [w.code for w in found] == [
        "ingress-from-anywhere",
        "ingress-from-all-namespaces",
        "egress-to-anywhere",
    ]


def test_a_namespace_lint_cannot_see_is_assumed_selected_unless_excluded() -> None:
    case = next(c for c in CASES if c.id == "ingress-rule-without-from")
    bp = policy(case.profile, "guarded", SELECTOR)
    assert widening.for_documents(netpol(case, "team-a"), [bp])
    assert not widening.for_documents(netpol(case, "kube-system"), [bp])  # default exclusion


def test_generated_network_policies_are_never_reported() -> None:
    case = next(c for c in CASES if c.id == "egress-rule-without-to")
    body = netpol(case, "team-a")
    body["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "nsbaseline"}
    assert widening.for_documents(body, _docs(case)) == []


def test_lint_cli_prints_the_guardrail_words_with_file_and_line(tmp_path: Path) -> None:
    docs: list[dict[str, Any]] = [
        policy(profile, f"p-{profile}", {"matchLabels": {"profile": profile}})
        for profile in PROFILES
    ]
    expected: list[widening.Widening] = []
    for i, case in enumerate(CASES):
        namespace = _namespace(f"ns-{i}", case, {"profile": case.profile})
        docs += [namespace, netpol(case, f"ns-{i}")]
        found = widening.for_documents(docs[-1], docs)
        assert bool(found) == bool(case.expect), case.id
        expected += found
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    result = CliRunner().invoke(cli.main, ["lint", str(path)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(f"{path}:")]
    guardrail = [
        line for line in lines if line.rsplit("[", 1)[-1].rstrip("]") in widening_codes.CODES
    ]
    assert len(guardrail) == len(expected)
    for w in expected:
        assert any(
            re.fullmatch(rf"{re.escape(str(path))}:\d+: error: {re.escape(str(w))}", line)
            for line in guardrail
        ), str(w)


def test_the_guardrail_messages_are_built_from_the_same_templates() -> None:
    """Every literal fragment of every lint message appears in the guardrail's CEL."""
    text = gen_admission.dump(gen_admission.components()["guardrail"])
    joined = re.sub(r"'\n\+ '|\n", " ", text)  # the YAML wraps long expressions
    for code, template in widening_codes.MESSAGES:
        assert f"[{code}]" in text
        for fragment in re.split(r"\{\w+\}", template):
            words = fragment.strip()
            if words:
                assert all(w in joined for w in words.split()), (code, words)


def test_the_lint_output_shown_in_the_admission_docs_is_what_lint_prints() -> None:
    repo = Path(__file__).resolve().parents[2]
    files = ["deploy/examples/baselinepolicy.yaml", "docs/examples/guardrail/team-c.yaml"]
    result = CliRunner().invoke(cli.main, ["lint", *(str(repo / f) for f in files)])
    docs = (repo / "docs" / "admission.md").read_text()
    shown = [
        line.replace(str(repo) + "/", "")
        for line in result.output.splitlines()
        if line.rsplit("[", 1)[-1].rstrip("]") in widening_codes.CODES
    ]
    assert len(shown) == 2
    for line in shown:
        assert line in docs, line
