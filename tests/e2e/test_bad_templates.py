"""Bad templates never cost a baseline.

The operator runs with ``--templates-dir`` pointing at a folder of extra templates. Each case's
template renders a valid NetworkPolicy while its ``values.bad`` is false; the test lets a policy
using it converge in two namespaces, then flips ``values.bad`` so the very same template turns
hostile or broken. In every case the policy must report ``Degraded`` naming the template and the
namespace, a Warning Event must be posted on the BaselinePolicy, every NetworkPolicy already in
place must stay exactly as it was (same uid and resourceVersion), and another policy and another
namespace must be unaffected — drift on them is still repaired while the bad one fails.

A template whose *syntax* is broken cannot be switched by a value, so that case rewrites the file
and restarts the operator. Pinned behaviour: the operator starts anyway (one broken file must not
stop every other baseline from being enforced) and reports the syntax error per render.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GOOD_LABEL = "bt-good"
BAD_LABEL = "bt-bad"

_GOOD_BRANCH = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  annotations:
    example.com/case: {case}
spec:
  podSelector: {{}}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - port: 8080
"""


def _switchable(case: str, bad: str) -> str:
    """A template that is good until the policy sets ``values.bad``, then renders ``bad``."""
    return (
        "{%- if not values.bad %}\n"
        + _GOOD_BRANCH.format(case=case)
        + "{%- else %}\n"
        + textwrap.dedent(bad).strip("\n")
        + "\n{%- endif %}\n"
    )


_NP_HEAD = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {}
spec:
  podSelector: {}
