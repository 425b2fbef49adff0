"""``nsbaseline explain`` offline: from manifests and from a BaselinePolicy file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nsbaseline.cli import main
from nsbaseline.evaluator import Pod, World
from nsbaseline.explain import (
    EXTERNAL_IP,
    ExplainError,
    Inputs,
    build_world,
    format_matrix,
    matrix,
    parse_endpoint,
    parse_port,
)

POLICY = {
    "apiVersion": "nsbaseline.io/v1alpha1",
    "kind": "BaselinePolicy",
    "metadata": {"name": "baseline"},
    "spec": {},
}
MANIFESTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {}}},
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080, "name": "http"}]}]},
    },
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "db", "namespace": "shop", "labels": {"app": "db"}},
        "spec": {"containers": [{"name": "c"}]},
    },
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    },
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web-to-db", "namespace": "shop"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                    "ports": [{"port": 5432}],
                }
            ],
        },
    },
]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    manifests = tmp_path / "shop.yaml"
    manifests.write_text(yaml.safe_dump_all(MANIFESTS))
    return {"policy": policy, "manifests": manifests}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_fresh_baseline_namespace_allows_only_dns_egress(files: dict[str, Path]) -> None:
    code, out = run("explain", "--policy", str(files["policy"]), "-n", "team-a")
    assert code == 0, out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split() == [
        "FROM",
        "\\",
        "TO",
        "team-a/*",
        "kube-system/kube-dns",
        "external",
    ]
    assert rows["team-a/*"] == ["none", "53/TCP,53/UDP", "none"]
    assert rows["external"] == ["none", "-", "-"]


def test_single_query_names_the_allowing_rule(files: dict[str, Path]) -> None:
    code, out = run(
        "explain", "--policy", str(files["policy"]), "-n", "team-a",
        "--from", "team-a", "--to", "dns", "--port", "53/UDP",
    )  # fmt: skip
    assert code == 0, out
    assert out.splitlines()[0] == "team-a/* -> kube-system/kube-dns 53/UDP: ALLOWED"
    assert "allowed by team-a/nsbaseline-baseline-allow-dns egress[0]" in out


def test_single_query_json_says_denied_and_why(files: dict[str, Path]) -> None:
    code, out = run(
        "explain", "--policy", str(files["policy"]), "-n", "team-a",
        "--from", "team-a", "--to", "ip:1.1.1.1", "--port", "443", "-o", "json",
    )  # fmt: skip
    assert code == 0, out
    answer = json.loads(out)
    assert answer["allowed"] is False
    assert "team-a/nsbaseline-baseline-default-deny" in answer["egress"]["isolatedBy"]
    assert answer["ingress"]["enforced"] is False


def test_matrix_from_manifests_uses_real_pods_and_named_ports(files: dict[str, Path]) -> None:
    code, out = run("explain", "-f", str(files["manifests"]), "-n", "shop", "-o", "json")
    assert code == 0, out
    flows = {(f["from"], f["to"]): f for f in json.loads(out)["flows"]}
    assert flows[("shop/web", "shop/db")]["ports"] == "5432/TCP"
    assert flows[("shop/db", "shop/web")]["ports"] == "none"
    assert flows[("shop/web", f"ip:{EXTERNAL_IP}")]["ports"] == "all"


def test_mermaid_and_graphviz_draw_only_allowed_edges(files: dict[str, Path]) -> None:
    code, out = run("explain", "-f", str(files["manifests"]), "-n", "shop", "-o", "mermaid")
    assert code == 0 and out.startswith("flowchart LR")
    assert '-->|"5432/TCP"|' in out
    assert '-->|"none"|' not in out
    code, out = run("explain", "-f", str(files["manifests"]), "-n", "shop", "-o", "graphviz")
    assert code == 0 and out.startswith("digraph connectivity {") and out.rstrip().endswith("}")
    assert 'label="5432/TCP"' in out


def test_query_needs_all_three_parts(files: dict[str, Path]) -> None:
    code, out = run("explain", "-f", str(files["manifests"]), "--from", "shop/web")
    assert code == 2 and "--from, --to and --port" in out


def test_unknown_pod_is_reported(files: dict[str, Path]) -> None:
    code, out = run(
        "explain", "-f", str(files["manifests"]), "--from", "shop/nope", "--to", "dns",
        "--port", "53",
    )  # fmt: skip
    assert code == 2 and "no pod shop/nope" in out


def test_policy_without_namespace_is_refused(files: dict[str, Path]) -> None:
    code, out = run("explain", "--policy", str(files["policy"]))
    assert code == 2 and "--policy needs --namespace" in out


def test_parse_port_and_endpoint() -> None:
    assert parse_port("53/udp") == ("UDP", 53)
    assert parse_port("8080") == ("TCP", 8080)
    with pytest.raises(ExplainError):
        parse_port("http/TCP")
    world = build_world(Inputs([], [Pod("a", "x"), Pod("a", "y")], []), ["b"])
    assert str(parse_endpoint("b", world)) == "b/*"
    assert str(parse_endpoint("external", world)) == f"ip:{EXTERNAL_IP}"
    with pytest.raises(ExplainError, match="several pods"):
        parse_endpoint("a", world)


def test_matrix_needs_a_namespace() -> None:
    with pytest.raises(ExplainError):
        matrix(World(), [])


def test_table_marks_flows_outside_the_selection() -> None:
    world = build_world(Inputs([], [], []), ["x"])
    text = format_matrix(matrix(world, ["x"]), "table")
    assert text.splitlines()[2].split() == ["external", "all", "-", "-"]


def test_readme_shows_the_real_explain_of_a_fresh_baseline_namespace() -> None:
    repo = Path(__file__).resolve().parents[2]
    readme = (repo / "README.md").read_text()
    code, out = run(
        "explain", "--policy", str(repo / "examples/demo.yaml"), "--namespace", "team-a"
    )
    assert code == 0, out
    assert (
        "$ .venv/bin/nsbaseline explain --policy examples/demo.yaml --namespace team-a\n" + out
        in readme
    )
