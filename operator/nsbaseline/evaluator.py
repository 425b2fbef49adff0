"""What a set of ``networking.k8s.io/v1`` NetworkPolicies allows, decided without a CNI. Pure.

The semantics follow the API reference, so ``explain`` and ``lint`` can answer "can A reach B,
and why?" offline:

* a pod is isolated for a direction when some policy in its namespace selects it and lists that
  direction in ``policyTypes`` (defaulted by the API server to ``Ingress``, plus ``Egress`` when
  the policy has egress rules); an isolated pod accepts only what some selecting policy allows,
  and allows are unioned across policies;
* rules are OR'd, peers inside a rule are OR'd, and ``namespaceSelector`` + ``podSelector`` in one
  peer are AND'd; a ``podSelector`` alone means the policy's own namespace, a
  ``namespaceSelector: {}`` every namespace; absent or empty ``from``/``to`` means every peer and
  absent or empty ``ports`` every port;
* ``ipBlock`` matches addresses (pods too, when their IP is known), minus its ``except`` ranges;
* ports match by number, by range (``endPort``) or by name, a name being resolved against the
  container ports of the destination pod, always per protocol (TCP, UDP, SCTP);
* a pod-to-pod flow needs egress allowed at the source and ingress allowed at the destination.

Anything that is not a known pod (an IP outside the cluster) is not subject to NetworkPolicy on
its own side.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nsbaseline import canonical, names
from nsbaseline.model import Namespace
from nsbaseline.portset import PortSet
from nsbaseline.selection import selector_matches
from nsbaseline.verdicts import Connectivity, Direction, DirectionResult, RuleRef, Verdict

#: The name ``explain`` shows for a namespace's stand-in pod when no pods are known.
REPRESENTATIVE = "*"


# ----- the world ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[ContainerPort, ...] = ()
    ip: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Pod:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        ports = tuple(
            ContainerPort(int(p["containerPort"]), p.get("protocol") or "TCP", p.get("name"))
            for c in spec.get("containers") or []
            for p in c.get("ports") or []
            if "containerPort" in p
        )
        return cls(
            namespace=meta.get("namespace") or "default",
            name=meta["name"],
            labels=dict(meta.get("labels") or {}),
            ports=ports,
            ip=(body.get("status") or {}).get("podIP"),
        )


@dataclass(frozen=True)
class NetworkPolicy:
    """One NetworkPolicy: where it lives and its spec as written."""

    namespace: str
    name: str
    spec: Mapping[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def policy_types(self) -> frozenset[str]:
        return frozenset(canonical.policy_types(self.spec))

    def isolates(self, direction: Direction) -> bool:
        return direction.capitalize() in self.policy_types

    def rules(self, direction: Direction) -> list[Mapping[str, Any]]:
        return list(self.spec.get(direction) or [])

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NetworkPolicy:
        meta = body.get("metadata") or {}
        return cls(meta.get("namespace") or "default", meta["name"], dict(body.get("spec") or {}))


@dataclass(frozen=True)
class Endpoint:
    """One end of a flow: a pod, or a bare IP address outside every known pod."""

    pod: Pod | None = None
    ip: str | None = None

    def __post_init__(self) -> None:
        if (self.pod is None) == (self.ip is None):
            raise ValueError("an endpoint is either a pod or an IP address")

    @property
    def address(self) -> str | None:
        return self.pod.ip if self.pod is not None else self.ip

    def __str__(self) -> str:
        return self.pod.ref if self.pod is not None else f"ip:{self.ip}"


# ----- port sets ----------------------------------------------------------------------------
def rule_ports(rule: Mapping[str, Any], destination: Pod | None) -> PortSet:
    """The ports one rule allows towards ``destination`` (named ports need a destination pod)."""
    entries = rule.get("ports") or []
    if not entries:
        return PortSet.all()
    items: list[tuple[str, int, int]] = []
    for entry in entries:
        proto = entry.get("protocol") or "TCP"
        port = entry.get("port")
        if port is None:
            items.append((proto, 1, names.MAX_PORT))
        elif isinstance(port, int) or str(port).isdigit():
            lo = int(port)
            hi = int(entry["endPort"]) if entry.get("endPort") is not None else lo
            items.append((proto, lo, hi))
        elif destination is not None:
            items.extend(
                (proto, cp.port, cp.port)
                for cp in destination.ports
                if cp.name == port and cp.protocol == proto
            )
    return PortSet.of(items)


# ----- peers --------------------------------------------------------------------------------
def _in_block(address: str | None, block: Mapping[str, Any]) -> bool:
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
        net = ipaddress.ip_network(block["cidr"], strict=False)
        if ip.version != net.version or ip not in net:
            return False
        for sub in block.get("except") or []:
            excluded = ipaddress.ip_network(sub, strict=False)
            if ip.version == excluded.version and ip in excluded:
                return False
    except ValueError:
        return False
    return True


class World:
    """Namespaces, pods and NetworkPolicies, indexed for evaluation."""

    def __init__(
        self,
        namespaces: Iterable[Namespace] = (),
        pods: Iterable[Pod] = (),
        network_policies: Iterable[NetworkPolicy] = (),
    ) -> None:
        self.namespaces = {n.name: n for n in namespaces}
        self.pods = list(pods)
        self.network_policies = sorted(network_policies, key=lambda p: (p.namespace, p.name))
        for pod in self.pods:
            self.namespaces.setdefault(pod.namespace, Namespace(pod.namespace))
        for policy in self.network_policies:
            self.namespaces.setdefault(policy.namespace, Namespace(policy.namespace))

    def namespace_labels(self, name: str) -> dict[str, str]:
        return self.namespaces.get(name, Namespace(name)).effective_labels

    def pod(self, ref: str) -> Pod | None:
        return next((p for p in self.pods if p.ref == ref), None)

    def pod_by_ip(self, ip: str) -> Pod | None:
        return next((p for p in self.pods if p.ip == ip), None)

    def endpoint_for_ip(self, ip: str) -> Endpoint:
        """An address: the pod holding it if known, else an address outside the cluster."""
        pod = self.pod_by_ip(ip)
        return Endpoint(pod=pod) if pod is not None else Endpoint(ip=ip)

    def selecting(self, pod: Pod) -> list[NetworkPolicy]:
        return [
            p
            for p in self.network_policies
            if p.namespace == pod.namespace
            and selector_matches(p.spec.get("podSelector") or {}, pod.labels)
        ]

    def peer_matches(self, policy: NetworkPolicy, peer: Mapping[str, Any], other: Endpoint) -> bool:
        """Whether ``other`` is one of the peers ``peer`` (of ``policy``) describes."""
        if peer.get("ipBlock"):
            return _in_block(other.address, peer["ipBlock"])
        pod = other.pod
        if pod is None:
            return False  # selectors only ever select pods
        ns_selector = peer.get("namespaceSelector")
        if ns_selector is None:
            if pod.namespace != policy.namespace:
                return False
        elif not selector_matches(ns_selector, self.namespace_labels(pod.namespace)):
            return False
        pod_selector = peer.get("podSelector")
        return pod_selector is None or selector_matches(pod_selector, pod.labels)

    def side(
        self, direction: Direction, subject: Endpoint, other: Endpoint, destination: Endpoint
    ) -> DirectionResult:
        """Evaluate one direction for ``subject`` (the source for egress, else the destination)."""
        if subject.pod is None:
            return DirectionResult(direction, None)
        isolating = [p for p in self.selecting(subject.pod) if p.isolates(direction)]
        if not isolating:
            return DirectionResult(direction, subject.pod.ref)
        peers_key = "from" if direction == "ingress" else "to"
        allowed: list[RuleRef] = []
        total = PortSet()
        for policy in isolating:
            for index, rule in enumerate(policy.rules(direction)):
                peers: Sequence[Mapping[str, Any]] = rule.get(peers_key) or []
                if peers:
                    hit = next(
                        (
                            i
                            for i, peer in enumerate(peers)
                            if self.peer_matches(policy, peer, other)
                        ),
                        None,
                    )
                    if hit is None:
                        continue
                else:
                    hit = None
                ports = rule_ports(rule, destination.pod)
                if ports.empty:
                    continue
                allowed.append(RuleRef(policy.ref, direction, index, hit, ports))
                total = total.union(ports)
        return DirectionResult(
            direction,
            subject.pod.ref,
            tuple(p.ref for p in isolating),
            tuple(allowed),
            total,
        )

    def connectivity(self, source: Endpoint, destination: Endpoint) -> Connectivity:
        egress = self.side("egress", source, destination, destination)
        ingress = self.side("ingress", destination, source, destination)
        return Connectivity(
            str(source), str(destination), egress.ports.intersect(ingress.ports), egress, ingress
        )

    def check(self, source: Endpoint, destination: Endpoint, protocol: str, port: int) -> Verdict:
        """Is ``protocol``/``port`` from ``source`` to ``destination`` allowed, and why?"""
        if protocol not in names.PROTOCOLS:
            raise ValueError(
                f"protocol must be one of {', '.join(names.PROTOCOLS)}, got {protocol!r}"
            )
        if not 1 <= port <= names.MAX_PORT:
            raise ValueError(f"port must be within 1-{names.MAX_PORT}, got {port}")
        c = self.connectivity(source, destination)
        return Verdict(
            str(source),
            str(destination),
            protocol,
            port,
            c.ports.contains(protocol, port),
            c.egress,
            c.ingress,
        )


__all__ = [
    "REPRESENTATIVE",
    "ContainerPort",
    "Endpoint",
    "NetworkPolicy",
    "Pod",
    "World",
    "rule_ports",
]
