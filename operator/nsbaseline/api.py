"""The BaselinePolicy API: the single source of the CRD schema, its defaults and its docs.

``crds/`` holds the YAML generated from :func:`crd` (``make crds``); a unit test fails when the
file and this module disagree. Defaults for offline rendering are read from the same schema
(:mod:`nsbaseline.schema`), so ``nsbaseline render`` and the API server cannot diverge.
"""

from __future__ import annotations

from typing import Any

from nsbaseline import names

Schema = dict[str, Any]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PORT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# CEL regexes (RE2). Label keys: optional DNS-subdomain prefix, then a name part.
_LABEL_KEY_RE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE_RE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
TRACKING_KEY_PREFIXES = (
    "argocd.argoproj.io/",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
    "app.kubernetes.io/instance",
    "kubectl.kubernetes.io/last-applied-configuration",
)


def _rule(rule: str, message: str, field_path: str | None = None) -> Schema:
    out: Schema = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def dns_label(description: str, default: str | None = None) -> Schema:
    schema: Schema = {
        "type": "string",
        "description": description,
        "minLength": 1,
        "maxLength": 63,
        "pattern": DNS_LABEL,
    }
    if default is not None:
        schema["default"] = default
    return schema


def label_map(description: str, max_items: int = 32) -> Schema:
    return {
        "type": "object",
        "description": description,
        "maxProperties": max_items,
        "additionalProperties": {"type": "string", "maxLength": 63},
        "x-kubernetes-validations": [
            _rule(
                f"self.all(k, k.size() <= 317 && k.matches('{_LABEL_KEY_RE}'))",
                "keys must be valid label keys: an optional DNS-subdomain prefix and '/', then "
                "at most 63 characters of [A-Za-z0-9-_.] starting and ending alphanumeric",
            ),
            _rule(
                f"self.all(k, self[k].matches('{_LABEL_VALUE_RE}'))",
                "values must be valid label values: at most 63 characters of [A-Za-z0-9-_.] "
                "starting and ending alphanumeric, or empty",
            ),
        ],
    }


def label_selector(description: str, default: Schema | None = None) -> Schema:
    """A ``metav1.LabelSelector`` with the API server's own rules spelt out as CEL."""
    schema: Schema = {
        "type": "object",
        "description": description + " Terms are ANDed; an empty selector ({}) matches everything.",
        "properties": {
            "matchLabels": label_map("Labels that must all be present with exactly these values."),
            "matchExpressions": {
                "type": "array",
                "description": "Set-based requirements; all must hold.",
                "maxItems": 32,
                "x-kubernetes-list-type": "atomic",
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {
                            "type": "string",
                            "description": "The label key the requirement applies to.",
                            "minLength": 1,
                            "maxLength": 317,
                        },
                        "operator": {
                            "type": "string",
                            "description": "How the key relates to the values.",
                            "enum": ["In", "NotIn", "Exists", "DoesNotExist"],
                        },
                        "values": {
                            "type": "array",
                            "description": "Values for In and NotIn; must be empty otherwise.",
                            "maxItems": 64,
                            "x-kubernetes-list-type": "set",
                            "items": {"type": "string", "maxLength": 63},
                        },
                    },
                    "x-kubernetes-validations": [
                        _rule(
                            f"self.key.matches('{_LABEL_KEY_RE}')",
                            "key must be a valid label key",
                            ".key",
                        ),
                        _rule(
                            "self.operator in ['In', 'NotIn'] ? "
                            "(has(self.values) && size(self.values) > 0) : "
                            "(!has(self.values) || size(self.values) == 0)",
                            "values must be non-empty for operators In and NotIn, and empty for "
                            "Exists and DoesNotExist",
                        ),
                    ],
                },
            },
        },
    }
    if default is not None:
        schema["default"] = default
    return schema


