"""Render baseline pieces from Jinja templates into canonical NetworkPolicy objects.

Pure: given a namespace, a policy and a template set, returns objects or a :class:`RenderError`;
no I/O after the templates are loaded. Templates are configuration written by cluster admins but
are still treated as untrusted: they run in Jinja's sandbox with ``StrictUndefined``, with bounded
loops, bounded string growth and bounded output, and the result must be exactly one NetworkPolicy
for the target namespace.
"""

from __future__ import annotations

import contextvars
import datetime
import functools
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

from nsbaseline import canonical, exemptions, names
from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.params import ParamError, namespace_params

TEMPLATE_SUFFIX = ".yaml.j2"
#: Bounds that keep a hostile or careless template from exhausting the operator.
#: Renders remembered per template set: enough for every namespace in flight, bounded in memory.
RENDER_CACHE_SIZE = 1024
MAX_OUTPUT_CHARS = 256 * 1024
MAX_LOOP_STEPS = 100_000
MAX_INT_ARGUMENT = 10_000
_ALLOWED_METADATA = frozenset({"name", "namespace", "labels", "annotations"})

try:  # libyaml is much faster; PyYAML wheels ship it.
    _FastLoader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - depends on the PyYAML build
    _FastLoader = yaml.SafeLoader


class RenderError(Exception):
    """A template failed for a namespace; the message names both so people can find it."""

    def __init__(self, template: str, namespace: str, message: str, policy_name: str = "") -> None:
        super().__init__(f"template {template!r} for namespace {namespace!r}: {message}")
        self.template = template
        self.namespace = namespace
        self.reason = message
        self.policy_name = policy_name


class _NoAliasLoader(yaml.SafeLoader):
    """Refuses YAML aliases, which can expand a tiny document exponentially."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("YAML aliases (*name) are not allowed in rendered output")
        return super().compose_node(parent, index)


class _Budget:
    """Counts loop steps across one render; raising ends a runaway template."""

    def __init__(self, limit: int, what: str = "range() sizes add up") -> None:
        self.left = limit
        self.what = what

    def take(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise jinja2.exceptions.SecurityError(
                f"template exceeded {MAX_LOOP_STEPS} loop steps ({self.what})"
            )


#: Iterations left to the render in progress. Rendering is synchronous, one template at a time.
_LOOP_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "nsbaseline_loop_budget", default=None
)
_PERCENT_FIELD = re.compile(r"%[-#0 +]*(\d*|\*)(?:\.(\d*|\*))?")
_BRACE_FIELD = re.compile(r"\{[^{}]*\}")


def _check_int(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARGUMENT:
        raise jinja2.exceptions.SecurityError(f"{what} {value} is above {MAX_INT_ARGUMENT}")


def _check_format_widths(fmt: str, fields: re.Pattern[str]) -> None:
    """Refuse widths and precisions that would allocate huge strings (``%0999999999d``)."""
    if fields is _BRACE_FIELD and re.search(r"\{[^{}]*\{", fmt):
        raise jinja2.exceptions.SecurityError("nested format fields are not allowed")
    for field in fields.finditer(fmt):
        for digits in re.findall(r"\d+", field.group(0)):
            _check_int(int(digits), "format width")


class _BoundedLoops(CodeGenerator):
    """Compiles every ``{% for %}`` to iterate through the render's step counter.

    ``range()`` sizes alone do not bound work: nested loops over lists or strings multiply.
    """

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if node.recursive:
            self.fail("recursive for loops are not allowed", node.lineno)
        node.iter = nodes.Call(
            nodes.EnvironmentAttribute("bounded_iter"), [node.iter], [], None, None
        ).set_lineno(node.lineno)
        super().visit_For(node, frame)


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox plus limits on loops, ``*``/``**``/``%`` and huge numeric arguments.

    Immutable: templates cannot grow lists or dicts in place, so no loop can double a value.
    """

    code_generator_class = _BoundedLoops
    intercepted_binops = frozenset({"*", "**", "%"})

    def bounded_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        budget = _LOOP_BUDGET.get()
        for item in iterable:
            if budget is not None:
                budget.take(1)
            yield item

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_widths(value.__self__, _BRACE_FIELD)
        return wrapped

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        bound_to = getattr(obj, "__self__", None)
        if isinstance(bound_to, str):  # str.center(10**9), str.zfill(...), str.replace(...)
            for value in (*args, *kwargs.values()):
                _check_int(value, "numeric method argument")
            if getattr(obj, "__name__", "") == "replace" and len(args) >= 2:
                old, new = str(args[0]), str(args[1])
                growth = bound_to.count(old) * (len(new) - len(old)) if old else len(new)
                if len(bound_to) + growth > MAX_OUTPUT_CHARS:
                    raise jinja2.exceptions.SecurityError("str.replace result too large")
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "**" and isinstance(right, int) and abs(right) > 64:
            raise jinja2.exceptions.SecurityError("exponent too large")
        if op == "%" and isinstance(left, str):
            _check_format_widths(left, _PERCENT_FIELD)
            if "*" in left:
                for value in right if isinstance(right, tuple) else (right,):
                    _check_int(value, "format width")
        if op == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(count, int)
                    and len(seq) * count > MAX_OUTPUT_CHARS
                ):
                    raise jinja2.exceptions.SecurityError("sequence repetition too large")
        return super().call_binop(context, op, left, right)


