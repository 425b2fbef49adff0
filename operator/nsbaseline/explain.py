"""``nsbaseline explain``: what NetworkPolicies actually permit, as a matrix or a single answer.

Builds an evaluator :class:`~nsbaseline.evaluator.World` from manifests or from the cluster and
renders it. Namespaces without known pods get one representative pod (``ns/*``, no labels), so a
fresh namespace still shows what its baseline leaves open. Two fixed endpoints complete the
picture: the cluster DNS (``dns``: the kube-dns pods, or a stand-in labelled ``k8s-app=kube-dns``
in ``kube-system``) and an address outside the cluster (``external``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nsbaseline import names
from nsbaseline.evaluator import (
    REPRESENTATIVE,
    ContainerPort,
    Endpoint,
    NetworkPolicy,
    Pod,
    World,
)
from nsbaseline.model import Namespace
from nsbaseline.verdicts import Connectivity

DNS_NAMESPACE = "kube-system"
DNS_LABELS = {"k8s-app": "kube-dns"}
#: An address from TEST-NET-3 (RFC 5737): outside every cluster, never routed.
EXTERNAL_IP = "203.0.113.10"
FORMATS = ("table", "json", "mermaid", "graphviz")
#: How ``--port`` is written.
PORT_SYNTAX = f"PORT[/{'|'.join(names.PROTOCOLS)}]"


class ExplainError(ValueError):
    """A query or input that cannot be explained; the message says what to fix."""


@dataclass
class Inputs:
    """Objects gathered from files or the cluster, before they become a world."""

    namespaces: list[Namespace]
    pods: list[Pod]
    network_policies: list[NetworkPolicy]

    @classmethod
    def from_docs(cls, docs: Iterable[Mapping[str, Any]]) -> Inputs:
        """Namespaces, Pods and NetworkPolicies from manifests (Lists are unpacked)."""
        out = cls([], [], [])
        for doc in docs:
            kind = doc.get("kind")
            if kind and kind.endswith("List"):
                out.extend(Inputs.from_docs(doc.get("items") or []))
            elif kind == "Namespace":
                out.namespaces.append(Namespace.from_body(doc))
            elif kind == "Pod":
                out.pods.append(Pod.from_body(doc))
            elif kind == "NetworkPolicy":
                out.network_policies.append(NetworkPolicy.from_body(doc))
        return out

    def extend(self, other: Inputs) -> None:
        self.namespaces += other.namespaces
        self.pods += other.pods
        self.network_policies += other.network_policies


def dns_pod(pods: Sequence[Pod]) -> Pod:
    """The cluster DNS pod if one is known, else a stand-in with the usual labels and ports."""
    for pod in pods:
        if pod.namespace == DNS_NAMESPACE and all(
            pod.labels.get(k) == v for k, v in DNS_LABELS.items()
        ):
            return pod
    return Pod(
        DNS_NAMESPACE,
        "kube-dns",
        dict(DNS_LABELS),
        (ContainerPort(53, "UDP", "dns"), ContainerPort(53, "TCP", "dns-tcp")),
    )


def build_world(inputs: Inputs, focus: Iterable[str] = ()) -> World:
    """A world with representatives for pod-less namespaces and a DNS pod always present."""
    pods = list(inputs.pods)
    known = {p.namespace for p in pods}
    names_ = {n.name for n in inputs.namespaces} | set(focus)
    names_ |= {p.namespace for p in inputs.network_policies}
    for ns in sorted(names_ - known):
        if ns != DNS_NAMESPACE:
            pods.append(Pod(ns, REPRESENTATIVE))
    dns = dns_pod(pods)
    if dns not in pods:
        pods.append(dns)
    return World(inputs.namespaces, pods, inputs.network_policies)


def parse_endpoint(text: str, world: World) -> Endpoint:
    """``ns/pod``, ``ns`` (its only or representative pod), ``ip:ADDR``, ``dns``, ``external``."""
    text = text.strip()
    if text == "dns":
        return Endpoint(pod=dns_pod(world.pods))
    if text == "external":
        return Endpoint(ip=EXTERNAL_IP)
    if text.startswith("ip:"):
        return world.endpoint_for_ip(text[3:])
    if "/" in text:
        pod = world.pod(text)
        if pod is None:
            raise ExplainError(f"no pod {text} (known: {_known(world)})")
        return Endpoint(pod=pod)
    in_ns = [p for p in world.pods if p.namespace == text]
    if len(in_ns) == 1:
        return Endpoint(pod=in_ns[0])
    if not in_ns:
        return Endpoint(pod=Pod(text, REPRESENTATIVE))
    raise ExplainError(f"namespace {text} has several pods; name one as {text}/POD")


def _known(world: World) -> str:
    refs = sorted(p.ref for p in world.pods)
    return ", ".join(refs[:20]) + (" ..." if len(refs) > 20 else "")


def parse_port(text: str) -> tuple[str, int]:
    """``8080``, ``8080/TCP``, ``53/udp``."""
    number, _, proto = text.partition("/")
    proto = (proto or "TCP").upper()
    if not number.isdigit() or proto not in names.PROTOCOLS:
        raise ExplainError(f"--port takes {PORT_SYNTAX}, got {text!r}")
    return proto, int(number)


def query(world: World, source: str, destination: str, port: str) -> dict[str, Any]:
    proto, number = parse_port(port)
    try:
        verdict = world.check(
            parse_endpoint(source, world), parse_endpoint(destination, world), proto, number
        )
    except ValueError as exc:
        raise ExplainError(str(exc)) from None
    return verdict.as_dict()


def format_query(answer: Mapping[str, Any]) -> str:
    word = "ALLOWED" if answer["allowed"] else "DENIED"
    lines = [f"{answer['from']} -> {answer['to']} {answer['port']}/{answer['protocol']}: {word}"]
    lines += [f"  {answer[side]['reason']}" for side in ("egress", "ingress")]
    return "\n".join(lines) + "\n"


# ----- the matrix ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Matrix:
    sources: list[Endpoint]
    destinations: list[Endpoint]
    cells: dict[tuple[str, str], Connectivity]


def matrix(world: World, namespaces: Sequence[str]) -> Matrix:
    """Connectivity from and to every pod of ``namespaces``, plus DNS and an external address."""
    if not namespaces:
        raise ExplainError("give at least one --namespace for the matrix, or --from/--to")
    local = [
        Endpoint(pod=p)
        for p in sorted(world.pods, key=lambda p: p.ref)
        if p.namespace in namespaces
    ]
    external = Endpoint(ip=EXTERNAL_IP)
    dns = Endpoint(pod=dns_pod(world.pods))
    sources = [*local, external]
    destinations = [*local, *([dns] if dns not in local else []), external]
    local_refs = {str(e) for e in local}
    cells = {}
    for s in sources:
        for d in destinations:
            if str(s) in local_refs or str(d) in local_refs:
                cells[(str(s), str(d))] = world.connectivity(s, d)
    return Matrix(sources, destinations, cells)


def _label(endpoint: Endpoint) -> str:
    if endpoint.ip == EXTERNAL_IP:
        return "external"
    return str(endpoint)


def format_matrix(m: Matrix, output: str) -> str:
    if output == "json":
        return json.dumps(matrix_json(m), indent=2) + "\n"
    if output == "mermaid":
        return _graph(m, "mermaid")
    if output == "graphviz":
        return _graph(m, "graphviz")
    header = ["FROM \\ TO", *(_label(d) for d in m.destinations)]
    rows = [header]
    for s in m.sources:
        row = [_label(s)]
        for d in m.destinations:
            cell = m.cells.get((str(s), str(d)))
            row.append("-" if cell is None else str(cell.ports))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def matrix_json(m: Matrix) -> dict[str, Any]:
    flows = []
    for (s, d), c in m.cells.items():
        flows.append(
            {
                "from": s,
                "to": d,
                "ports": str(c.ports),
                "allowed": not c.ports.empty,
                "egress": c.egress.reason(),
                "ingress": c.ingress.reason(),
            }
        )
    return {
        "sources": [_label(e) for e in m.sources],
        "destinations": [_label(e) for e in m.destinations],
        "flows": flows,
    }


def _graph(m: Matrix, kind: str) -> str:
    ids: dict[str, str] = {}
    for e in [*m.sources, *m.destinations]:
        ids.setdefault(str(e), f"n{len(ids)}")
    labels = {str(e): _label(e) for e in [*m.sources, *m.destinations]}
    edges = [(s, d, str(c.ports)) for (s, d), c in m.cells.items() if not c.ports.empty]
    if kind == "mermaid":
        lines = ["flowchart LR"]
        lines += [f'  {ids[k]}["{labels[k]}"]' for k in ids]
        lines += [f'  {ids[s]} -->|"{p}"| {ids[d]}' for s, d, p in edges]
    else:
        lines = ["digraph connectivity {", "  rankdir=LR;", "  node [shape=box];"]
        lines += [f'  {ids[k]} [label="{labels[k]}"];' for k in ids]
        lines += [f'  {ids[s]} -> {ids[d]} [label="{p}"];' for s, d, p in edges]
        lines.append("}")
    return "\n".join(lines) + "\n"


__all__ = [
    "FORMATS",
    "ExplainError",
    "Inputs",
    "Matrix",
    "build_world",
    "format_matrix",
    "format_query",
    "matrix",
    "parse_endpoint",
    "parse_port",
    "query",
]