def ports(description: str, default: list[Schema] | None = None) -> Schema:
    schema: Schema = {
        "type": "array",
        "description": description,
        "maxItems": 16,
        "x-kubernetes-list-type": "atomic",
        "items": {
            "type": "object",
            "required": ["port"],
            "properties": {
                "port": {
                    "x-kubernetes-int-or-string": True,
                    "description": "A port number (1-65535) or a named container port (at most "
                    "15 lowercase letters, digits and '-').",
                    # JSON-schema keywords apply per type: bounds to numbers, length and
                    # pattern to names.
                    "anyOf": [{"type": "integer"}, {"type": "string"}],
                    "minimum": 1,
                    "maximum": 65535,
                    "maxLength": 15,
                    "pattern": PORT_NAME,
                },
                "endPort": {
                    "type": "integer",
                    "description": "If set, the range port..endPort is allowed (numeric port "
                    "only).",
                    "minimum": 1,
                    "maximum": 65535,
                },
                "protocol": {
                    "type": "string",
                    "description": "The IP protocol.",
                    "enum": ["TCP", "UDP", "SCTP"],
                    "default": "TCP",
                },
            },
            "x-kubernetes-validations": [
                _rule(
                    "!has(self.endPort) || (type(self.port) == int && self.endPort >= self.port)",
                    "endPort needs a numeric port and must not be below it",
                    ".endPort",
                ),
                # IANA service names, as the API server checks them on a NetworkPolicy: a
                # letter somewhere (else "8080" would pass for a name) and no "--".
                _rule(
                    "type(self.port) == int || "
                    "(string(self.port).matches('[a-z]') && !string(self.port).contains('--'))",
                    "a named port must contain at least one letter and no '--' (an IANA "
                    "service name such as 'metrics'); write numbers without quotes",
                    ".port",
                ),
            ],
        },
        "x-kubernetes-validations": [
            _rule(
                "self.all(p, self.filter(q, string(q.port) == string(p.port) && "
                "q.protocol == p.protocol).size() == 1)",
                "each port and protocol pair may appear only once",
            )
        ],
    }
    if default is not None:
        schema["default"] = default
    return schema


def cidr(description: str) -> Schema:
    return {
        "type": "string",
        "description": description,
        "maxLength": 43,
        "x-kubernetes-validations": [
            _rule(
                "isCIDR(self) && cidr(self) == cidr(self).masked()",
                "must be a CIDR in canonical form with the host bits zero, "
                "e.g. 10.0.0.0/8 or 2001:db8::/32",
            )
        ],
    }


def peer_block(piece: str, enabled: bool, namespace: str, selector: Schema, what: str) -> Schema:
    return {
        "type": "object",
        "description": f"The {piece} piece: {what}",
        "default": {},
        "properties": {
            "enabled": {
                "type": "boolean",
                "description": f"Render the {piece} piece.",
                "default": enabled,
            },
            "namespace": dns_label(
                "Namespace of the peer pods, matched by its immutable "
                f"{names.NAMESPACE_NAME_LABEL} label.",
                namespace,
            ),
            "podSelector": label_selector("Selects the peer pods in that namespace.", selector),
        },
    }


