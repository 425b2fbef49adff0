"""The guardrail's codes and message templates: one table for lint and admission. Pure.

Kept apart from :mod:`nsbaseline.widening` (the rules that find widenings) because this table is
the contract between the two places that refuse a widening: ``nsbaseline lint`` formats these
templates, and ``hack/gen_admission.py`` writes the guardrail admission policy's CEL messages
from the same templates, in the same order. A new rule starts here.
"""

from __future__ import annotations

from nsbaseline import names

INGRESS_FROM_ANYWHERE = "ingress-from-anywhere"
INGRESS_FROM_ALL_NAMESPACES = "ingress-from-all-namespaces"
MONITORING_PORTS = "monitoring-ports"
INGRESS_CONTROLLER_PORTS = "ingress-controller-ports"
EGRESS_TO_ANYWHERE = "egress-to-anywhere"
EGRESS_TO_ALL_NAMESPACES = "egress-to-all-namespaces"
EGRESS_IPBLOCK_OUTSIDE_POLICY = "egress-ipblock-outside-policy"
EGRESS_IPBLOCK_PORTS = "egress-ipblock-ports"

#: The message templates, in evaluation order (the admission policy's validations follow this
#: order). Placeholders: {policy} BaselinePolicy name, {namespace} the NetworkPolicy's namespace,
#: {cidr} an ipBlock, {peer} the peer namespace's role and name, {ports} the ports a rule opens,
#: {allowed} what the BaselinePolicy allows.
MESSAGES: tuple[tuple[str, str], ...] = (
    (
        INGRESS_FROM_ANYWHERE,
        "allows ingress from every source, which BaselinePolicy {policy} denies in namespace "
        "{namespace}; list the allowed sources under from",
    ),
    (
        INGRESS_FROM_ANYWHERE,
        "allows ingress from every address ({cidr}), which BaselinePolicy {policy} denies in "
        "namespace {namespace}; allow specific networks or pods instead",
    ),
    (
        INGRESS_FROM_ALL_NAMESPACES,
        "allows ingress from every namespace, which BaselinePolicy {policy} denies in namespace "
        "{namespace}; select namespaces by kubernetes.io/metadata.name",
    ),
    (
        MONITORING_PORTS,
        "allows the monitoring namespace {peer} on {ports}, beyond what BaselinePolicy {policy} "
        "allows it ({allowed})",
    ),
    (
        INGRESS_CONTROLLER_PORTS,
        "allows the ingress controller namespace {peer} on {ports}, beyond what BaselinePolicy "
        "{policy} allows it ({allowed})",
    ),
    (
        EGRESS_TO_ANYWHERE,
        "allows egress to every destination, which BaselinePolicy {policy} denies in namespace "
        "{namespace}; list the allowed destinations under to",
    ),
    (
        EGRESS_TO_ALL_NAMESPACES,
        "allows egress to every namespace, which BaselinePolicy {policy} denies in namespace "
        "{namespace}; select namespaces by kubernetes.io/metadata.name",
    ),
    (
        EGRESS_IPBLOCK_OUTSIDE_POLICY,
        "allows egress to {cidr}, outside the networks BaselinePolicy {policy} allows ({allowed})",
    ),
    (
        EGRESS_IPBLOCK_PORTS,
        "allows egress to {cidr} on {ports}, beyond the ports BaselinePolicy {policy} allows there",
    ),
)
CODES = tuple(dict.fromkeys(code for code, _ in MESSAGES))
MONITORING_PORTS_ANNOTATION = names.ANNOTATION_PREFIX + "monitoring-ports"
INGRESS_PORTS_ANNOTATION = names.ANNOTATION_PREFIX + "ingress-ports"


__all__ = [
    "CODES",
    "EGRESS_IPBLOCK_OUTSIDE_POLICY",
    "EGRESS_IPBLOCK_PORTS",
    "EGRESS_TO_ALL_NAMESPACES",
    "EGRESS_TO_ANYWHERE",
    "INGRESS_CONTROLLER_PORTS",
    "INGRESS_FROM_ALL_NAMESPACES",
    "INGRESS_FROM_ANYWHERE",
    "INGRESS_PORTS_ANNOTATION",
    "MESSAGES",
    "MONITORING_PORTS",
    "MONITORING_PORTS_ANNOTATION",
]
