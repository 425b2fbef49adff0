"""Names, labels and identifiers shared by every layer.

Kept in one place so the CRD, the templates, the admission policy and the code can never disagree
about what marks an object as ours.
"""

from typing import Final

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


def object_name(policy: str, piece: str) -> str:
    """The deterministic name of the NetworkPolicy that renders ``piece`` of ``policy``.

    The CRD caps policy names at 63 characters and template names at 63 too, so the result
    always fits a DNS subdomain (253).
    """
    return f"{NAME_PREFIX}{policy}-{piece}"