def _bounded_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    # The filtered value itself (after any context argument Jinja passes first) is data, such
    # as a port number; only the further arguments are sizes (center(10**9), indent(...)).
    skip = 2 if getattr(func, "jinja_pass_arg", None) is not None else 1

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[skip:], *kwargs.values()):
            _check_int(value, "numeric filter argument")
        return func(*args, **kwargs)

    return wrapper


def builtin_template_dir() -> Path:
    """The shipped templates: packaged in the wheel, or ``templates/`` in a source checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "builtin_templates"
    if packaged.is_dir():
        return packaged
    return here.parent.parent / "templates"


@dataclass(frozen=True)
class RenderedObject:
    """One desired NetworkPolicy, with the BaselinePolicy and piece it belongs to."""

    policy_name: str
    piece: str
    body: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def spec(self) -> Mapping[str, Any]:
        spec: Mapping[str, Any] = self.body["spec"]
        return spec


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
        self._env = _BoundedSandbox(
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            loader=jinja2.DictLoader({n + TEMPLATE_SUFFIX: s for n, s in sources.items()}),
        )
        self._env.globals = {"dict": dict}
        self._env.filters = {k: _bounded_filter(v) for k, v in self._env.filters.items()}
        self._compiled: dict[str, jinja2.Template | RenderError] = {}
        self._rendered: OrderedDict[tuple[Any, ...], RenderedObject | RenderError | None] = (
            OrderedDict()
        )

    @classmethod
    def from_sources(cls, sources: Mapping[str, str]) -> TemplateSet:
        """A set from in-memory sources layered over the built-ins (for tests and previews)."""
        result = cls()
        merged = {**result.sources, **sources}
        result.sources = merged
        result._env.loader = jinja2.DictLoader({n + TEMPLATE_SUFFIX: s for n, s in merged.items()})
        result._rendered.clear()
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
        budget = _Budget(MAX_LOOP_STEPS)

        def bounded_range(*args: int) -> range:
            steps = range(*args)
            budget.take(len(steps))
            return steps

        chunks: list[str] = []
        size = 0
        token = _LOOP_BUDGET.set(_Budget(MAX_LOOP_STEPS, "for-loop iterations add up"))
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
            _LOOP_BUDGET.reset(token)
        return "".join(chunks)

    def render(
        self, name: str, namespace: Namespace, policy: BaselinePolicy
    ) -> RenderedObject | None:
        """Render template ``name`` for ``namespace``; ``None`` when it renders nothing.

        Memoised (bounded LRU): the operator re-renders a namespace each time the watch echoes
        one of its own writes, and rendering (Jinja plus YAML parsing) was most of a reconcile's
        CPU in profiles. The key holds every input a render reads; results are read-only.
        """
        key = (
            name,
            namespace.name,
            tuple(sorted(namespace.labels.items())),
            tuple(sorted(namespace.annotations.items())),
            policy.name,
            policy.uid,
            policy.spec_fingerprint,
        )
        try:
            cached = self._rendered[key]
            self._rendered.move_to_end(key)
        except KeyError:
            try:
                cached = self._render_uncached(name, namespace, policy)
            except RenderError as exc:
                cached = exc
            self._rendered[key] = cached
            if len(self._rendered) > RENDER_CACHE_SIZE:
                self._rendered.popitem(last=False)
        if isinstance(cached, RenderError):
            raise RenderError(cached.template, cached.namespace, cached.reason, cached.policy_name)
        return cached

    def _render_uncached(
        self, name: str, namespace: Namespace, policy: BaselinePolicy
    ) -> RenderedObject | None:
        try:
            params = namespace_params(namespace.annotations)
        except ParamError as exc:
            raise RenderError(name, namespace.name, str(exc)) from None
        context = {
            "namespace": {
                "name": namespace.name,
                "labels": dict(namespace.labels),
                "annotations": dict(namespace.annotations),
            },
            "policy": {"name": policy.name, "spec": policy.spec_json},
            "values": _template_values(policy, name),
            "params": params,
            "NAMESPACE_NAME_LABEL": names.NAMESPACE_NAME_LABEL,
        }
        try:
            text = self._render_text(name, context, namespace.name)
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
        return _parse(name, text, namespace.name, policy)


def _template_values(policy: BaselinePolicy, name: str) -> dict[str, Any]:
    for entry in policy.spec.templates or ():
        if entry.name == name:
            return dict(entry.values or {})
    return {}


#: Rendered text -> its documents as JSON. The built-in templates render the same text for every
#: namespace of a policy, and json.loads is far cheaper than YAML's Python-level constructor.
_PARSED: OrderedDict[str, str] = OrderedDict()
_PARSED_SIZE = 1024


def _load_docs(text: str) -> list[Any]:
    """The non-empty YAML documents in ``text``, fresh objects on every call."""
    cached = _PARSED.get(text)
    if cached is not None:
        _PARSED.move_to_end(text)
        loaded: list[Any] = json.loads(cached)
        return loaded
    loader = _NoAliasLoader if "&" in text or "*" in text else _FastLoader
    docs = [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    try:
        encoded = json.dumps(docs)
    except (TypeError, ValueError):  # dates, non-string keys...: not JSON, never cached
        return docs
    if json.loads(encoded) == docs:  # only when JSON gives back exactly the same values
        _PARSED[text] = encoded
        if len(_PARSED) > _PARSED_SIZE:
            _PARSED.popitem(last=False)
    return docs


def _parse(piece: str, text: str, namespace: str, policy: BaselinePolicy) -> RenderedObject | None:
    try:
        docs = _load_docs(text)
    except yaml.YAMLError as exc:
        raise RenderError(piece, namespace, f"output is not valid YAML: {exc}") from None
    if not docs:
        return None
    if len(docs) > 1:
        raise RenderError(piece, namespace, f"output holds {len(docs)} documents, expected one")
    doc = docs[0]
    if not isinstance(doc, dict):
        raise RenderError(piece, namespace, "output is not a YAML mapping")
    return RenderedObject(policy.name, piece, _validate(piece, doc, namespace, policy))


def _validate(
    piece: str, doc: dict[str, Any], namespace: str, policy: BaselinePolicy
) -> dict[str, Any]:
    def fail(message: str) -> RenderError:
        return RenderError(piece, namespace, message)

    if doc.get("apiVersion") != "networking.k8s.io/v1" or doc.get("kind") != "NetworkPolicy":
        raise fail(
            "output must be a networking.k8s.io/v1 NetworkPolicy, got "
            f"{doc.get('apiVersion')}/{doc.get('kind')}"
        )
    extra = set(doc) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        raise fail(f"unexpected top-level fields {sorted(extra)}")
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise fail("metadata must be a mapping")
    extra = set(meta) - _ALLOWED_METADATA
    if extra:
        raise fail(
            f"metadata may only set name, namespace, labels, annotations; got {sorted(extra)}"
        )
    expected_name = names.object_name(policy.name, piece)
    if meta.get("namespace") not in (None, namespace):
        raise fail(f"output targets namespace {meta['namespace']!r}, not {namespace!r}")
    if meta.get("name") not in (None, expected_name):
        raise fail(
            f"output is named {meta['name']!r}; generated objects are named {expected_name!r}"
        )
    raw_spec = doc.get("spec")
    if not isinstance(raw_spec, dict):
        raise fail("spec must be a mapping")
    try:
        spec = canonical.spec(raw_spec)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise fail(
            f"spec is not a valid NetworkPolicy spec ({type(exc).__name__}: {exc})"
        ) from None
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels.update(
        {
            names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE,
            names.POLICY_LABEL: policy.name,
            names.PIECE_LABEL: piece,
        }
    )
    annotations = dict(policy.spec.annotations or {})
    annotations.update({str(k): str(v) for k, v in (meta.get("annotations") or {}).items()})
    metadata: dict[str, Any] = {
        "name": expected_name,
        "namespace": namespace,
        "labels": dict(sorted(labels.items())),
    }
    if annotations:
        metadata["annotations"] = dict(sorted(annotations.items()))
    if policy.uid:
        metadata["ownerReferences"] = [policy.owner_reference()]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": spec,
    }


def pieces_of(policy: BaselinePolicy) -> list[str]:
    """Every template a policy renders: the built-ins, then its extra templates by name."""
    extra = sorted(t.name for t in policy.spec.templates or ())
    return [*names.BUILTIN_PIECES, *(e for e in extra if e not in names.BUILTIN_PIECES)]


@dataclass(frozen=True)
class PolicyRender:
    """Everything one policy wants in one namespace, or the errors that stopped it."""

    policy: BaselinePolicy
    objects: tuple[RenderedObject, ...]
    errors: tuple[RenderError, ...]


def render_policy(
    templates: TemplateSet,
    namespace: Namespace,
    policy: BaselinePolicy,
    now: datetime.datetime | None = None,
) -> PolicyRender:
    """Render all pieces of ``policy`` for ``namespace``, collecting every error.

    Pieces held back by an exception active at ``now`` (default: the current time) are left out,
    so the plan removes them like any piece the policy no longer wants.
    """
    objects: list[RenderedObject] = []
    errors: list[RenderError] = []
    held_back = exemptions.held_back(policy.spec, namespace.name, now or exemptions.now())
    for piece in pieces_of(policy):
        if piece in held_back:
            continue
        try:
            rendered = templates.render(piece, namespace, policy)
        except RenderError as exc:
            exc.policy_name = policy.name
            errors.append(exc)
            continue
        if rendered is not None:
            objects.append(rendered)
    return PolicyRender(policy, tuple(objects), tuple(errors))


__all__ = [
    "PolicyRender",
    "RenderError",
    "RenderedObject",
    "TemplateSet",
    "pieces_of",
    "render_policy",
]
