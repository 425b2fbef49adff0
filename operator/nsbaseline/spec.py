"""The BaselinePolicy spec as types: the one declaration of the API.

Every field states its description, default, bounds, list type and CEL rules here, in
:mod:`nsbaseline.spec_pieces` (the built-in pieces' settings) and in :mod:`nsbaseline.spec_blocks`
(label selectors, ports: Kubernetes' own types); import them all from this module. The CRD
(:mod:`nsbaseline.crd`, ``make crds``), the defaults offline rendering applies
(:meth:`BaselinePolicySpec.from_json`) and docs/reference.md (``make docs``) are generated from
these classes, and the code reads a policy through them (``policy.spec.dns.ports``), so a field
renamed here is a type error wherever it is used. Python names are the JSON names in snake_case.
"""

# Every field default below is made by api(), a dataclasses.field() with API metadata.
# ruff: noqa: RUF009

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from nsbaseline import convert, names, schema
from nsbaseline.schema import Bounds, Rule, api
from nsbaseline.spec_blocks import (
    VALID_LABEL_KEYS,
    LabelSelector,
    Port,
    dns_name,
    selector_field,
)
from nsbaseline.spec_pieces import (
    DefaultDeny,
    DnsPeer,
    EgressCIDR,
    IngressControllerPeer,
    MonitoringPeer,
    Peer,
)

#: Annotation keys GitOps tools track objects by; copying them onto our objects gets them pruned.
TRACKING_KEY_PREFIXES = (
    "argocd.argoproj.io/",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
    "app.kubernetes.io/instance",
    "kubectl.kubernetes.io/last-applied-configuration",
)
Mode = Literal["Enforce", "Audit"]


# ----- exceptions and extra templates ---------------------------------------------------------
def parse_time(text: str) -> datetime.datetime | None:
    """An RFC 3339 date-time (as the schema's ``format: date-time`` accepts), in UTC."""
    try:
        value = datetime.datetime.fromisoformat(text.strip().replace("z", "Z"))
    except (ValueError, AttributeError):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.astimezone(datetime.UTC)


@dataclass(frozen=True, kw_only=True)
class Exemption:
    """A time-boxed exception (``spec.exceptions[]``): pieces left out of one namespace until
    ``expiresAt``. What it means over time is in :mod:`nsbaseline.exemptions`."""

    namespace: str = api("The namespace the exception applies to.", bounds=dns_name())
    pieces: tuple[str, ...] = api(
        "Pieces (template names, e.g. allow-monitoring or default-deny) not rendered in that "
        "namespace while it lasts.",
        bounds=Bounds(min_items=1, max_items=16, list_type="set"),
        items=dns_name(),
    )
    reason: str = api(
        "Why the exception exists (ticket, owner); required.",
        bounds=Bounds(min_length=1, max_length=1024),
    )
    expires_at: str = api(
        "When the pieces come back (RFC 3339, e.g. 2030-01-31T18:00:00Z).",
        bounds=Bounds(format="date-time"),
    )

    API_RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.reason.trim() != ''",
            "reason must not be blank: say why the exception exists",
            ".reason",
        ),
    )

    @functools.cached_property
    def deadline(self) -> datetime.datetime | None:
        """``expiresAt`` in UTC; ``None`` if Python cannot read it (the exception is ignored)."""
        return parse_time(self.expires_at)

    def active(self, now: datetime.datetime) -> bool:
        """Active strictly before the deadline; at ``expiresAt`` the pieces are back."""
        return self.deadline is not None and now < self.deadline


@dataclass(frozen=True, kw_only=True)
class TemplateRef:
    """An extra template a policy renders (``spec.templates[]``)."""

    name: str = api(
        "Template name: the file <name>.yaml.j2 in the templates directory; also the piece name "
        "of what it renders.",
        bounds=dns_name(max_length=40),
    )
    values: Mapping[str, Any] | None = api("Values passed to the template as `values`.", None)

    API_RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!(self.name in [" + ", ".join(f"'{p}'" for p in names.BUILTIN_PIECES) + "])",
            "built-in pieces are always rendered; configure them with their own fields, or "
            "override their template in the templates directory",
            ".name",
        ),
    )


