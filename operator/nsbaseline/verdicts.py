"""What the NetworkPolicy evaluator answers: which rules allow a flow, per side, and why. Pure.

Built by :class:`nsbaseline.evaluator.World`; shown by ``nsbaseline explain`` and used by lint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from nsbaseline.portset import PortSet

Direction = Literal["ingress", "egress"]


@dataclass(frozen=True)
class RuleRef:
    """One rule (and the peer in it) that allows a flow."""

    network_policy: str
    direction: Direction
    rule: int
    peer: int | None  # None: the rule has no peers, so it allows every peer
    ports: PortSet

    def __str__(self) -> str:
        who = "every peer" if self.peer is None else f"peer {self.peer}"
        return f"{self.network_policy} {self.direction}[{self.rule}] ({who}, ports {self.ports})"


@dataclass(frozen=True)
class DirectionResult:
    """How one side of a flow decides it: not enforced, not isolated, allowed, or denied."""

    direction: Direction
    pod: str | None  # the pod whose policies decide; None when that side is no pod
    isolated_by: tuple[str, ...] = ()
    allowed_by: tuple[RuleRef, ...] = ()
    ports: PortSet = field(default_factory=PortSet.all)  # what this side lets through

    @property
    def enforced(self) -> bool:
        return self.pod is not None

    @property
    def isolated(self) -> bool:
        return bool(self.isolated_by)

    def reason(self, protocol: str | None = None, port: int | None = None) -> str:
        side = "egress from" if self.direction == "egress" else "ingress to"
        if self.pod is None:
            return f"{self.direction}: not a pod in the cluster, no NetworkPolicy applies"
        if not self.isolated:
            return f"{side} {self.pod}: not isolated (no policy with {self.direction} selects it)"
        rules = [
            r for r in self.allowed_by if protocol is None or r.ports.contains(protocol, port or 0)
        ]
        if rules:
            return f"{side} {self.pod}: allowed by " + "; ".join(str(r) for r in rules)
        return (
            f"{side} {self.pod}: denied; isolated by "
            + ", ".join(self.isolated_by)
            + (" and no rule allows it" if not self.allowed_by else " and no rule allows this port")
        )


@dataclass(frozen=True)
class Verdict:
    source: str
    destination: str
    protocol: str
    port: int
    allowed: bool
    egress: DirectionResult
    ingress: DirectionResult

    def reasons(self) -> list[str]:
        return [
            self.egress.reason(self.protocol, self.port),
            self.ingress.reason(self.protocol, self.port),
        ]

    def as_dict(self) -> dict[str, Any]:
        def side(d: DirectionResult) -> dict[str, Any]:
            rules = [r for r in d.allowed_by if r.ports.contains(self.protocol, self.port)]
            return {
                "enforced": d.enforced,
                "isolated": d.isolated,
                "isolatedBy": list(d.isolated_by),
                "allowedBy": [
                    {
                        "policy": r.network_policy,
                        "rule": r.rule,
                        "peer": r.peer,
                        "ports": str(r.ports),
                    }
                    for r in rules
                ],
                "reason": d.reason(self.protocol, self.port),
            }

        return {
            "from": self.source,
            "to": self.destination,
            "protocol": self.protocol,
            "port": self.port,
            "allowed": self.allowed,
            "egress": side(self.egress),
            "ingress": side(self.ingress),
        }


@dataclass(frozen=True)
class Connectivity:
    """Every port a source may open to a destination, with both sides' reasons."""

    source: str
    destination: str
    ports: PortSet
    egress: DirectionResult
    ingress: DirectionResult


__all__ = ["Connectivity", "Direction", "DirectionResult", "RuleRef", "Verdict"]
