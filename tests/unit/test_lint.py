"""``nsbaseline lint``: each check, with the file and line it reports, and the exit codes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from nsbaseline.cli import main
from nsbaseline.lint import lint, load_with_lines
from nsbaseline.lint_context import Context
from nsbaseline.lint_findings import Finding

NAMESPACE_AND_POD = """\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {team: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
"""


def policy(spec: str, name: str = "p", namespace: str = "shop") -> str:
    head = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n"
    )
    return head + textwrap.indent(textwrap.dedent(spec), "  ")


def findings(text: str, with_context: bool = False) -> list[Finding]:
    if with_context:
        text = NAMESPACE_AND_POD + "---\n" + text
    docs = load_with_lines(text, "f.yaml")
    context = Context()
    if with_context:
        from nsbaseline.lint_context import context_from

        context = context_from(docs, context)
    return lint(docs, context)


def codes(found: list[Finding]) -> list[tuple[str, int | None]]:
    return [(f.code, f.line) for f in found]


def test_load_with_lines_tracks_keys_and_list_items() -> None:
    [doc] = load_with_lines("a:\n  b:\n  - x: 1\n  - y: 2\n", "f")
    assert doc.data == {"a": {"b": [{"x": 1}, {"y": 2}]}}
    assert doc.line(("a", "b", 1, "y")) == 4
    assert doc.line(("a", "b", 0)) == 3
    assert doc.line(("a", "missing")) == 1


def test_podselector_all_makes_narrower_peer_dead() -> None:
    text = policy(
        """\
        podSelector: {}
        ingress:
        - from:
          - podSelector: {}
          - podSelector:
              matchLabels: {app: frontend}
        """
    )
    assert codes(findings(text)) == [("dead-peer", 11)]


def test_namespace_selector_all_covers_own_namespace_peer_but_not_reverse() -> None:
    text = policy(
        """\
        podSelector: {}
        ingress:
        - from:
          - podSelector: {matchLabels: {app: a}}
          - namespaceSelector: {}
        """
    )
    found = findings(text)
    assert [(f.code, f.path) for f in found] == [("dead-peer", "spec.ingress[0].from[0]")]


def test_and_peer_is_not_made_dead_by_a_different_namespace() -> None:
    text = policy(
        """\
        podSelector: {}
        ingress:
        - from:
          - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: a}}
          - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}
            podSelector: {matchLabels: {app: x}}
        """
    )
    assert findings(text) == []


def test_duplicate_peers_report_only_the_later_one() -> None:
    text = policy(
        """\
        podSelector: {}
        ingress:
        - from:
          - podSelector: {matchLabels: {app: a}}
          - podSelector: {matchLabels: {app: a}}
        """
    )
    assert [f.path for f in findings(text)] == ["spec.ingress[0].from[1]"]


def test_ipblock_inside_a_broader_ipblock_is_dead_unless_excepted() -> None:
    dead = policy(
        """\
        podSelector: {}
        policyTypes: [Ingress]
        ingress:
        - from:
          - ipBlock: {cidr: 192.0.2.0/24}
          - ipBlock: {cidr: 192.0.2.128/25}
        """
    )
    assert [f.path for f in findings(dead)] == ["spec.ingress[0].from[1]"]
    alive = dead.replace("cidr: 192.0.2.0/24}", "cidr: 192.0.2.0/24, except: [192.0.2.128/26]}")
    assert findings(alive) == []


def test_egress_isolation_without_dns_is_an_error_at_the_policy_type() -> None:
    text = policy("podSelector: {}\npolicyTypes:\n- Ingress\n- Egress\n")
    [found] = findings(text)
    assert (found.severity, found.code, found.line) == ("error", "egress-without-dns", 10)
    assert "every pod in namespace shop" in found.message


def test_egress_with_dns_allowance_elsewhere_in_the_namespace_is_fine() -> None:
    deny = policy("podSelector: {}\npolicyTypes: [Egress]\n", name="deny")
    dns = policy(
        """\
        podSelector: {}
        policyTypes: [Egress]
        egress:
        - to:
          - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
            podSelector: {matchLabels: {k8s-app: kube-dns}}
          ports: [{port: 53, protocol: UDP}]
        """,
        name="dns",
    )
    assert findings(deny + "---\n" + dns) == []


def test_custom_namespace_label_warns_on_the_label_key_line() -> None:
    text = policy(
        """\
        podSelector: {}
        ingress:
        - from:
          - namespaceSelector:
              matchLabels:
                team: payments
          - namespaceSelector:
              matchExpressions:
              - {key: env, operator: In, values: [prod]}
        """
    )
    found = findings(text)
    assert codes(found) == [("custom-namespace-label", 12), ("custom-namespace-label", 15)]


def test_ipblock_over_pod_and_service_ranges_warns_unless_excepted() -> None:
    text = policy(
        """\
        podSelector: {}
        policyTypes: [Ingress]
        ingress:
        - from:
          - ipBlock:
              cidr: 10.0.0.0/8
        """
    )
    found = findings(text)
    assert [(f.code, f.line) for f in found] == [("ipblock-cluster-range", 12)] * 2
    assert "pod range 10.244.0.0/16" in found[0].message + found[1].message
    cidr_line = next(line for line in text.splitlines() if "cidr:" in line)
    indent = cidr_line[: len(cidr_line) - len(cidr_line.lstrip())]
    excepted = text.replace(
        cidr_line, f"{cidr_line}\n{indent}except: [10.244.0.0/16, 10.96.0.0/12]"
    )
    assert findings(excepted) == []


def test_label_mismatches_are_found_only_when_pods_and_namespaces_are_known() -> None:
    text = policy(
        """\
        podSelector:
          matchLabels: {app: wbe}
        policyTypes: [Ingress]
        ingress:
        - from:
          - podSelector: {matchLabels: {app: frontend}}
          - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: nope}}
        """
    )
    assert findings(text) == []
    found = findings(text, with_context=True)
    assert [(f.code, f.path) for f in found] == [
        ("no-match", "spec.podSelector"),
        ("no-match", "spec.ingress[0].from[0].podSelector"),
        ("no-match", "spec.ingress[0].from[1].namespaceSelector"),
    ]


BASELINE_WITH_EXCEPTIONS = """\
apiVersion: nsbaseline.io/v1alpha1
kind: BaselinePolicy
metadata:
  name: baseline
