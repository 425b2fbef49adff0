"""Render baseline pieces from Jinja templates into canonical NetworkPolicy objects.

Pure: given a namespace, a policy and a template set, returns objects or a :class:`RenderError`;
no I/O after the templates are loaded. Templates are configuration written by cluster admins but
are still treated as untrusted: they run in Jinja's sandbox with ``StrictUndefined``, with bounded
loops and string growth (:mod:`nsbaseline.sandbox`) and bounded output, and the result must be
exactly one NetworkPolicy for the target namespace (:mod:`nsbaseline.rendered`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes

from nsbaseline import names
from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.params import ParamError, namespace_params
from nsbaseline.rendered import (
    InvalidOutput,
    NamespaceBound,
    RenderedObject,
    Shape,
    shape_of,
    to_object,
)
from nsbaseline.sandbox import (
    LOOP_BUDGET,
    MAX_LOOP_STEPS,
    MAX_OUTPUT_CHARS,
    BoundedSandbox,
    Budget,
    bounded_filter,
)

TEMPLATE_SUFFIX = ".yaml.j2"
#: Renders remembered per template set: enough for every namespace in flight, bounded in memory.
RENDER_CACHE_SIZE = 1024


class RenderError(Exception):
    """A template failed for a namespace; the message names both so people can find it."""

    def __init__(self, template: str, namespace: str, message: str, policy_name: str = "") -> None:
        super().__init__(f"template {template!r} for namespace {namespace!r}: {message}")
        self.template = template
        self.namespace = namespace
        self.reason = message
        self.policy_name = policy_name


def builtin_template_dir() -> Path:
    """The shipped templates: packaged in the wheel, or ``templates/`` in a source checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "builtin_templates"
    if packaged.is_dir():
        return packaged
    return here.parent.parent / "templates"