"""

# (case = template name, bad branch, fragments of which at least one must be in the message)
CASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("undefined-var", "{{ values.no_such_value.port }}", ("undefined variable",)),
    (
        "undefined-filter-arg",
        _NP_HEAD + "  ingress: [{ports: [{port: {{ namespace.annotations['missing'] }}}]}]",
        ("undefined variable",),
    ),
    ("not-yaml", "spec: [unclosed\n  : : {{ namespace.name }}", ("output is not valid YAML",)),
    (
        "not-a-netpol",
        """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {}
        data: {owned: "yes"}
        """,
        ("output must be a networking.k8s.io/v1 NetworkPolicy, got v1/ConfigMap",),
    ),
    (
        "two-documents",
        _NP_HEAD + "---\n" + _NP_HEAD,
        ("output holds 2 documents, expected one",),
    ),
    (
        "other-namespace",
        _NP_HEAD.replace("metadata: {}", "metadata: {namespace: kube-system}"),
        ("output targets namespace 'kube-system'",),
    ),
    (
        "foreign-name",
        _NP_HEAD.replace("metadata: {}", "metadata: {name: allow-everything}"),
        ("output is named 'allow-everything'",),
    ),
    (
        "rejected-port",
        _NP_HEAD + "  policyTypes: [Ingress]\n  ingress: [{ports: [{port: 0}]}]",
        ("API server refused", "422"),
    ),
    (
        "rejected-ipblock",
        _NP_HEAD + "  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/33}}]}]",
        ("API server refused",),
    ),
    ("escape-mro", "{{ ''.__class__.__mro__[1].__subclasses__() }}", ("sandbox", "undefined")),
    ("escape-globals", "{{ cycler.__init__.__globals__.os }}", ("sandbox", "undefined")),
    ("escape-dict-globals", "{{ dict.__init__.__globals__ }}", ("sandbox", "undefined")),
    (
        "escape-attr-walk",
        "{{ (namespace.labels.items|attr('__self__')|attr('__class__')).__base__ }}",
        ("sandbox", "undefined"),
    ),
    (
        "escape-format",
        "{{ '{0.__class__.__base__.__subclasses__}'.format(values) }}",
        ("sandbox",),
    ),
    (
        "huge-loop",
        "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
        ("loop steps",),
    ),
    ("huge-range", "{% for i in range(10**9) %}x{% endfor %}", ("loop steps",)),
    ("huge-repeat", "{{ 'x' * 100000000 }}", ("repetition too large",)),
    (
        "huge-output",
        "{% for i in range(99000) %}# {{ namespace.name }} padding line{{ i }}\n{% endfor %}",
        ("output exceeds",),
    ),
    (
        "yaml-alias-bomb",
        _NP_HEAD + 'a: &a ["x","x"]\nb: &b [*a,*a]\nc: &c [*b,*b]\nd: [*c,*c]',
        ("aliases",),
    ),
]

SYNTAX_CASE = "syntax-error"
SYNTAX_BAD = "{% if values.port %}\nspec: {{ values.port \n{% endfor %}\n"


def _np_key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (meta["uid"], meta["resourceVersion"], json.dumps(obj["spec"], sort_keys=True))


def _snapshot(cluster: Cluster, namespaces: list[str]) -> dict[tuple[str, str], Any]:
    return {
        (ns, name): _np_key(obj) for ns in namespaces for name, obj in cluster.netpols(ns).items()
    }


def _condition(policy: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((policy or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def _is_ready(cluster: Cluster, name: str) -> bool:
    policy = cluster.get("baselinepolicy", name)
    if policy is None:
        return False
    cond = _condition(policy, "Ready")
    return (
        cond.get("status") == "True"
        and policy["status"].get("observedGeneration") == policy["metadata"]["generation"]
    )


@pytest.fixture(scope="module")
def templates_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("templates")
    for case, bad, _ in CASES:
        (path / f"{case}.yaml.j2").write_text(_switchable(case, bad))
    (path / f"{SYNTAX_CASE}.yaml.j2").write_text(_switchable(SYNTAX_CASE, "{}"))
    return path


@pytest.fixture(scope="module")
def bed(
    cluster: Cluster, templates_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One operator and a converged good policy across three namespaces, for all cases."""
    cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")
    both = {GOOD_LABEL: "true", BAD_LABEL: "true"}
    namespaces = [
        cluster.namespace("bt", both),
        cluster.namespace("bt", both),
        cluster.namespace("bt-other", {GOOD_LABEL: "true"}),
    ]
    logdir = tmp_path_factory.mktemp("operator-logs")
    op = OperatorProcess(cluster, logdir, "--templates-dir", str(templates_dir)).start()
    cluster.apply(baseline_policy("good", namespaceSelector={"matchLabels": {GOOD_LABEL: "true"}}))
    wait_for(lambda: _is_ready(cluster, "good"), 120, what="policy good ready")
    try:
        yield {"op": op, "namespaces": namespaces}
    finally:
        op.stop()
        print(f"\n----- operator log ({op.log_path}) -----\n{op.tail(80)}")
        cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")
        cluster.kubectl("delete", "namespace", *namespaces, "--wait=false", check=False)


def _converge_case_policy(cluster: Cluster, name: str, template: str) -> None:
    cluster.apply(
        baseline_policy(
            name,
            namespaceSelector={"matchLabels": {BAD_LABEL: "true"}},
            templates=[{"name": template, "values": {"bad": False}}],
        )
    )
    wait_for(lambda: _is_ready(cluster, name), 120, what=f"policy {name} ready")


