"""nsbaseline: a Kubernetes operator that keeps a secure NetworkPolicy baseline in every opted-in
namespace.

The pure core (``selection``, ``canonical``, ``render``, ``plan``, ``status``) has no I/O and is
tested without a cluster; ``kube`` is the only module that talks to the API server; ``handlers``
and ``reconciler`` wire Kopf's watches to the core.
"""

__version__ = "0.1.0"