class TemplateSet:
    """Built-in templates, optionally overridden or extended from a directory."""

    def __init__(self, override_dir: Path | None = None) -> None:
        sources: dict[str, str] = {}
        for directory in (builtin_template_dir(), override_dir):
            if directory is None or not directory.is_dir():
                continue
            for path in sorted(directory.iterdir()):
                # ConfigMap mounts contain ..data symlink folders; only plain template files count.
                if path.name.endswith(TEMPLATE_SUFFIX) and not path.name.startswith("."):
                    sources[path.name[: -len(TEMPLATE_SUFFIX)]] = path.read_text()
        self.sources = sources
        self._env = BoundedSandbox(
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            loader=jinja2.DictLoader({n + TEMPLATE_SUFFIX: s for n, s in sources.items()}),
        )
        self._env.globals = {"dict": dict}
        self._env.filters = {k: bounded_filter(v) for k, v in self._env.filters.items()}
        self._compiled: dict[str, jinja2.Template | RenderError] = {}
        self._reads: dict[str, frozenset[str]] = {}
        #: (template, policy, what it reads) -> rendered text; (template, policy, text) -> shape.
        self._texts: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self._shapes: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    @classmethod
    def from_sources(cls, sources: Mapping[str, str]) -> TemplateSet:
        """A set from in-memory sources layered over the built-ins (for tests and previews)."""
        result = cls()
        merged = {**result.sources, **sources}
        result.sources = merged
        result._env.loader = jinja2.DictLoader({n + TEMPLATE_SUFFIX: s for n, s in merged.items()})
        return result

    def _template(self, name: str, namespace: str) -> jinja2.Template:
        cached = self._compiled.get(name)
        if cached is None:
            try:
                cached = self._env.get_template(name + TEMPLATE_SUFFIX)
            except jinja2.TemplateNotFound:
                cached = RenderError(name, namespace, "no such template in the templates directory")
            except jinja2.TemplateSyntaxError as exc:
                cached = RenderError(name, namespace, f"syntax error on line {exc.lineno}: {exc}")
            self._compiled[name] = cached
        if isinstance(cached, RenderError):
            raise RenderError(name, namespace, cached.reason)
        return cached

    def syntax_errors(self) -> dict[str, str]:
        """Templates that do not compile, by name: each render of them fails until fixed."""
        broken: dict[str, str] = {}
        for name in sorted(self.sources):
            try:
                self._template(name, "")
            except RenderError as exc:
                broken[name] = exc.reason
        return broken

    def _render_text(self, name: str, context: dict[str, Any], namespace: str) -> str:
        template = self._template(name, namespace)
        budget = Budget(MAX_LOOP_STEPS)

        def bounded_range(*args: int) -> range:
            steps = range(*args)
            budget.take(len(steps))
            return steps

        chunks: list[str] = []
        size = 0
        token = LOOP_BUDGET.set(Budget(MAX_LOOP_STEPS, "for-loop iterations add up"))
        try:
            stream: Iterator[str] = template.generate({**context, "range": bounded_range})
            for chunk in stream:
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    raise RenderError(
                        name, namespace, f"output exceeds {MAX_OUTPUT_CHARS} characters"
                    )
                chunks.append(chunk)
        finally:
            LOOP_BUDGET.reset(token)
        return "".join(chunks)

    def reads(self, name: str) -> frozenset[str]:
        """The context variables template ``name`` can read (all of them when unsure).

        Found from the template's syntax tree; a template that includes, imports or extends
        another may read anything that one reads, so it counts as reading everything.
        """
        cached = self._reads.get(name)
        if cached is None:
            try:
                tree = self._env.parse(self.sources[name])
            except (KeyError, jinja2.TemplateSyntaxError):
                cached = ALL_INPUTS
            else:
                nested = (jinja2.nodes.Include, jinja2.nodes.Import, jinja2.nodes.FromImport)
                if any(True for _ in tree.find_all((*nested, jinja2.nodes.Extends))):
                    cached = ALL_INPUTS
                else:
                    cached = frozenset(jinja2.meta.find_undeclared_variables(tree))
            self._reads[name] = cached
        return cached

    def render(
        self, name: str, namespace: Namespace, policy: BaselinePolicy
    ) -> RenderedObject | None:
        """Render template ``name`` for ``namespace``; ``None`` when it renders nothing.

        Rendering (Jinja, then YAML, then validation) was most of a reconcile's CPU in profiles,
        and the built-in templates render the same text for every namespace of a policy. So the
        text is remembered under what the template can read — the namespace only if it reads
        ``namespace``, its annotation parameters only if it reads ``params`` — and the validated
        output under its text, with the namespace stamped in last (:class:`Shape`).
        """
        try:
            params = namespace_params(namespace.annotations)
        except ParamError as exc:
            raise RenderError(name, namespace.name, str(exc)) from None
        reads = self.reads(name)
        policy_key = (policy.name, policy.uid, policy.spec_fingerprint)
        key: tuple[Any, ...] = (name, policy_key)
        if "namespace" in reads:
            key += (
                namespace.name,
                tuple(sorted(namespace.labels.items())),
                tuple(sorted(namespace.annotations.items())),
            )
        if "params" in reads:
            key += (tuple(sorted((k, str(v)) for k, v in params.items())),)
        text = _lru_get(self._texts, key)
        if text is None:
            text = self._render_fresh(name, namespace, policy, params)
            _lru_put(self._texts, key, text, RENDER_CACHE_SIZE)
        shape_key = (name, policy_key, text)
        shape = _lru_get(self._shapes, shape_key)
        if shape is None:
            try:
                shape = shape_of(name, text, policy)
            except NamespaceBound:
                shape = _BOUND
            except InvalidOutput as exc:
                shape = exc
            _lru_put(self._shapes, shape_key, shape, RENDER_CACHE_SIZE)
        if isinstance(shape, InvalidOutput):
            raise RenderError(name, namespace.name, str(shape))
        if shape is _BOUND:
            try:
                return to_object(name, text, namespace.name, policy)
            except InvalidOutput as exc:
                raise RenderError(name, namespace.name, str(exc)) from None
        return shape.stamp(namespace.name) if isinstance(shape, Shape) else None

    def _render_fresh(
        self, name: str, namespace: Namespace, policy: BaselinePolicy, params: Mapping[str, Any]
    ) -> str:
        context = {
            "namespace": {
                "name": namespace.name,
                "labels": dict(namespace.labels),
                "annotations": dict(namespace.annotations),
            },
            "policy": {"name": policy.name, "spec": policy.spec_json},
            "values": _template_values(policy, name),
            "params": dict(params),
            "NAMESPACE_NAME_LABEL": names.NAMESPACE_NAME_LABEL,
        }
        try:
            return self._render_text(name, context, namespace.name)
        except RenderError:
            raise
        except jinja2.UndefinedError as exc:
            raise RenderError(name, namespace.name, f"undefined variable: {exc}") from None
        except jinja2.exceptions.SecurityError as exc:
            raise RenderError(name, namespace.name, f"refused by the sandbox: {exc}") from None
        except RecursionError:
            raise RenderError(name, namespace.name, "recursion too deep") from None
        except Exception as exc:  # any other template runtime error is still the template's fault
            raise RenderError(name, namespace.name, f"{type(exc).__name__}: {exc}") from None


#: Marks a text whose output names its namespace itself: validated per namespace, never shared.
_BOUND: Any = object()
#: What a template "reads" when it cannot be told from its syntax: everything.
ALL_INPUTS = frozenset({"namespace", "params", "policy", "values"})


def _lru_get(cache: OrderedDict[Any, Any], key: Any) -> Any:
    value = cache.get(key)
    if value is not None:
        cache.move_to_end(key)
    return value


def _lru_put(cache: OrderedDict[Any, Any], key: Any, value: Any, size: int) -> None:
    cache[key] = value
    if len(cache) > size:
        cache.popitem(last=False)


def _template_values(policy: BaselinePolicy, name: str) -> dict[str, Any]:
    for entry in policy.spec.templates or ():
        if entry.name == name:
            return dict(entry.values or {})
    return {}


__all__ = [
    "RenderError",
    "RenderedObject",
    "TemplateSet",
]
