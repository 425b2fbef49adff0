"""``nsbaseline render``: the offline preview runs the operator's own code path on files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from nsbaseline.cli import EXIT_BAD_INPUT, EXIT_RENDER_ERROR, main

POLICY = """\
apiVersion: nsbaseline.io/v1alpha1
kind: BaselinePolicy
metadata:
  name: baseline
  uid: 5f0c-uid
spec:
  monitoring:
    enabled: true
  ingressController:
    enabled: true
  annotations:
    nsbaseline.io/owner: platform-team
"""
NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: team-b
  labels:
    nsbaseline.io/enabled: "true"
  annotations:
    nsbaseline.io/ingress-ports: "8080,8443"
"""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "ns.yaml").write_text(NAMESPACE)
    return tmp_path


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["render", *map(str, args)])


def docs(result: Result) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(result.stdout) if d is not None]


def test_renders_policy_for_a_namespace_given_by_flags(files: Path) -> None:
    result = run(
        "-f", files / "policy.yaml", "-n", "team-b", "-l", "nsbaseline.io/enabled=true",
        "-a", "nsbaseline.io/ingress-ports=8080,8443",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    out = docs(result)
    names = [d["metadata"]["name"] for d in out]
    # Apply order: allow pieces first, default-deny last.
    assert names[-1] == "nsbaseline-baseline-default-deny"
    assert set(names) == {
        "nsbaseline-baseline-allow-dns",
        "nsbaseline-baseline-allow-monitoring",
        "nsbaseline-baseline-allow-ingress-controller",
        "nsbaseline-baseline-default-deny",
    }
    for doc in out:
        meta = doc["metadata"]
        assert meta["namespace"] == "team-b"
        assert meta["annotations"]["nsbaseline.io/applied-hash"]
        assert meta["annotations"]["nsbaseline.io/owner"] == "platform-team"
    ingress = next(d for d in out if d["metadata"]["name"].endswith("ingress-controller"))
    assert ingress["spec"]["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": 8080},
        {"protocol": "TCP", "port": 8443},
    ]


def test_namespace_file_gives_the_same_output_as_flags(files: Path) -> None:
    from_file = run("-f", files / "policy.yaml", "--namespace-file", files / "ns.yaml")
    from_flags = run(
        "-f", files / "policy.yaml", "-n", "team-b", "-l", "nsbaseline.io/enabled=true",
        "-a", "nsbaseline.io/ingress-ports=8080,8443",
    )  # fmt: skip
    assert from_file.exit_code == 0, from_file.stderr
    assert from_file.stdout == from_flags.stdout
    assert from_file.stdout.count("kind: NetworkPolicy") == 4


def test_output_is_deterministic(files: Path) -> None:
    first = run("-f", files / "policy.yaml", "--namespace-file", files / "ns.yaml")
    second = run("-f", files / "policy.yaml", "--namespace-file", files / "ns.yaml")
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout and first.stdout


def test_unselected_namespace_prints_nothing_and_says_why_on_stderr(files: Path) -> None:
    result = run("-f", files / "policy.yaml", "-n", "sandbox")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "does not select namespace sandbox" in result.stderr


def test_ignore_selector_renders_anyway(files: Path) -> None:
    result = run("-f", files / "policy.yaml", "-n", "sandbox", "--ignore-selector")
    assert result.exit_code == 0
    assert "namespace: sandbox" in result.stdout


