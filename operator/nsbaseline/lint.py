"""``nsbaseline lint``: the classic NetworkPolicy mistakes, found before they bite. Pure.

Checks (code, severity):

* ``no-match`` (warning): a selector that matches no namespace or pod that is known — only run
  when namespaces or pods were given (files or the cluster), since a label mismatch is invisible
  otherwise;
* ``dead-peer`` (warning): a peer made redundant by a broader peer in the same rule (peers are
  OR'd, so ``podSelector: {}`` beside ``podSelector: {app: x}`` turns the latter into dead code);
* ``egress-without-dns`` (error): pods isolated for egress with no allowance to the cluster DNS;
* ``custom-namespace-label`` (warning): a namespaceSelector on a label other than the immutable
  ``kubernetes.io/metadata.name``, which anybody who may label namespaces can forge;
* ``ipblock-cluster-range`` (warning): an ipBlock overlapping the pod or service range (pod
  traffic is meant to be selected by labels; what an ipBlock does to it is implementation-defined
  and service IPs are rewritten before policy applies);
* ``exception-without-dns`` (warning) and ``exception-expired`` (warning): on BaselinePolicy
  exceptions that drop DNS while default-deny egress stays, or that no longer have any effect.
* ``invalid-policy`` (error): a BaselinePolicy spec with a value of the wrong type (the API
  server would refuse it).

Findings (:mod:`nsbaseline.lint_findings`) carry a file and line:
:func:`~nsbaseline.located.load_with_lines` keeps the YAML marks of every key. What is known about
the cluster besides the policies comes in a :class:`~nsbaseline.lint_context.Context`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from nsbaseline import names, widening
from nsbaseline.evaluator import REPRESENTATIVE, Endpoint, NetworkPolicy, Pod, World
from nsbaseline.explain import dns_pod
from nsbaseline.lint_context import Context, kind_of
from nsbaseline.lint_findings import Finding, Severity
from nsbaseline.located import Located, Path, load_with_lines, rendered
from nsbaseline.peers import is_all, networks, peer_covers
from nsbaseline.schema import SpecError, format_path
from nsbaseline.selection import selector_matches
from nsbaseline.spec import BaselinePolicySpec


class Linter:
    def __init__(self, docs: Sequence[Located], context: Context) -> None:
        self.docs = docs
        self.context = context
        self.findings: list[Finding] = []

    def add(self, doc: Located, severity: Severity, code: str, message: str, path: Path) -> None:
        if doc.origin:
            message = f"{doc.origin}: {message}"
        self.findings.append(
            Finding(severity, code, message, doc.file, doc.line(path), format_path(path))
        )

    def run(self) -> list[Finding]:
        policies = [d for d in self.docs if kind_of(d.data) == "NetworkPolicy"]
        for doc in policies:
            self._policy(doc)
            # What the guardrail admission policy refuses, in its words (nsbaseline.widening).
            for w in widening.for_documents(doc.data, [d.data for d in self.docs]):
                self.add(doc, "error", w.code, w.text, w.path)
        self._dns(policies)
        for doc in self.docs:
            if kind_of(doc.data) == names.KIND:
                self._exemptions(doc)
        return sorted(self.findings, key=lambda f: (f.file, f.line or 0, f.code))

    # -- per policy
    def _policy(self, doc: Located) -> None:
        policy = NetworkPolicy.from_body(doc.data)
        spec = policy.spec
        if self.context.pods and not is_all(spec.get("podSelector")):
            in_ns = [p for p in self.context.pods if p.namespace == policy.namespace]
            if not any(selector_matches(spec["podSelector"], p.labels) for p in in_ns):
                self.add(
                    doc,
                    "warning",
                    "no-match",
                    f"spec.podSelector selects no pod in namespace {policy.namespace}: "
                    "the policy has no effect (label mismatch?)",
                    ("spec", "podSelector"),
                )
        for direction, peers_key in (("ingress", "from"), ("egress", "to")):
            for r, rule in enumerate(spec.get(direction) or []):
                peers = rule.get(peers_key) or []
                for p, peer in enumerate(peers):
                    path: Path = ("spec", direction, r, peers_key, p)
                    self._peer(doc, policy, peer, path)
                    for q, other in enumerate(peers):
                        if q == p or not peer_covers(other, peer):
                            continue
                        if peer_covers(peer, other) and q > p:
                            continue  # duplicates: report only the later one
                        self.add(
                            doc,
                            "warning",
                            "dead-peer",
                            f"{peers_key}[{p}] is redundant: {peers_key}[{q}] in the same rule "
                            "already matches everything it matches (peers are OR'd)",
                            path,
                        )
                        break

    def _peer(
        self, doc: Located, policy: NetworkPolicy, peer: Mapping[str, Any], path: Path
    ) -> None:
        ns_sel = peer.get("namespaceSelector")
        if ns_sel is not None:
            for i, key in enumerate(_selector_keys(ns_sel)):
                if key != names.NAMESPACE_NAME_LABEL:
                    self.add(
                        doc,
                        "warning",
                        "custom-namespace-label",
                        f"namespaceSelector uses label {key!r}: anyone allowed to label "
                        f"namespaces can forge it; select by {names.NAMESPACE_NAME_LABEL}",
                        (*path, "namespaceSelector", *_selector_key_path(ns_sel, key, i)),
                    )
        if "ipBlock" in peer:
            self._ip_block(doc, peer["ipBlock"], (*path, "ipBlock"))
            return
        namespaces = self.context.namespaces
        if ns_sel is not None and namespaces and not is_all(ns_sel):
            matched = [n for n in namespaces if selector_matches(ns_sel, n.effective_labels)]
            if not matched:
                self.add(
                    doc,
                    "warning",
                    "no-match",
                    "namespaceSelector matches no existing namespace (label mismatch?)",
                    (*path, "namespaceSelector"),
                )
                return
        pod_sel = peer.get("podSelector")
        if self.context.pods and pod_sel is not None and not is_all(pod_sel):
            if ns_sel is None:
                scope = {policy.namespace}
            else:
                scope = {
                    n.name for n in namespaces if selector_matches(ns_sel, n.effective_labels)
                } or {p.namespace for p in self.context.pods}
            if not any(
                p.namespace in scope and selector_matches(pod_sel, p.labels)
                for p in self.context.pods
            ):
                where = policy.namespace if ns_sel is None else "the selected namespaces"
                self.add(
                    doc,
                    "warning",
                    "no-match",
                    f"podSelector matches no pod in {where} (label mismatch?)",
                    (*path, "podSelector"),
                )

    def _ip_block(self, doc: Located, block: Mapping[str, Any], path: Path) -> None:
        nets = networks(block)
        if nets is None:
            self.add(doc, "error", "invalid-ipblock", "ipBlock.cidr is not a network", path)
            return
        net, excepts = nets
        for what, ranges in (
            ("pod", self.context.pod_cidrs),
            ("service", self.context.service_cidrs),
        ):
            for text in ranges:
                cluster = ipaddress.ip_network(text, strict=False)
                if cluster.version != net.version or not net.overlaps(cluster):
                    continue
                if any(cluster.subnet_of(e) for e in excepts if e.version == cluster.version):
                    continue
                self.add(
                    doc,
                    "warning",
                    "ipblock-cluster-range",
                    f"ipBlock {net} covers the {what} range {cluster}: select pods by labels "
                    f"and add {cluster} to except",
                    (*path, "cidr"),
                )

    # -- per namespace
    def _dns(self, policies: Sequence[Located]) -> None:
        by_ns: dict[str, list[tuple[Located, NetworkPolicy]]] = {}
        for doc in policies:
            policy = NetworkPolicy.from_body(doc.data)
            by_ns.setdefault(policy.namespace, []).append((doc, policy))
        for ns, entries in sorted(by_ns.items()):
            pods = [p for p in self.context.pods if p.namespace == ns] or [Pod(ns, REPRESENTATIVE)]
            world = World(self.context.namespaces, [*pods], [p for _, p in entries])
            dns = Endpoint(pod=dns_pod(self.context.pods))
            broken = []
            first: tuple[Located, NetworkPolicy] | None = None
            for pod in pods:
                verdict = world.check(Endpoint(pod=pod), dns, "UDP", 53)
                if verdict.egress.isolated and not verdict.allowed:
                    broken.append(pod.ref)
                    first = first or next(
                        e for e in entries if e[1].ref == verdict.egress.isolated_by[0]
                    )
            if first is None:
                continue
            doc, policy = first
            types = policy.spec.get("policyTypes") or []
            path: Path = (
                ("spec", "policyTypes", types.index("Egress")) if "Egress" in types else ("spec",)
            )
            who = "every pod" if pods[0].name == REPRESENTATIVE else ", ".join(broken)
            self.add(
                doc,
                "error",
                "egress-without-dns",
                f"egress is isolated for {who} in namespace {ns} but nothing allows DNS "
                f"(UDP 53 to {dns}): name resolution breaks",
                path,
            )

    # -- BaselinePolicy exceptions
    def _exemptions(self, doc: Located) -> None:
        try:
            spec = BaselinePolicySpec.from_json(doc.data.get("spec") or {})
        except SpecError as exc:
            self.add(doc, "error", "invalid-policy", exc.reason, exc.path)
            return
        now = self.context.now
        for i, entry in enumerate(spec.exceptions or ()):
            path: Path = ("spec", "exceptions", i)
            if now is not None and entry.deadline is not None and not entry.active(now):
                self.add(
                    doc,
                    "warning",
                    "exception-expired",
                    f"exception for namespace {entry.namespace} expired at "
                    f"{entry.expires_at}: it has no effect; remove it",
                    (*path, "expiresAt"),
                )
            pieces = set(entry.pieces)
            if (
                spec.default_deny.egress
                and "allow-dns" in pieces
                and names.DEFAULT_DENY not in pieces
            ):
                self.add(
                    doc,
                    "warning",
                    "exception-without-dns",
                    f"exception drops allow-dns in namespace {entry.namespace} while "
                    "default-deny keeps egress isolated: name resolution breaks there",
                    (*path, "pieces"),
                )


def _selector_keys(selector: Mapping[str, Any]) -> list[str]:
    keys = [str(k) for k in selector.get("matchLabels") or {}]
    keys += [str(e.get("key")) for e in selector.get("matchExpressions") or []]
    return keys


def _selector_key_path(selector: Mapping[str, Any], key: str, index: int) -> Path:
    labels = selector.get("matchLabels") or {}
    if key in labels:
        return ("matchLabels", key)
    return ("matchExpressions", index - len(labels))


def lint(docs: Sequence[Located], context: Context | None = None) -> list[Finding]:
    """Lint the NetworkPolicies (and BaselinePolicy exceptions) among ``docs``."""
    return Linter(docs, context or Context()).run()


__all__ = [
    "Located",
    "lint",
    "load_with_lines",
    "rendered",
]
