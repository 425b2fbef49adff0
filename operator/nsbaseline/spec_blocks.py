"""Building blocks of the BaselinePolicy spec that mirror Kubernetes' own types.

Label selectors (``metav1.LabelSelector``), NetworkPolicy ports and DNS names, declared with
:func:`nsbaseline.schema.api` like the rest of the spec (:mod:`nsbaseline.spec`), with the API
server's own rules for them spelt out as schema keywords and CEL.
"""

# Every field default below is made by api(), a dataclasses.field() with API metadata.
# ruff: noqa: RUF009

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from nsbaseline import names
from nsbaseline.schema import Bounds, Rule, api

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# CEL regexes (RE2). Label keys: optional DNS-subdomain prefix, then a name part.
LABEL_KEY_RE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE_RE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


def dns_name(description: str = "", max_length: int = 63) -> Bounds:
    """A DNS label: a namespace, a piece or a template name."""
    return Bounds(description=description, min_length=1, max_length=max_length, pattern=DNS_LABEL)


VALID_LABEL_KEYS = f"self.all(k, k.size() <= 317 && k.matches('{LABEL_KEY_RE}'))"


# ----- label selectors ------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LabelRequirement:
    """One ``matchExpressions`` entry of a ``metav1.LabelSelector``."""

    key: str = api(
        "The label key the requirement applies to.", bounds=Bounds(min_length=1, max_length=317)
    )
    operator: Operator = api("How the key relates to the values.")
    values: tuple[str, ...] | None = api(
        "Values for In and NotIn; must be empty otherwise.",
        None,
        bounds=Bounds(max_items=64, list_type="set"),
        items=Bounds(max_length=63),
    )

    API_RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(f"self.key.matches('{LABEL_KEY_RE}')", "key must be a valid label key", ".key"),
        Rule(
            "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : "
            "(!has(self.values) || size(self.values) == 0)",
            "values must be non-empty for operators In and NotIn, and empty for Exists and "
            "DoesNotExist",
        ),
    )


@dataclass(frozen=True, kw_only=True)
class LabelSelector:
    """A ``metav1.LabelSelector`` with the API server's own rules spelt out as CEL."""

    match_labels: Mapping[str, str] | None = api(
        "Labels that must all be present with exactly these values.",
        None,
        bounds=Bounds(
            max_properties=32,
            rules=(
                Rule(
                    VALID_LABEL_KEYS,
                    "keys must be valid label keys: an optional DNS-subdomain prefix and '/', "
                    "then at most 63 characters of [A-Za-z0-9-_.] starting and ending "
                    "alphanumeric",
                ),
                Rule(
                    f"self.all(k, self[k].matches('{LABEL_VALUE_RE}'))",
                    "values must be valid label values: at most 63 characters of [A-Za-z0-9-_.] "
                    "starting and ending alphanumeric, or empty",
                ),
            ),
        ),
        values=Bounds(max_length=63),
    )
    match_expressions: tuple[LabelRequirement, ...] | None = api(
        "Set-based requirements; all must hold.",
        None,
        bounds=Bounds(max_items=32, list_type="atomic"),
    )


def selector_field(description: str, default: LabelSelector) -> Any:
    return api(
        description + " Terms are ANDed; an empty selector ({}) matches everything.", default
    )


# ----- ports ----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Port:
    """One port, or range of ports, of a NetworkPolicy rule."""

    # JSON-schema keywords apply per type: bounds to numbers, length and pattern to names.
    port: int | str = api(
        "A port number (1-65535) or a named container port (at most 15 lowercase letters, "
        "digits and '-').",
        bounds=Bounds(
            minimum=1,
            maximum=names.MAX_PORT,
            max_length=names.PORT_NAME_MAX_LENGTH,
            pattern=names.PORT_NAME_PATTERN,
        ),
    )
    end_port: int | None = api(
        "If set, the range port..endPort is allowed (numeric port only).",
        None,
        bounds=Bounds(minimum=1, maximum=names.MAX_PORT),
    )
    protocol: names.Protocol = api("The IP protocol.", "TCP")

    API_RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.endPort) || (type(self.port) == int && self.endPort >= self.port)",
            "endPort needs a numeric port and must not be below it",
            ".endPort",
        ),
        # The rest of names.is_port_name, as the API server checks it on a NetworkPolicy.
        Rule(
            "type(self.port) == int || "
            "(string(self.port).matches('[a-z]') && !string(self.port).contains('--'))",
            "a named port must contain at least one letter and no '--' (an IANA service name "
            "such as 'metrics'); write numbers without quotes",
            ".port",
        ),
    )


UNIQUE_PORTS = Rule(
    "self.all(p, self.filter(q, string(q.port) == string(p.port) && "
    "q.protocol == p.protocol).size() == 1)",
    "each port and protocol pair may appear only once",
)


def ports_field(description: str, default: tuple[Port, ...] | None = None) -> Any:
    return api(
        description,
        default,
        bounds=Bounds(max_items=16, list_type="atomic", rules=(UNIQUE_PORTS,)),
    )


__all__ = [
    "DNS_LABEL",
    "LABEL_KEY_RE",
    "LABEL_VALUE_RE",
    "VALID_LABEL_KEYS",
    "LabelRequirement",
    "LabelSelector",
    "Port",
    "dns_name",
    "ports_field",
    "selector_field",
]
