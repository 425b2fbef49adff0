"""Templates are untrusted: every way out of the sandbox or into unbounded work is a RenderError.

Each refusal must name the template and the namespace (that is what the operator puts in status
and Events) and must come back promptly; the per-test timeout is only a backstop against a hang,
never a performance assertion.
"""

from __future__ import annotations

import pytest

from nsbaseline.model import Namespace
from nsbaseline.policy_render import render_policy
from nsbaseline.render import RenderError, TemplateSet
from nsbaseline.sandbox import MAX_INT_ARGUMENT, MAX_OUTPUT_CHARS
from tests.support.builders import NOW, netpol_template, policy

NS = Namespace("ns-sandbox", {"kubernetes.io/metadata.name": "ns-sandbox"})
POLICY = policy("pol")
BIG = 10**9

#: template source -> a fragment the error message must contain.
REFUSED: dict[str, tuple[str, str]] = {
    "syntax-error": ("{% if %}", "syntax error on line 1"),
    "undefined-variable": ("{{ nope.field }}", "undefined variable"),
    "undefined-attribute": ("{{ policy.spec.noSuchField.x }}", "undefined variable"),
    "not-yaml": ("a: [\n", "output is not valid YAML"),
    "not-a-mapping": ("- just\n- a list\n", "not a YAML mapping"),
    "two-documents": (netpol_template() + "---\n" + netpol_template(), "2 documents"),
    "wrong-kind": ("apiVersion: v1\nkind: ConfigMap\ndata: {}\n", "got v1/ConfigMap"),
    "wrong-api-version": (
        "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nspec: {}\n",
        "networking.k8s.io/v1 NetworkPolicy",
    ),
    "other-namespace": (
        netpol_template(metadata="  namespace: kube-system\n"),
        "targets namespace 'kube-system'",
    ),
    "wrong-name": (netpol_template(metadata="  name: allow-all\n"), "named 'allow-all'"),
    "owner-references": (
        netpol_template(metadata="  ownerReferences: []\n"),
        "got ['ownerReferences']",
    ),
    "finalizers": (
        netpol_template(metadata="  finalizers: [example.com/keep]\n"),
        "got ['finalizers']",
    ),
    "extra-top-level": (netpol_template() + "status: {}\n", "unexpected top-level fields"),
    "spec-not-mapping": (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nspec: [1]\n",
        "spec must be a mapping",
    ),
    "invalid-spec": (
        netpol_template("  podSelector: {}\n  ingress: [{from: [{ipBlock: {except: []}}]}]\n"),
        "not a valid NetworkPolicy spec",
    ),
    "class-walk": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "__class__"),
    "attr-filter-walk": ("{{ ''|attr('__class__') }}", "__class__"),
    "globals-walk": ("{{ range.__globals__ }}", "__globals__"),
    "subclasses-walk": ("{{ dict.__subclasses__() }}", "__subclasses__"),
    "init-globals-walk": ("{{ dict.__init__.__globals__['sys'] }}", "unsafe"),
    "huge-range": (f"{{% for i in range({BIG}) %}}{{% endfor %}}", "loop steps"),
    "huge-range-list": (f"{{{{ range({BIG})|list|length }}}}", "loop steps"),
    "nested-range-loops": (
        "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
        "loop steps",
    ),
    "nested-list-loops": (
        "{% set l = [1] * 100000 %}{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}",
        "loop steps",
    ),
    "nested-string-loops": (
        "{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
        "loop steps",
    ),
    "loops-in-macro": (
        "{% macro m(l) %}{% for b in l %}{% endfor %}{% endmacro %}"
        "{% set l = [1] * 1000 %}{% for a in l %}{{ m(l) }}{% endfor %}",
        "loop steps",
    ),
    "recursive-loop": (
        "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
        "recursive for loops are not allowed",
    ),
    "string-multiplication": (f"{{{{ 'x' * {BIG} }}}}", "repetition too large"),
    "chained-multiplication": ("{{ 'x' * 1000 * 1000 * 1000 }}", "repetition too large"),
    "list-multiplication": (f"{{{{ [0] * {BIG} }}}}", "repetition too large"),
    "huge-power": ("{{ 2 ** 100000 }}", "exponent too large"),
    "center-filter": (f"{{{{ 'x'|center({BIG}) }}}}", "numeric filter argument"),
    "indent-filter": (f"{{{{ 'a\\nb'|indent(width={BIG}) }}}}", "numeric filter argument"),
    "wordwrap-filter": (f"{{{{ 'x'|wordwrap({BIG}) }}}}", "numeric filter argument"),
    "batch-filter": (f"{{{{ [1]|batch({BIG})|list }}}}", "numeric filter argument"),
    "center-method": (f"{{{{ 'x'.center({BIG}) }}}}", "numeric method argument"),
    "zfill-method": (f"{{{{ 'x'.zfill({BIG}) }}}}", "numeric method argument"),
    "expandtabs-method": (f"{{{{ '\\t'.expandtabs({BIG}) }}}}", "numeric method argument"),
    "replace-growth": (
        "{% set s = 'x' * 100000 %}{{ s.replace('x', s) }}",
        "str.replace result too large",
    ),
    "percent-width": ("{{ '%0999999999d' % 1 }}", "format width"),
    "percent-star-width": (f"{{{{ '%*d' % ({BIG}, 1) }}}}", "format width"),
    "format-width": ("{{ '{:>999999999}'.format(1) }}", "format width"),
    "format-nested-width": (f"{{{{ '{{:{{}}}}'.format(1, {BIG}) }}}}", "nested format"),
    "list-mutation": (
        "{% set l = [1] %}{% for i in range(40) %}{{ l.extend(l) }}{% endfor %}",
        "unsafe",
    ),
    "dict-mutation": ("{% set d = dict(s='x') %}{{ d.update(s='y') }}", "unsafe"),
    "output-size": (
        "{% for i in range(30000) %}xxxxxxxxxxxxxxxxxxxx{% endfor %}",
        f"output exceeds {MAX_OUTPUT_CHARS}",
    ),
    "alias-bomb": (
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
        "aliases",
    ),
    "macro-recursion": ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursion too deep"),
    "runtime-error": ("{{ 1 // 0 }}", "ZeroDivisionError"),
}