def test_selector_on_the_immutable_name_label_works_offline(tmp_path: Path) -> None:
    policy = POLICY.replace(
        "spec:\n",
        "spec:\n  namespaceSelector:\n    matchLabels:\n"
        "      kubernetes.io/metadata.name: team-c\n",
    )
    (tmp_path / "p.yaml").write_text(policy)
    assert "namespace: team-c" in run("-f", tmp_path / "p.yaml", "-n", "team-c").stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a: [unclosed\n", "not valid YAML"),
        ("- a list\n", "must be a mapping"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "no BaselinePolicy found"),
        ("apiVersion: nsbaseline.io/v2\nkind: BaselinePolicy\nmetadata: {name: x}\n", "apiVersion"),
        (
            "apiVersion: nsbaseline.io/v1alpha1\nkind: BaselinePolicy\nmetadata: {}\n",
            "metadata.name",
        ),
        ("apiVersion: nsbaseline.io/v1alpha1\nkind: BaselinePolicy\nspec: {}\n", "metadata.name"),
        (
            "apiVersion: nsbaseline.io/v1alpha1\nkind: BaselinePolicy\nmetadata: {name: x}\n"
            "spec: [1]\n",
            "spec must be a mapping",
        ),
        ("", "no BaselinePolicy found"),
    ],
)
def test_bad_policy_file_exits_2(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(content)
    result = run("-f", tmp_path / "bad.yaml", "-n", "team-a")
    assert result.exit_code == EXIT_BAD_INPUT == 2
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a: [unclosed\n", "not valid YAML"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "exactly one Namespace"),
        ("apiVersion: v1\nkind: Namespace\nmetadata: {}\n", "needs metadata.name"),
        (NAMESPACE + "---\n" + NAMESPACE, "exactly one Namespace"),
    ],
)
def test_bad_namespace_file_exits_2(files: Path, content: str, message: str) -> None:
    (files / "badns.yaml").write_text(content)
    result = run("-f", files / "policy.yaml", "--namespace-file", files / "badns.yaml")
    assert result.exit_code == 2
    assert message in result.stderr


def test_missing_inputs_exit_2(files: Path) -> None:
    assert run("-f", files / "nope.yaml", "-n", "a").exit_code == 2
    assert run("-f", files / "policy.yaml").exit_code == 2
    assert run("-f", files / "policy.yaml", "-n", "a", "-l", "novalue").exit_code == 2
    assert (
        run("-f", files / "policy.yaml", "-n", "a", "--templates-dir", files / "none").exit_code
        == 2
    )


def test_template_error_exits_1_naming_template_and_namespace(files: Path) -> None:
    tdir = files / "templates"
    tdir.mkdir()
    (tdir / "allow-monitoring.yaml.j2").write_text("{{ policy.spec.monitoring.nope }}")
    result = run("-f", files / "policy.yaml", "--namespace-file", files / "ns.yaml",
                 "--templates-dir", tdir)  # fmt: skip
    assert result.exit_code == EXIT_RENDER_ERROR == 1
    assert "template 'allow-monitoring' for namespace 'team-b'" in result.stderr
    # The failed policy keeps what it has: nothing of it is offered for apply.
    assert result.stdout == ""


def test_template_override_and_extra_template_are_used(files: Path) -> None:
    tdir = files / "templates"
    tdir.mkdir()
    (tdir / "allow-same-namespace.yaml.j2").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec:\n  podSelector: {}\n"
        "  ingress:\n  - from:\n    - podSelector: {}\n"
    )
    policy = POLICY + "  templates:\n  - name: allow-same-namespace\n"
    (files / "p2.yaml").write_text(policy)
    result = run("-f", files / "p2.yaml", "--namespace-file", files / "ns.yaml",
                 "--templates-dir", tdir)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "nsbaseline-baseline-allow-same-namespace" in result.stdout


def test_mixed_manifest_skips_other_kinds(files: Path) -> None:
    (files / "mixed.yaml").write_text(NAMESPACE + "---\n" + POLICY)
    result = run("-f", files / "mixed.yaml", "--namespace-file", files / "ns.yaml")
    assert result.exit_code == 0
    assert "skipping Namespace" in result.stderr
    assert result.stdout.count("kind: NetworkPolicy") == 4


def test_policy_from_stdin(files: Path) -> None:
    result = CliRunner().invoke(
        main, ["render", "-f", "-", "--namespace-file", str(files / "ns.yaml")], input=POLICY
    )
    assert result.exit_code == 0
    assert result.stdout.count("kind: NetworkPolicy") == 4


def test_a_policy_value_of_the_wrong_type_is_one_line_naming_the_field(tmp_path: Path) -> None:
    """The API server would refuse it; offline it must not render as if it meant something."""
    (tmp_path / "policy.yaml").write_text(POLICY.replace("enabled: true", "enabled: 'yes'", 1))
    result = run("-f", tmp_path / "policy.yaml", "-n", "team-b")
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'policy.yaml'}: BaselinePolicy baseline: "
        "spec.monitoring.enabled: must be true or false"
    )