# ----- the spec -------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class BaselinePolicySpec:
    """Which namespaces get a baseline and what it contains."""

    namespace_selector: LabelSelector = selector_field(
        "Selects the namespaces that get this baseline.",
        LabelSelector(match_labels={names.OPT_IN_LABEL: "true"}),
    )
    excluded_namespaces: tuple[str, ...] = api(
        "Namespaces never touched, whatever their labels. Removing a namespace from the "
        "selection removes what was generated there.",
        ("kube-system", "kube-public", "kube-node-lease"),
        bounds=Bounds(max_items=256, list_type="set"),
        items=dns_name("A namespace name."),
    )
    mode: Mode = api(
        "Enforce writes the baseline; Audit writes nothing and reports in status what it would "
        "create, change or delete.",
        "Enforce",
    )
    default_deny: DefaultDeny = api(
        "The default-deny piece: selects every pod and allows nothing in the chosen directions, "
        "so only the allow pieces let traffic through.",
        DefaultDeny(),
    )
    dns: DnsPeer = api(
        "The allow-dns piece: allows egress from every pod to the cluster DNS (kube-dns/CoreDNS).",
        DnsPeer(),
    )
    monitoring: MonitoringPeer = api(
        "The allow-monitoring piece: allows Prometheus to scrape pods in the namespace.",
        MonitoringPeer(),
    )
    ingress_controller: IngressControllerPeer = api(
        "The allow-ingress-controller piece: allows ingress from the ingress controller's pods.",
        IngressControllerPeer(),
    )
    egress_cidrs: tuple[EgressCIDR, ...] | None = api(
        "The allow-egress-cidrs piece: external networks pods may reach.",
        None,
        bounds=Bounds(max_items=64, list_type="map", list_map_keys=("cidr",)),
        json_name="egressCIDRs",
    )
    annotations: Mapping[str, str] | None = api(
        "Annotations copied onto every generated NetworkPolicy to document intent (description, "
        "owner, compliance reference).",
        None,
        bounds=Bounds(
            max_properties=32,
            rules=(
                Rule(
                    VALID_LABEL_KEYS,
                    "keys must be valid annotation keys (an optional DNS-subdomain prefix and "
                    "'/', then a name of [A-Za-z0-9-_.])",
                ),
                Rule(
                    "self.all(k, "
                    + " && ".join(f"!k.startsWith('{p}')" for p in TRACKING_KEY_PREFIXES)
                    + ")",
                    "GitOps tracking annotations (Argo CD, Flux, kubectl last-applied) must not "
                    "be copied onto generated objects: the GitOps tool would prune them",
                ),
            ),
        ),
        values=Bounds(max_length=4096),
    )
    exceptions: tuple[Exemption, ...] | None = api(
        "Time-boxed exceptions: the listed pieces are removed from one namespace until "
        "expiresAt, then restored automatically. CRD validation has no clock, so an expiry "
        "already in the past is accepted but has no effect (status shows it as Expired).",
        None,
        bounds=Bounds(max_items=256, list_type="atomic"),
    )
    templates: tuple[TemplateRef, ...] | None = api(
        "Extra templates to render for this policy, from the operator's templates directory, "
        "each with its own values.",
        None,
        bounds=Bounds(max_items=16, list_type="map", list_map_keys=("name",)),
    )

    @classmethod
    def from_json(cls, data: Any) -> BaselinePolicySpec:
        """A spec as written, defaulted like the API server does; :class:`schema.SpecError`
        names the field when a value has the wrong type."""
        return convert.parse(cls, data, ("spec",))

    def to_json(self) -> dict[str, Any]:
        """The spec as the API server stores it (defaults filled in)."""
        return schema.dump(self)


def defaulted(data: Any) -> dict[str, Any]:
    """A spec written as JSON, as the API server stores it: defaults filled in, unknown fields
    dropped (for code that reads BaselinePolicies as plain data, like the admission rules)."""
    return BaselinePolicySpec.from_json(data).to_json()


__all__ = [
    "BaselinePolicySpec",
    "DefaultDeny",
    "DnsPeer",
    "EgressCIDR",
    "Exemption",
    "IngressControllerPeer",
    "LabelSelector",
    "MonitoringPeer",
    "Peer",
    "Port",
    "TemplateRef",
    "defaulted",
    "dns_name",
    "parse_time",
]