def spec_schema() -> Schema:
    dns = peer_block(
        "allow-dns",
        True,
        "kube-system",
        {"matchLabels": {"k8s-app": "kube-dns"}},
        "allows egress from every pod to the cluster DNS (kube-dns/CoreDNS).",
    )
    dns["properties"]["ports"] = ports(
        "DNS ports.", [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    )
    dns["properties"]["nodeLocalDNS"] = {
        "type": "string",
        "description": "Address of a node-local DNS cache (e.g. 169.254.20.10); when set, egress "
        "to it on the DNS ports is allowed too.",
        "maxLength": 39,
        "x-kubernetes-validations": [
            _rule("isIP(self)", "must be an IPv4 or IPv6 address, e.g. 169.254.20.10")
        ],
    }
    monitoring = peer_block(
        "allow-monitoring",
        False,
        "monitoring",
        {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        "allows Prometheus to scrape pods in the namespace.",
    )
    monitoring["properties"]["ports"] = ports(
        "Ports Prometheus may scrape; empty means all ports. The namespace annotation "
        f"{names.ANNOTATION_PREFIX}monitoring-ports overrides it.",
        [],
    )
    ingress = peer_block(
        "allow-ingress-controller",
        False,
        "ingress-nginx",
        {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
        "allows ingress from the ingress controller's pods.",
    )
    ingress["properties"]["ports"] = ports(
        "Ports the ingress controller may reach; empty means all ports. The namespace "
        f"annotation {names.ANNOTATION_PREFIX}ingress-ports overrides it.",
        [],
    )
    return {
        "type": "object",
        "description": "Which namespaces get a baseline and what it contains.",
        "default": {},
        "properties": {
            "namespaceSelector": label_selector(
                "Selects the namespaces that get this baseline.",
                {"matchLabels": {names.OPT_IN_LABEL: "true"}},
            ),
            "excludedNamespaces": {
                "type": "array",
                "description": "Namespaces never touched, whatever their labels. Removing a "
                "namespace from the selection removes what was generated there.",
                "default": ["kube-system", "kube-public", "kube-node-lease"],
                "maxItems": 256,
                "x-kubernetes-list-type": "set",
                "items": dns_label("A namespace name."),
            },
            "mode": {
                "type": "string",
                "description": "Enforce writes the baseline; Audit writes nothing and reports "
                "in status what it would create, change or delete.",
                "enum": ["Enforce", "Audit"],
                "default": "Enforce",
            },
            "defaultDeny": {
                "type": "object",
                "description": "The default-deny piece: selects every pod and allows nothing "
                "in the chosen directions, so only the allow pieces let traffic through.",
                "default": {},
                "properties": {
                    "ingress": {
                        "type": "boolean",
                        "description": "Deny all ingress not allowed by another policy.",
                        "default": True,
                    },
                    "egress": {
                        "type": "boolean",
                        "description": "Deny all egress not allowed by another policy (keep dns "
                        "enabled, or name resolution breaks).",
                        "default": True,
                    },
                },
            },
            "dns": dns,
            "monitoring": monitoring,
            "ingressController": ingress,
            "egressCIDRs": {
                "type": "array",
                "description": "The allow-egress-cidrs piece: external networks pods may reach.",
                "maxItems": 64,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["cidr"],
                "items": {
                    "type": "object",
                    "required": ["cidr"],
                    "properties": {
                        "cidr": cidr("The network, e.g. 203.0.113.0/24."),
                        "except": {
                            "type": "array",
                            "description": "Sub-networks of cidr that stay denied.",
                            "maxItems": 32,
                            "x-kubernetes-list-type": "set",
                            "items": cidr("A sub-network of cidr."),
                        },
                        "ports": ports("Ports allowed; empty means all ports."),
                    },
                    "x-kubernetes-validations": [
                        _rule(
                            "!has(self.except) || !isCIDR(self.cidr) || self.except.all(e, "
                            "isCIDR(e) && cidr(self.cidr).containsCIDR(e) && "
                            "cidr(e).prefixLength() > cidr(self.cidr).prefixLength())",
                            "every except entry must be a strictly smaller network inside cidr",
                            ".except",
                        )
                    ],
                },
            },
            "annotations": {
                "type": "object",
                "description": "Annotations copied onto every generated NetworkPolicy to "
                "document intent (description, owner, compliance reference).",
                "maxProperties": 32,
                "additionalProperties": {"type": "string", "maxLength": 4096},
                "x-kubernetes-validations": [
                    _rule(
                        f"self.all(k, k.size() <= 317 && k.matches('{_LABEL_KEY_RE}'))",
                        "keys must be valid annotation keys (an optional DNS-subdomain prefix "
                        "and '/', then a name of [A-Za-z0-9-_.])",
                    ),
                    _rule(
                        "self.all(k, "
                        + " && ".join(f"!k.startsWith('{p}')" for p in TRACKING_KEY_PREFIXES)
                        + ")",
                        "GitOps tracking annotations (Argo CD, Flux, kubectl last-applied) must "
                        "not be copied onto generated objects: the GitOps tool would prune them",
                    ),
                ],
            },
            "exceptions": {
                "type": "array",
                "description": "Time-boxed exceptions: the listed pieces are removed from one "
                "namespace until expiresAt, then restored automatically. CRD validation has no "
                "clock, so an expiry already in the past is accepted but has no effect (status "
                "shows it as Expired).",
                "maxItems": 256,
                "x-kubernetes-list-type": "atomic",
                "items": {
                    "type": "object",
                    "required": ["namespace", "pieces", "reason", "expiresAt"],
                    "properties": {
                        "namespace": dns_label("The namespace the exception applies to."),
                        "pieces": {
                            "type": "array",
                            "description": "Pieces (template names, e.g. allow-monitoring or "
                            "default-deny) not rendered in that namespace while it lasts.",
                            "minItems": 1,
                            "maxItems": 16,
                            "x-kubernetes-list-type": "set",
                            "items": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 63,
                                "pattern": DNS_LABEL,
                            },
                        },
                        "reason": {
                            "type": "string",
                            "description": "Why the exception exists (ticket, owner); required.",
                            "minLength": 1,
                            "maxLength": 1024,
                        },
                        "expiresAt": {
                            "type": "string",
                            "format": "date-time",
                            "description": "When the pieces come back (RFC 3339, e.g. "
                            "2030-01-31T18:00:00Z).",
                        },
                    },
                    "x-kubernetes-validations": [
                        _rule(
                            "self.reason.trim() != ''",
                            "reason must not be blank: say why the exception exists",
                            ".reason",
                        )
                    ],
                },
            },
            "templates": {
                "type": "array",
                "description": "Extra templates to render for this policy, from the operator's "
                "templates directory, each with its own values.",
                "maxItems": 16,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {
                            "type": "string",
                            "description": "Template name: the file <name>.yaml.j2 in the "
                            "templates directory; also the piece name of what it renders.",
                            "minLength": 1,
                            "maxLength": 40,
                            "pattern": DNS_LABEL,
                        },
                        "values": {
                            "type": "object",
                            "description": "Values passed to the template as `values`.",
                            "x-kubernetes-preserve-unknown-fields": True,
                        },
                    },
                    "x-kubernetes-validations": [
                        _rule(
                            "!(self.name in "
                            + "["
                            + ", ".join(f"'{p}'" for p in names.BUILTIN_PIECES)
                            + "])",
                            "built-in pieces are always rendered; configure them with their own "
                            "fields, or override their template in the templates directory",
                            ".name",
                        )
                    ],
                },
            },
        },
    }