TEMPLATES = TemplateSet.from_sources({name: src for name, (src, _) in REFUSED.items()})


@pytest.mark.timeout(30)
@pytest.mark.parametrize("piece", sorted(REFUSED))
def test_hostile_or_broken_template_is_a_render_error_naming_template_and_namespace(
    piece: str,
) -> None:
    fragment = REFUSED[piece][1]
    with pytest.raises(RenderError) as caught:
        TEMPLATES.render(piece, NS, POLICY)
    error = caught.value
    assert error.template == piece
    assert error.namespace == "ns-sandbox"
    assert f"template '{piece}'" in str(error)
    assert "namespace 'ns-sandbox'" in str(error)
    assert fragment in error.reason  # the reason alone: the name must not match it


def test_missing_template_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="no such template"):
        TEMPLATES.render("not-there", NS, POLICY)


def test_syntax_error_is_reported_again_for_every_namespace() -> None:
    """The compiled result is cached, but each namespace gets an error naming itself."""
    other = Namespace("ns-other")
    for ns in (NS, other):
        with pytest.raises(RenderError) as caught:
            TEMPLATES.render("syntax-error", ns, POLICY)
        assert caught.value.namespace == ns.name


def test_render_policy_collects_errors_and_keeps_the_other_pieces() -> None:
    templates = TemplateSet.from_sources({"extra": "{{ nope }}"})
    pol = policy("pol", templates=[{"name": "extra"}])
    result = render_policy(templates, NS, pol, NOW)
    assert [e.template for e in result.errors] == ["extra"]
    assert result.errors[0].policy_name == "pol"
    assert {o.piece for o in result.objects} == {"allow-dns", "default-deny"}


# --- What the bounds must still allow: real templates use ports, loops and formatting. ---


def test_port_numbers_above_the_size_bound_pass_through_filters() -> None:
    """The filtered value is data (a port), not a size: only further arguments are bounded."""
    src = netpol_template(
        "  podSelector: {}\n  ingress:\n  - ports:\n"
        "    - port: {{ values.port | int }}\n"
        "      endPort: {{ (values.port + 5) | string }}\n"
    )
    templates = TemplateSet.from_sources({"high-port": src})
    pol = policy("pol", templates=[{"name": "high-port", "values": {"port": 30000}}])
    obj = templates.render("high-port", NS, pol)
    assert obj is not None
    assert MAX_INT_ARGUMENT < 30000
    assert obj.spec["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": 30000, "endPort": 30005}]}
    ]


def test_moderate_loops_formatting_and_loop_variables_still_work() -> None:
    src = netpol_template(
        "  podSelector:\n    matchLabels:\n"
        "{% for k, v in namespace.labels|dictsort %}"
        "      {{ k }}: {{ v | tojson }}\n"
        "{% endfor %}"
        "  ingress:\n  - ports:\n"
        "{% for p in range(1000, 1003) %}"
        "    - port: {{ '%d' % p }}\n      protocol: {{ '{:>3}'.format('TCP') | trim }}\n"
        "{% else %}{{ fail }}{% endfor %}"
        "{% for i in range(200) %}{% for j in range(200) %}{% endfor %}{% endfor %}"
        "{% for x in ['a', 'b'] %}{% if loop.last %}    - port: {{ loop.index }}\n{% endif %}"
        "{% endfor %}"
    )
    templates = TemplateSet.from_sources({"ok": src})
    obj = templates.render("ok", NS, POLICY)
    assert obj is not None
    assert obj.spec["podSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ns-sandbox"}}
    assert [p["port"] for p in obj.spec["ingress"][0]["ports"]] == [1000, 1001, 1002, 2]


def test_each_render_gets_a_fresh_loop_budget() -> None:
    """40 000 iterations per render is fine, however many renders came before."""
    src = "{% for i in range(200) %}{% for j in range(200) %}{% endfor %}{% endfor %}"
    templates = TemplateSet.from_sources({"loops": src + netpol_template()})
    for i in range(5):  # a different namespace each time, so no render is served from a cache
        assert templates.render("loops", Namespace(f"ns-{i}"), POLICY) is not None


def test_empty_output_renders_nothing() -> None:
    templates = TemplateSet.from_sources({"off": "{# disabled #}\n\n"})
    assert templates.render("off", NS, POLICY) is None