def _assert_degraded_without_loss(
    cluster: Cluster,
    bed: dict[str, Any],
    name: str,
    template: str,
    fragments: tuple[str, ...],
    before: dict[tuple[str, str], Any],
) -> None:
    namespaces: list[str] = bed["namespaces"]
    selected = namespaces[:2]

    def degraded() -> dict[str, Any] | None:
        policy: dict[str, Any] | None = cluster.get("baselinepolicy", name)
        cond = _condition(policy, "Degraded")
        if cond.get("status") != "True" or policy is None:
            return None
        if policy["status"].get("observedGeneration") != policy["metadata"]["generation"]:
            return None
        errors = policy["status"].get("errors") or []
        if {e["namespace"] for e in errors} != set(selected):
            return None
        return policy

    policy = wait_for(degraded, 90, what=f"{name} Degraded for both namespaces")
    cond = _condition(policy, "Degraded")
    assert cond["reason"] in ("TemplateError", "ApplyFailed"), cond
    assert f"template {template!r}" in cond["message"], cond
    assert any(f"namespace {ns!r}" in cond["message"] for ns in selected), cond
    assert any(f in cond["message"] for f in fragments), cond
    for error in policy["status"]["errors"]:
        assert error["template"] == template, error
        assert f"template {template!r} for namespace {error['namespace']!r}" in error["message"]
        assert any(f in error["message"] for f in fragments), error
    assert policy["status"]["failedNamespaces"] == 2
    assert _condition(policy, "Ready")["status"] == "False"

    def warning_event() -> list[dict[str, Any]]:
        return [
            e
            for e in cluster.events("default")
            if e["involvedObject"].get("name") == name
            and e["involvedObject"].get("kind") == "BaselinePolicy"
            and e["type"] == "Warning"
            and e["reason"] in ("TemplateError", "ApplyFailed")
            and f"template {template!r}" in e["message"]
        ]

    events = wait_for(warning_event, 60, what=f"Warning Event on BaselinePolicy {name}")
    assert {ns for ns in selected if any(repr(ns) in e["message"] for e in events)} == set(
        selected
    ), [e["message"] for e in events]

    # The other policy is still fully in force, and still repaired, in a failing namespace too.
    victim = "nsbaseline-good-default-deny"
    cluster.kubectl("delete", "networkpolicy", victim, "-n", selected[0])
    wait_for(
        lambda: victim in cluster.netpols(selected[0]),
        60,
        what=f"{victim} restored in {selected[0]} while {name} is degraded",
    )
    assert _is_ready(cluster, "good"), cluster.get("baselinepolicy", "good")["status"]

    # Nothing of the degraded policy moved; nothing else but the repaired object moved either.
    after = _snapshot(cluster, namespaces)
    repaired = (selected[0], victim)
    assert {k for k in after if k != repaired} == {k for k in before if k != repaired}
    for key, value in before.items():
        if key != repaired:
            assert after[key] == value, f"{key} changed while {name} was degraded"
    mine = {k for k in after if k[1].startswith(f"nsbaseline-{name}-")}
    assert {(ns, f"nsbaseline-{name}-{template}") for ns in selected} <= mine
    assert not any(k[0] == namespaces[2] for k in mine), "case policy reached an unselected ns"


@pytest.mark.parametrize(
    ("template", "bad", "fragments"), [pytest.param(*c, id=c[0]) for c in CASES]
)
def test_bad_template_degrades_and_keeps_what_is_in_place(
    cluster: Cluster, bed: dict[str, Any], template: str, bad: str, fragments: tuple[str, ...]
) -> None:
    del bad  # written into the templates directory by the fixture
    name = f"bt-{template}"
    _converge_case_policy(cluster, name, template)
    before = _snapshot(cluster, bed["namespaces"])
    cluster.kubectl(
        "patch",
        "baselinepolicy",
        name,
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": "/spec/templates/0/values/bad", "value": True}]),
    )
    try:
        _assert_degraded_without_loss(cluster, bed, name, template, fragments, before)
        assert bed["op"].proc.poll() is None, "the operator died"
    finally:
        cluster.kubectl("delete", "baselinepolicy", name, "--wait=true")


def test_syntax_error_after_restart_degrades_but_the_operator_keeps_running(
    cluster: Cluster, bed: dict[str, Any], templates_dir: Path
) -> None:
    name = f"bt-{SYNTAX_CASE}"
    _converge_case_policy(cluster, name, SYNTAX_CASE)
    before = _snapshot(cluster, bed["namespaces"])
    op: OperatorProcess = bed["op"]
    path = templates_dir / f"{SYNTAX_CASE}.yaml.j2"
    good = path.read_text()
    op.stop()
    path.write_text(SYNTAX_BAD)
    try:
        op.start()  # pinned: a broken template does not stop the operator from starting
        _assert_degraded_without_loss(
            cluster, bed, name, SYNTAX_CASE, ("syntax error on line",), before
        )
        assert "syntax error" in op.tail(400)
    finally:
        cluster.kubectl("delete", "baselinepolicy", name, "--wait=true")
        op.stop()
        path.write_text(good)
        op.start()
