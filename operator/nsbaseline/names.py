"""Names, labels and identifiers shared by every layer.

Kept in one place so the CRD, the templates, the admission policy and the code can never disagree
about what marks an object as ours.
"""

import re
import typing
from typing import Final, Literal

GROUP: Final = "nsbaseline.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "BaselinePolicy"
PLURAL: Final = "baselinepolicies"

FIELD_MANAGER: Final = "nsbaseline"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "nsbaseline"
POLICY_LABEL: Final = f"{GROUP}/policy"
PIECE_LABEL: Final = f"{GROUP}/piece"
ANNOTATION_PREFIX: Final = f"{GROUP}/"
OPT_IN_LABEL: Final = f"{GROUP}/enabled"
NAME_PREFIX: Final = "nsbaseline-"

#: The immutable label the API server sets on every namespace; tenants cannot forge it.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"

#: Built-in pieces, in the order they are applied. ``default-deny`` is deliberately last so that a
#: namespace never denies traffic before its allowances exist; removal walks the list backwards.
DEFAULT_DENY: Final = "default-deny"
BUILTIN_PIECES: Final = (
    "allow-dns",
    "allow-monitoring",
    "allow-ingress-controller",
    "allow-egress-cidrs",
    DEFAULT_DENY,
)


#: The IP protocols a NetworkPolicy port may name (the API server's enum), in this order.
Protocol = Literal["TCP", "UDP", "SCTP"]
PROTOCOLS: Final[tuple[Protocol, ...]] = typing.get_args(Protocol)
MAX_PORT: Final = 65535

#: Named ports are IANA service names, as the API server checks them on a NetworkPolicy: at most
#: 15 lowercase letters, digits and '-', alphanumeric at both ends, a letter somewhere (else
#: "8080" would pass for a name) and no "--". The CRD states the same rule in its schema and CEL.
PORT_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PORT_NAME_MAX_LENGTH: Final = 15


def is_port_name(text: str) -> bool:
    """Whether ``text`` is a valid port name (see :data:`PORT_NAME_PATTERN`)."""
    return (
        len(text) <= PORT_NAME_MAX_LENGTH
        and re.match(PORT_NAME_PATTERN, text) is not None
        and re.search("[a-z]", text) is not None
        and "--" not in text
    )


def object_name(policy: str, piece: str) -> str:
    """The deterministic name of the NetworkPolicy that renders ``piece`` of ``policy``.

    The CRD caps policy names at 63 characters and template names at 63 too, so the result
    always fits a DNS subdomain (253).
    """
    return f"{NAME_PREFIX}{policy}-{piece}"
