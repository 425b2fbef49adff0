"""docs/reference.md is generated from the API module; these tests keep it from drifting.

Besides the byte-for-byte check, they walk the schema independently of the generator so that a
generator bug which silently drops fields or rules cannot pass as "up to date".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from hack import gen_docs
from nsbaseline import cli, crd

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _schema_nodes(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield schema
    for sub in (schema.get("properties") or {}).values():
        yield from _schema_nodes(sub)
    if isinstance(schema.get("items"), dict):
        yield from _schema_nodes(schema["items"])


def _root() -> dict[str, Any]:
    schema: dict[str, Any] = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_reference_is_up_to_date() -> None:
    assert gen_docs.main(["--check"]) == 0, "docs/reference.md is stale: run `make docs`"


def test_check_fails_on_a_stale_or_missing_file(tmp_path: Path) -> None:
    stale = tmp_path / "reference.md"
    stale.write_text(gen_docs.render().replace("Audit", "Dry-run"))
    assert gen_docs.main(["--check"], target=stale) == 1
    assert gen_docs.main(["--check"], target=tmp_path / "missing.md") == 1


def test_regenerating_writes_exactly_what_check_expects(tmp_path: Path) -> None:
    target = tmp_path / "docs" / "reference.md"
    assert gen_docs.main([], target=target) == 0
    assert gen_docs.main(["--check"], target=target) == 0


def test_every_description_and_validation_message_appears() -> None:
    text = gen_docs.render()
    for node in _schema_nodes(_root()):
        if "description" in node:
            assert node["description"] in text
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"] in text


def test_every_enum_value_bound_and_pattern_appears() -> None:
    text = gen_docs.render()
    for node in _schema_nodes(_root()):
        for value in node.get("enum", []):
            assert f"`{value}`" in text
        if "pattern" in node:
            assert f"pattern `{node['pattern']}`" in text
        for key in ("maximum", "maxItems", "maxLength"):
            if key in node:
                assert str(node[key]) in text


@pytest.mark.parametrize(
    "path",
    [
        "spec.namespaceSelector.matchExpressions[].operator",
        "spec.dns.ports[].protocol",
        "spec.egressCIDRs[].except",
        "spec.templates[].values",
        "status.conditions[].reason",
        "status.pendingChanges[].action",
    ],
)
def test_nested_fields_get_their_own_entry(path: str) -> None:
    assert f"### `{path}`" in gen_docs.render()


def test_printer_columns_and_condition_reasons_are_listed() -> None:
    text = gen_docs.render()
    for column in crd.crd()["spec"]["versions"][0]["additionalPrinterColumns"]:
        assert column["jsonPath"] in text
    for reason in ("NoNamespacesSelected", "Compliant", "TemplateError", "Conflict", "AuditClean"):
        assert f"`{reason}`" in text


def _prose(page: Path, inline_code: bool = False) -> str:
    """A page without code blocks (and inline code), where '#' and '](' mean something else."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return text if inline_code else re.sub(r"`[^`\n]*`", "", text)


def test_relative_links_in_docs_point_to_existing_files() -> None:
    """Hand-written pages link to each other; a renamed page must not leave dead links."""
    pages = sorted(DOCS.glob("*.md"))
    assert len(pages) >= 8, "the docs index and its pages"
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", _prose(page)):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_links_to_sections_name_existing_headings() -> None:
    """``page.md#anchor`` links must hit a heading (GitHub's slug rules, simplified)."""

    def slugs(page: Path) -> set[str]:
        out = set()
        for heading in re.findall(r"^#+ (.+)$", _prose(page, inline_code=True), flags=re.M):
            slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            out.add(slug)
        return out

    for page in DOCS.glob("*.md"):
        for target, anchor in re.findall(r"\]\(([^)#:]*)#([^)]+)\)", _prose(page)):
            linked = page.parent / target if target else page
            assert anchor in slugs(linked), f"{page.name} links to missing {target}#{anchor}"


def _render(*args: str) -> Result:
    return CliRunner().invoke(cli.main, ["render", *args])


def test_documented_example_renders_the_annotated_ingress_ports() -> None:
    result = _render(
        "-f", str(DOCS / "examples/baseline.yaml"),
        "--namespace-file", str(DOCS / "examples/team-b.yaml"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(result.stdout)}
    assert sorted(docs) == [
        "nsbaseline-baseline-allow-dns",
        "nsbaseline-baseline-allow-ingress-controller",
        "nsbaseline-baseline-allow-monitoring",
        "nsbaseline-baseline-default-deny",
    ]
    ingress = docs["nsbaseline-baseline-allow-ingress-controller"]["spec"]["ingress"][0]
    assert sorted(p["port"] for p in ingress["ports"]) == [8080, 8443]


def test_documented_extra_template_renders_with_its_values() -> None:
    result = _render(
        "-f", str(DOCS / "examples/same-namespace.yaml"),
        "-n", "team-a", "-l", "nsbaseline.io/enabled=true",
        "--templates-dir", str(DOCS / "examples/templates"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    docs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(result.stdout)}
    extra = docs["nsbaseline-tenants-allow-same-namespace"]
    assert extra["metadata"]["labels"]["nsbaseline.io/piece"] == "allow-same-namespace"
    assert extra["spec"]["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8080}]}
    ]
    assert "Allow traffic between pods of team-a." in str(extra["metadata"]["annotations"])


@pytest.mark.parametrize(
    ("variant", "grafana", "fake_prometheus"),
    [("and", False, False), ("or", True, False), ("any-namespace", False, True)],
)
def test_and_vs_or_example_gives_the_documented_answers(
    variant: str, grafana: bool, fake_prometheus: bool
) -> None:
    """The table in troubleshooting.md, recomputed with `nsbaseline explain`."""
    folder = DOCS / "examples/and-vs-or"

    def allowed(source: str) -> bool:
        result = CliRunner().invoke(
            cli.main,
            ["explain", "-f", str(folder / "cluster.yaml"), "-f", str(folder / f"{variant}.yaml"),
             "--from", source, "--to", "shop/web", "--port", "9090", "-o", "json"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        return bool(json.loads(result.stdout)["allowed"])

    assert allowed("monitoring/prometheus")
    assert allowed("monitoring/grafana") is grafana
    assert allowed("team-x/fake-prometheus") is fake_prometheus


def test_concepts_name_every_metric_and_builtin_piece() -> None:
    """concepts.md lists the metrics and pieces by name; a new one must be documented."""
    from prometheus_client import Counter, Gauge, Histogram, Metric

    from nsbaseline import metrics, names

    text = (DOCS / "concepts.md").read_text()
    collectors = [v for v in vars(metrics).values() if isinstance(v, Counter | Gauge | Histogram)]
    described: list[Metric] = [m for c in collectors for m in c.describe()]
    assert len(described) >= 10
    for metric in described:
        # Counters describe themselves without the _total suffix the exposition adds.
        name = metric.name + ("_total" if metric.type == "counter" else "")
        assert f"`{name}" in text, f"metric {name} is not documented in concepts.md"
    for piece in names.BUILTIN_PIECES:
        assert f"| `{piece}` |" in text
