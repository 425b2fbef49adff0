"""From a template's output to the NetworkPolicy we apply. Pure.

The output must be exactly one ``networking.k8s.io/v1`` NetworkPolicy for the target namespace,
setting nothing but name, namespace, labels, annotations and spec; its spec is put in canonical
form and our labels, the policy's annotations and the controller ownerReference are added. YAML
aliases are refused (they can expand a tiny document exponentially), and parsed outputs are
remembered as JSON, since the built-in templates render the same text for many namespaces.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from nsbaseline import canonical, names, observed
from nsbaseline.model import BaselinePolicy

_ALLOWED_METADATA = frozenset({"name", "namespace", "labels", "annotations"})

try:  # libyaml is much faster; PyYAML wheels ship it.
    _FastLoader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - depends on the PyYAML build
    _FastLoader = yaml.SafeLoader


class _NoAliasLoader(yaml.SafeLoader):
    """Refuses YAML aliases, which can expand a tiny document exponentially."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("YAML aliases (*name) are not allowed in rendered output")
        return super().compose_node(parent, index)


@dataclass(frozen=True)
class RenderedObject:
    """One desired NetworkPolicy, with the BaselinePolicy and piece it belongs to.

    ``digest`` (the hash of the whole body, see :func:`nsbaseline.plan.desired_hash`) and
    ``spec_digest`` are filled in when rendering knew them cheaply; empty means "compute".
    """

    policy_name: str
    piece: str
    body: Mapping[str, Any]
    digest: str = ""
    spec_digest: str = ""

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def spec(self) -> Mapping[str, Any]:
        spec: Mapping[str, Any] = self.body["spec"]
        return spec


class InvalidOutput(ValueError):
    """A template's output that is not one valid NetworkPolicy; the message says why."""


#: Rendered text -> its documents as JSON. The built-in templates render the same text for every
#: namespace of a policy, and json.loads is far cheaper than YAML's Python-level constructor.
_PARSED: OrderedDict[str, str] = OrderedDict()
_PARSED_SIZE = 1024


def load_docs(text: str) -> list[Any]:
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


#: Stands for the namespace in a shape; never a namespace name (those are lowercase DNS labels).
NAMESPACE_PLACEHOLDER = "NS.PLACEHOLDER"


@dataclass(frozen=True)
class Shape:
    """A template's output for every namespace it renders the same text for.

    The built-in templates read nothing of the namespace but its annotations' parameters, so
    one validated body serves thousands of namespaces: only ``metadata.namespace`` differs, and
    the body's canonical fingerprint differs only there too — stamping a namespace in is a
    string replacement, not a render, a YAML parse and a JSON dump.
    """

    policy_name: str
    piece: str
    body: Mapping[str, Any]
    fingerprint: str
    spec_digest: str

    def stamp(self, namespace: str) -> RenderedObject:
        body = {**self.body, "metadata": {**self.body["metadata"], "namespace": namespace}}
        quoted = json.dumps(NAMESPACE_PLACEHOLDER)
        text = self.fingerprint.replace(quoted, json.dumps(namespace))
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return RenderedObject(self.policy_name, self.piece, body, digest, self.spec_digest)


def shape_of(piece: str, text: str, policy: BaselinePolicy) -> Shape | None:
    """The namespace-independent form of ``text``; ``None`` when it renders nothing.

    :class:`InvalidOutput` as :func:`to_object` would raise it; :class:`NamespaceBound` when the
    output names a namespace itself (then it is only valid for that one: render per namespace).
    """
    docs = _docs(text)
    if docs and isinstance(docs[0], dict) and "namespace" in (docs[0].get("metadata") or {}):
        raise NamespaceBound
    obj = to_object(piece, text, NAMESPACE_PLACEHOLDER, policy)
    if obj is None:
        return None
    return Shape(
        obj.policy_name,
        piece,
        obj.body,
        canonical.fingerprint(obj.body),
        observed.spec_digest(obj.body["spec"]),
    )


class NamespaceBound(Exception):
    """The output sets metadata.namespace: it cannot be shared between namespaces."""


def _docs(text: str) -> list[Any]:
    try:
        return load_docs(text)
    except yaml.YAMLError as exc:
        raise InvalidOutput(f"output is not valid YAML: {exc}") from None


def to_object(
    piece: str, text: str, namespace: str, policy: BaselinePolicy
) -> RenderedObject | None:
    """The object a template rendered as ``text`` for ``namespace``; ``None`` when it rendered
    nothing; :class:`InvalidOutput` when it is not exactly one valid NetworkPolicy."""
    docs = _docs(text)
    if not docs:
        return None
    if len(docs) > 1:
        raise InvalidOutput(f"output holds {len(docs)} documents, expected one")
    doc = docs[0]
    if not isinstance(doc, dict):
        raise InvalidOutput("output is not a YAML mapping")
    return RenderedObject(policy.name, piece, _validate(piece, doc, namespace, policy))


def _validate(
    piece: str, doc: dict[str, Any], namespace: str, policy: BaselinePolicy
) -> dict[str, Any]:
    if doc.get("apiVersion") != "networking.k8s.io/v1" or doc.get("kind") != "NetworkPolicy":
        raise InvalidOutput(
            "output must be a networking.k8s.io/v1 NetworkPolicy, got "
            f"{doc.get('apiVersion')}/{doc.get('kind')}"
        )
    extra = set(doc) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        raise InvalidOutput(f"unexpected top-level fields {sorted(extra)}")
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise InvalidOutput("metadata must be a mapping")
    extra = set(meta) - _ALLOWED_METADATA
    if extra:
        raise InvalidOutput(
            f"metadata may only set name, namespace, labels, annotations; got {sorted(extra)}"
        )
    expected_name = names.object_name(policy.name, piece)
    if meta.get("namespace") not in (None, namespace):
        raise InvalidOutput(f"output targets namespace {meta['namespace']!r}, not {namespace!r}")
    if meta.get("name") not in (None, expected_name):
        raise InvalidOutput(
            f"output is named {meta['name']!r}; generated objects are named {expected_name!r}"
        )
    raw_spec = doc.get("spec")
    if not isinstance(raw_spec, dict):
        raise InvalidOutput("spec must be a mapping")
    try:
        spec = canonical.spec(raw_spec)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise InvalidOutput(
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


__all__ = [
    "NAMESPACE_PLACEHOLDER",
    "InvalidOutput",
    "NamespaceBound",
    "RenderedObject",
    "Shape",
    "load_docs",
    "shape_of",
    "to_object",
]
