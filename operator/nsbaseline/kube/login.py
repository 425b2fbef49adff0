"""Credentials for the operator and every CLI command, found the way kubectl finds them.

Order: ``--kubeconfig`` (a path or a ``:``-separated list), else ``KUBECONFIG``, else
``~/.kube/config``, else the pod's ServiceAccount (in-cluster). ``--context`` picks a context.

Parsing, merging, context selection and every way a kubeconfig user can authenticate — exec
plugins (``client.authentication.k8s.io/v1`` and ``v1beta1``), auth-providers such as OIDC,
``token``, ``tokenFile``, basic auth, client certificates by (relative) path or inline data —
are the official ``kubernetes`` client's configuration loader. What it leaves to its own HTTP
stack (urllib3) is done here for ours (aiohttp, shared with Kopf's watches): the TLS context
(``certificate-authority``, ``insecure-skip-tls-verify``, ``tls-server-name``), ``proxy-url``
(else ``HTTPS_PROXY``/``NO_PROXY``), and keeping the Authorization header fresh (exec and
auth-provider tokens renewed when they expire, token files re-read when they change: bound
ServiceAccount tokens rotate).

Secrets never linger: inline certificate and key data touch the disk only for the one load that
needs them (:mod:`nsbaseline.kube.kubeconfig`, which also holds the rest of the loader's
internals).
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from nsbaseline.kube.errors import LoginError
from nsbaseline.kube.kubeconfig import (
    cluster_proxy,
    node_sets,
    one_line,
    resolve_path,
    run_loader,
    user_path,
)
from nsbaseline.kube.proxy import environment_proxy
from nsbaseline.kube.tls import ssl_context
from nsbaseline.kube.tokens import EXPIRY_MARGIN, TokenSource

#: Where a pod's ServiceAccount credentials are mounted.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = "~/.kube/config"


@dataclass
class Credentials:
    """Everything a session needs to reach and authenticate to one API server."""

    server: str
    ssl: ssl.SSLContext
    token: TokenSource
    #: ``proxy-url`` of the cluster, else HTTPS_PROXY unless NO_PROXY exempts the server.
    proxy: str | None = None
    #: The kubeconfig's name for the user (for messages), or the ServiceAccount in a pod.
    user: str = ""
    context: str | None = None
    #: Where they came from: the kubeconfig path(s) or "in-cluster".
    origin: str = ""
    #: Namespace for Events about cluster-scoped objects.
    default_namespace: str = "default"
    #: When client-certificate material from an exec plugin expires (tokens renew by themselves).
    expiration: datetime.datetime | None = None
    #: How to load these credentials again (after a 401, or when they expire).
    reload: Callable[[], Credentials] | None = field(default=None, repr=False)

    def session(self, *, limit: int = 64, timeout: float | None = None) -> aiohttp.ClientSession:
        """A pooled aiohttp session with our TLS, proxy and auth; the caller closes it."""
        connector = aiohttp.TCPConnector(limit=limit, ssl=self.ssl, keepalive_timeout=60)
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout),
            middlewares=(self.token.middleware,),
            proxy=self.proxy,
            # Decided once at login (environment_proxy): aiohttp's trust_env would re-read the
            # environment and ~/.netrc in a thread for every request, most of the client's CPU.
            trust_env=False,
        )

    def expired(self, now: datetime.datetime | None = None) -> bool:
        if self.expiration is None:
            return False
        now = now or datetime.datetime.now(datetime.UTC)
        return now >= self.expiration - EXPIRY_MARGIN


def load(
    kubeconfig: str | None = None,
    context: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """Find and load credentials the way kubectl does; :class:`LoginError` says what is wrong."""
    env = os.environ if environ is None else environ
    paths = kubeconfig or env.get("KUBECONFIG") or ""
    if paths:
        return _from_kubeconfig(paths, context, explicit=kubeconfig is not None)
    default = os.path.expanduser(DEFAULT_KUBECONFIG)
    if os.path.exists(default):
        return _from_kubeconfig(default, context, explicit=False)
    if env.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIR / "token").exists():
        if context:
            raise LoginError(f"--context {context} needs a kubeconfig; none was found")
        return _in_cluster(env)
    raise LoginError(
        f"no kubeconfig found ({DEFAULT_KUBECONFIG} does not exist and KUBECONFIG is not set) "
        "and not running in a pod: pass --kubeconfig PATH or set KUBECONFIG"
    )


# ----- kubeconfig -----------------------------------------------------------------------------
def _from_kubeconfig(paths: str, context: str | None, *, explicit: bool) -> Credentials:
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.kube_config import KubeConfigMerger

    listed = [os.path.expanduser(p) for p in paths.split(os.pathsep) if p]
    if not any(os.path.exists(p) for p in listed):
        where = "--kubeconfig" if explicit else "KUBECONFIG"
        raise LoginError(f"kubeconfig {paths} not found (from {where})")
    try:
        merged = KubeConfigMerger(paths).config
    except (OSError, ValueError, ConfigException) as exc:
        raise LoginError(f"cannot read kubeconfig {paths}: {one_line(exc)}") from exc
    if merged is None:
        raise LoginError(f"kubeconfig {paths} is empty")
    available = [str(c["name"]) for c in merged.value.get("contexts") or [] if "name" in c]
    name = context or merged.value.get("current-context")
    if not name:
        raise LoginError(
            f"kubeconfig {paths} sets no current-context: pass --context "
            f"(one of: {', '.join(available) or 'none defined'})"
        )
    if name not in available:
        raise LoginError(
            f'context "{name}" not found in kubeconfig {paths} '
            f"(it has: {', '.join(available) or 'no contexts'})"
        )

    def reload() -> Credentials:
        return _from_kubeconfig(paths, name, explicit=explicit)

    return _load_context(merged, name, paths, reload)


def _load_context(
    merged: Any, context: str, paths: str, reload: Callable[[], Credentials]
) -> Credentials:
    cfg, loader, context_ssl = run_loader(merged, context, paths)
    user_name = str(loader.current_context["context"].get("user") or "")
    user = loader.user
    header = cfg.api_key.get("BearerToken") or None
    expiry = _aware(getattr(loader, "expiry", None))
    token: TokenSource
    exec_user = node_sets(user, "exec")
    if exec_user or node_sets(user, "auth-provider"):

        def renew() -> tuple[str | None, datetime.datetime | None]:
            fresh_cfg, fresh_loader, _ = run_loader(merged, context, paths)
            return (
                fresh_cfg.api_key.get("BearerToken") or None,
                _aware(getattr(fresh_loader, "expiry", None)),
            )

        token = TokenSource(header, expiry=expiry, reload=renew)
    elif node_sets(user, "tokenFile") and not node_sets(user, "token"):
        token = TokenSource(header, path=resolve_path(str(user["tokenFile"]), user_path(loader)))
    else:
        token = TokenSource(header)
    # An exec plugin may hand out a client certificate instead of a token: it expires as a whole.
    cert_expiry = expiry if exec_user and header is None else None
    return Credentials(
        server=str(cfg.host),
        ssl=context_ssl,
        token=token,
        # The kubeconfig's own proxy-url only: the library's Configuration also takes HTTPS_PROXY
        # from the environment but ignores NO_PROXY when it does; we apply both ourselves.
        proxy=cluster_proxy(loader) or environment_proxy(str(cfg.host)),
        user=user_name,
        context=context,
        origin=paths,
        default_namespace=str(loader.current_context["context"].get("namespace") or "default"),
        expiration=cert_expiry,
        reload=reload,
    )


# ----- in-cluster -----------------------------------------------------------------------------
def _in_cluster(env: Mapping[str, str]) -> Credentials:
    from kubernetes.client import Configuration
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.config.incluster_config import InClusterConfigLoader

    token_file = SERVICE_ACCOUNT_DIR / "token"
    loader = InClusterConfigLoader(
        token_filename=str(token_file),
        cert_filename=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
        environ=env,
    )
    cfg = type.__call__(Configuration)
    try:
        loader.load_and_set(cfg)
        context_ssl = ssl_context(cfg)
    except (ConfigException, OSError, ssl.SSLError) as exc:
        raise LoginError(f"cannot use the pod's ServiceAccount: {one_line(exc)}") from exc
    try:
        namespace = (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip() or "default"
    except OSError:
        namespace = "default"
    return Credentials(
        server=str(cfg.host),
        ssl=context_ssl,
        token=TokenSource(None, path=token_file),
        user=f"the ServiceAccount of this pod (namespace {namespace})",
        origin="in-cluster",
        default_namespace=namespace,
        reload=lambda: _in_cluster(env),
    )


def _aware(value: Any) -> datetime.datetime | None:
    if not isinstance(value, datetime.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


__all__ = ["Credentials", "LoginError", "TokenSource", "load"]
