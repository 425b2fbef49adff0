"""TemplateSet.render is memoised by what a template reads: namespaces a template renders the same
text for share one render, any changed input renders afresh, and the shortcuts give exactly what
the slow path gives."""

from __future__ import annotations

from typing import Any

import pytest

from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.render import RenderError, TemplateSet


def _policy(port: int, uid: str = "u1") -> BaselinePolicy:
    body = {
        "metadata": {"name": "p", "uid": uid},
        "spec": {"monitoring": {"enabled": True, "ports": [{"port": port}]}},
    }
    return BaselinePolicy.from_body(body)


def _ports(templates: TemplateSet, ns: Namespace, policy: BaselinePolicy) -> object:
    rendered = templates.render("allow-monitoring", ns, policy)
    assert rendered is not None
    return rendered.body["spec"]["ingress"][0].get("ports")


def test_namespaces_share_one_render_when_the_template_does_not_read_the_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    templates = TemplateSet()
    assert "namespace" not in templates.reads("allow-monitoring")
    fresh: list[tuple[object, ...]] = []
    real = templates._render_fresh

    def counting(*args: Any) -> str:
        fresh.append(args)
        return real(*args)

    monkeypatch.setattr(templates, "_render_fresh", counting)
    policy = _policy(9100)
    a = templates.render("allow-monitoring", Namespace("team-a"), policy)
    b = templates.render("allow-monitoring", Namespace("team-b"), policy)
    assert len(fresh) == 1
    assert a is not None and b is not None
    assert (a.body["metadata"]["namespace"], b.body["metadata"]["namespace"]) == (
        "team-a",
        "team-b",
    )
    assert a.body["spec"] == b.body["spec"]


def test_the_stamped_hashes_equal_the_ones_computed_from_the_whole_body() -> None:
    from nsbaseline.observed import spec_digest
    from nsbaseline.plan import desired_hash

    templates = TemplateSet()
    for name in ("team-a", "team-b", "x"):
        obj = templates.render("allow-monitoring", Namespace(name), _policy(9100))
        assert obj is not None
        assert obj.digest == desired_hash(obj.body)
        assert obj.spec_digest == spec_digest(obj.body["spec"])


def test_a_template_that_reads_the_namespace_renders_per_namespace() -> None:
    source = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec:\n  podSelector:\n"
        "    matchLabels: {team: {{ namespace.name }}}\n"
    )
    templates = TemplateSet.from_sources({"per-team": source})
    assert "namespace" in templates.reads("per-team")
    policy = BaselinePolicy.from_body(
        {"metadata": {"name": "p", "uid": "u"}, "spec": {"templates": [{"name": "per-team"}]}}
    )
    for name in ("team-a", "team-b"):
        obj = templates.render("per-team", Namespace(name), policy)
        assert obj is not None
        assert obj.body["spec"]["podSelector"] == {"matchLabels": {"team": name}}


def test_a_changed_policy_spec_annotation_or_uid_renders_again() -> None:
    templates = TemplateSet()
    ns = Namespace("team-a", {}, {})
    assert _ports(templates, ns, _policy(9100)) == [{"port": 9100, "protocol": "TCP"}]
    assert _ports(templates, ns, _policy(9101)) == [{"port": 9101, "protocol": "TCP"}]
    annotated = Namespace("team-a", {}, {"nsbaseline.io/monitoring-ports": "8000"})
    assert _ports(templates, annotated, _policy(9101)) == [{"port": 8000, "protocol": "TCP"}]
    other = templates.render("allow-monitoring", ns, _policy(9101, uid="u2"))
    assert other is not None
    assert other.body["metadata"]["ownerReferences"][0]["uid"] == "u2"


def test_a_remembered_failure_is_raised_again_for_the_same_inputs() -> None:
    templates = TemplateSet()
    ns = Namespace("team-a", {}, {"nsbaseline.io/monitoring-ports": "99999999"})
    for _ in range(2):
        with pytest.raises(RenderError, match="team-a"):
            templates.render("allow-monitoring", ns, _policy(9100))


def test_parsed_text_is_remembered_as_fresh_objects() -> None:
    from nsbaseline import rendered

    text = "apiVersion: v1\nkind: Thing\nspec: {ports: [1, 2]}\n"
    first = rendered.load_docs(text)
    first[0]["spec"]["ports"].append(3)  # a caller's mutation must not leak into the cache
    assert rendered.load_docs(text) == [
        {"apiVersion": "v1", "kind": "Thing", "spec": {"ports": [1, 2]}}
    ]
    assert text in rendered._PARSED


def test_documents_json_cannot_represent_are_not_remembered() -> None:
    import datetime

    from nsbaseline import rendered

    text = "when: 2024-01-02\n"
    assert rendered.load_docs(text) == [{"when": datetime.date(2024, 1, 2)}]
    assert text not in rendered._PARSED


def test_a_remembered_spec_digest_is_the_canonical_one_whatever_the_key_order() -> None:
    from nsbaseline import observed

    spec = {"podSelector": {}, "ingress": [{"ports": [{"port": 53}, {"port": "80"}]}]}
    observed._DIGESTS.clear()
    fresh = observed.spec_digest(spec)
    reordered = {"ingress": [{"ports": [{"port": "80"}, {"port": 53}]}], "podSelector": {}}
    assert observed.spec_digest(reordered) == fresh  # canonical: port order means nothing
    assert observed.spec_digest(spec) == fresh  # now from memory
    assert observed.spec_digest({**spec, "policyTypes": ["Egress"]}) != fresh