def _condition_schema() -> Schema:
    return {
        "type": "object",
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {
            "type": {"type": "string", "description": "Ready or Degraded."},
            "status": {
                "type": "string",
                "description": "Whether the condition holds: True, False or Unknown.",
                "enum": ["True", "False", "Unknown"],
            },
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The spec generation the condition was computed from.",
            },
            "lastTransitionTime": {
                "type": "string",
                "format": "date-time",
                "description": "When the status last changed between True and False.",
            },
            "reason": {"type": "string", "description": "CamelCase machine-readable cause."},
            "message": {"type": "string", "description": "Human-readable details."},
        },
    }


def _entries(description: str, fields: dict[str, str]) -> Schema:
    return {
        "type": "array",
        "description": description + " At most 50 entries are kept.",
        "x-kubernetes-list-type": "atomic",
        "items": {
            "type": "object",
            "properties": {k: {"type": "string", "description": v} for k, v in fields.items()},
        },
    }


def status_schema() -> Schema:
    return {
        "type": "object",
        "description": "What the operator observed and did; written only when it changes.",
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "description": "The spec generation this status describes.",
            },
            "matchedNamespaces": {
                "type": "integer",
                "description": "Namespaces selected by this policy.",
            },
            "compliantNamespaces": {
                "type": "integer",
                "description": "Selected namespaces whose baseline is fully in place.",
            },
            "conflictingNamespaces": {
                "type": "integer",
                "description": "Namespaces where a NetworkPolicy not managed by nsbaseline "
                "holds a name this policy needs.",
            },
            "failedNamespaces": {
                "type": "integer",
                "description": "Namespaces where rendering or applying failed.",
            },
            "conditions": {
                "type": "array",
                "description": "Ready: every selected namespace is compliant. Degraded: "
                "a template or apply error, or a conflict.",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": _condition_schema(),
            },
            "conflicts": _entries(
                "Foreign NetworkPolicies that hold a name this policy needs.",
                {"namespace": "Namespace.", "name": "NetworkPolicy name."},
            ),
            "errors": _entries(
                "Render or apply errors.",
                {"namespace": "Namespace.", "template": "Template.", "message": "What failed."},
            ),
            "exceptions": {
                "type": "array",
                "description": "The policy's exceptions: Active ones (pieces held back until "
                "expiresAt) and Expired ones (no effect any more).",
                "x-kubernetes-list-type": "atomic",
                "items": {
                    "type": "object",
                    "properties": {
                        "namespace": {"type": "string", "description": "Namespace."},
                        "pieces": {
                            "type": "array",
                            "description": "Pieces held back.",
                            "items": {"type": "string"},
                        },
                        "reason": {"type": "string", "description": "Why."},
                        "expiresAt": {"type": "string", "description": "Deadline."},
                        "state": {"type": "string", "description": "Active or Expired."},
                    },
                },
            },
            "pendingChanges": _entries(
                "In Audit mode: what Enforce would do.",
                {
                    "namespace": "Namespace.",
                    "name": "NetworkPolicy name.",
                    "action": "Create, Update or Delete.",
                },
            ),
        },
    }


def crd() -> Schema:
    """The CustomResourceDefinition of BaselinePolicy, as applied from ``crds/``."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{names.PLURAL}.{names.GROUP}",
            "labels": {"app.kubernetes.io/name": "nsbaseline"},
        },
        "spec": {
            "group": names.GROUP,
            "scope": "Cluster",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": "baselinepolicy",
                "shortNames": ["bp"],
                "categories": ["nsbaseline"],
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                        {
                            "name": "Matched",
                            "type": "integer",
                            "jsonPath": ".status.matchedNamespaces",
                        },
                        {
                            "name": "Compliant",
                            "type": "integer",
                            "jsonPath": ".status.compliantNamespaces",
                        },
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {
                            "name": "Reason",
                            "type": "string",
                            "priority": 1,
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "BaselinePolicy gives every selected namespace a "
                            "NetworkPolicy baseline (default-deny plus allowances for DNS, "
                            "monitoring, the ingress controller and external networks) and keeps "
                            "it in place.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "The versioned schema of this object: "
                                    f"{names.API_VERSION}.",
                                },
                                "kind": {
                                    "type": "string",
                                    "description": f"The object's type: {names.KIND}.",
                                },
                                # The API server refuses anything but the type here
                                # ("metadata is implicitly specified"), a description included.
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            "x-kubernetes-validations": [
                                _rule(
                                    "self.metadata.name.size() <= 63",
                                    "metadata.name must be at most 63 characters: it becomes "
                                    "part of generated NetworkPolicy names and label values",
                                )
                            ],
                        }
                    },
                }
            ],
        },
    }
