"""Which proxy reaches the API server when the kubeconfig names none: kubectl's rule, decided once.

``HTTPS_PROXY`` (or ``https_proxy``) unless ``NO_PROXY`` exempts the server's host. Deciding it
per login rather than per request matters: aiohttp's ``trust_env`` re-reads the environment and
``~/.netrc`` in a thread for every request, which was most of the client's CPU.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from collections.abc import Mapping


def environment_proxy(server: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy HTTPS_PROXY (or https_proxy) names for ``server``, unless NO_PROXY exempts it.

    kubectl's rule for clusters without ``proxy-url``; evaluated once per login, not per request.
    """
    env = os.environ if environ is None else environ
    proxies = {k.lower(): v for k, v in env.items() if k.lower() in ("https_proxy", "no_proxy")}
    proxy = proxies.get("https_proxy")
    if not proxy:
        return None
    host = urllib.parse.urlsplit(server).hostname or ""
    if _exempt(host, proxies.get("no_proxy", "")):
        return None
    return proxy


def _exempt(host: str, no_proxy: str) -> bool:
    """NO_PROXY as Go reads it: ``*``, domain suffixes (leading dot optional), IPs and CIDRs."""
    host = host.lower().strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.split(":")[0] if entry.count(":") == 1 else entry  # drop a port
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        suffix = entry.lstrip(".")
        if host == suffix or host.endswith("." + suffix):
            return True
    return False


__all__ = ["environment_proxy"]
