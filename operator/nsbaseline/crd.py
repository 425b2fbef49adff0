"""The BaselinePolicy CustomResourceDefinition, as applied from ``crds/`` (``make crds``).

The spec's schema is generated from the typed model in :mod:`nsbaseline.spec` (descriptions,
defaults, bounds, CEL rules); the status schema, the printer columns and the object-level rule are
data here. A unit test fails when ``crds/`` and this module disagree.
"""

from __future__ import annotations

from nsbaseline import names
from nsbaseline.schema import Rule, Schema, openapi
from nsbaseline.spec import BaselinePolicySpec


def spec_schema() -> Schema:
    """The schema of ``spec``: generated from :class:`~nsbaseline.spec.BaselinePolicySpec`."""
    generated = openapi(BaselinePolicySpec)
    return {
        "type": "object",
        "description": "Which namespaces get a baseline and what it contains.",
        "default": {},
        **{k: v for k, v in generated.items() if k != "type"},
    }


def _condition_schema() -> Schema:
    return {
        "type": "object",
        "required": ["type", "status", "lastTransitionTime", "reason", "message"],
        "properties": {
            "type": {"type": "string", "description": "Ready, Degraded or Stalled."},
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
        # A new policy is served with observedGeneration 0 (below its generation), so health
        # checks (kstatus, Flux, kubectl wait) read it as in progress until the operator reports.
        "default": {"observedGeneration": 0},
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
                "description": "Ready: every selected namespace is compliant (in Audit mode: the "
                "audit is current). Degraded: a template or apply error, or a conflict. Stalled: "
                "the same as Degraded, for health checkers that read kstatus conditions.",
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
                                Rule(
                                    "self.metadata.name.size() <= 63",
                                    "metadata.name must be at most 63 characters: it becomes "
                                    "part of generated NetworkPolicy names and label values",
                                ).schema()
                            ],
                        }
                    },
                }
            ],
        },
    }