spec:
  exceptions:
  - namespace: a
    pieces: [allow-dns]
    reason: testing
    expiresAt: "2999-01-01T00:00:00Z"
  - namespace: b
    pieces: [default-deny]
    reason: old
    expiresAt: "2001-01-01T00:00:00Z"
"""


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_cli_lints_baseline_policy_files_and_their_exceptions(tmp_path: Path) -> None:
    path = tmp_path / "bp.yaml"
    path.write_text(BASELINE_WITH_EXCEPTIONS)
    code, out = run("lint", str(path))
    assert code == 0, out
    assert f"{path}:8: warning: exception drops allow-dns in namespace a" in out
    assert f"{path}:10: warning: exception for namespace b expired" not in out
    assert f"{path}:14: warning: exception for namespace b expired" in out
    code, _ = run("lint", "--strict", str(path))
    assert code == 1


def test_cli_exits_non_zero_on_errors_and_reports_json(tmp_path: Path) -> None:
    path = tmp_path / "np.yaml"
    path.write_text(policy("podSelector: {}\npolicyTypes: [Egress]\n"))
    code, out = run("lint", str(path), "-o", "json")
    assert code == 1
    [finding] = json.loads(out)
    assert finding["code"] == "egress-without-dns" and finding["line"] == 8


def test_cli_builtin_templates_are_clean() -> None:
    code, out = run("lint", "--templates-dir", str(Path(__file__).parents[2] / "templates"))
    assert code == 0 and out.strip() == "0 error(s), 0 warning(s)"


def test_cli_template_findings_point_into_the_template(tmp_path: Path) -> None:
    (tmp_path / "allow-dns.yaml.j2").write_text(
        textwrap.dedent(
            """\
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            spec:
              podSelector: {}
              policyTypes: [Egress]
              egress:
              - to:
                - namespaceSelector:
                    matchLabels: {dns: "true"}
            """
        )
    )
    code, out = run("lint", "--templates-dir", str(tmp_path))
    template = tmp_path / "allow-dns.yaml.j2"
    assert f"{template}:9: warning: piece allow-dns: namespaceSelector uses label 'dns'" in out
    # The override no longer reaches kube-dns, and default-deny isolates egress.
    assert f"{template}:5: error: piece allow-dns: egress is isolated for every pod" in out
    assert code == 1


def test_cli_needs_something_to_lint() -> None:
    code, out = run("lint")
    assert code == 2 and "give files to lint" in out


@pytest.mark.parametrize("bad", ["a: [", "- : :\n  x"])
def test_cli_reports_invalid_yaml_as_an_error(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    code, out = run("lint", str(path))
    assert code == 1 and "invalid-yaml" in out


def test_readme_shows_the_real_lint_output_of_the_mistakes_example(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # the README shows the path relative to the checkout
    readme = (repo / "README.md").read_text()
    result = CliRunner().invoke(
        main, ["lint", "examples/lint/mistakes.yaml"], catch_exceptions=False
    )
    assert result.exit_code == 1
    assert result.output in readme


def test_cli_reports_a_baseline_policy_value_of_the_wrong_type_at_its_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bp.yaml"
    path.write_text(BASELINE_WITH_EXCEPTIONS.replace("pieces: [default-deny]", "pieces: none"))
    code, out = run("lint", str(path))
    assert code == 1
    assert f"{path}:12: error: must be a list (spec.exceptions[1].pieces) [invalid-policy]" in out
