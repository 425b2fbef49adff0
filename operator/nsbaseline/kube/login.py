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

Secrets never linger: the loader writes inline certificate and key data to files only because
Python's ``ssl`` cannot load them from memory; we point it at a private (0700) folder made for
that one load, build the TLS context, and remove the files and the folder at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from nsbaseline.kube.errors import LoginError

#: Where a pod's ServiceAccount credentials are mounted.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = "~/.kube/config"
#: Renew a token this long before it expires, so no request goes out with a dying one.
EXPIRY_MARGIN = datetime.timedelta(seconds=5)

Reload = Callable[[], tuple[str | None, datetime.datetime | None]]


class TokenSource:
    """The ``Authorization`` header of every request, kept valid.

    Three kinds: a fixed header (a static token, basic auth; none for client certificates), a
    file re-read whenever it changes (``tokenFile``, the in-cluster token), and a header that
    expires and is renewed by running the loader again (exec plugins, auth-providers).
    """

    def __init__(
        self,
        header: str | None,
        *,
        expiry: datetime.datetime | None = None,
        path: Path | None = None,
        reload: Reload | None = None,
    ) -> None:
        self._header = header
        self._expiry = expiry
        self._path = path
        self._reload = reload
        self._stamp: tuple[int, int] | None = None
        self._lock: asyncio.Lock | None = None
        if path is not None:
            self._read_file()

    @property
    def expiry(self) -> datetime.datetime | None:
        return self._expiry

    def header(self) -> str | None:
        """The current header; a token file is re-read when its size or mtime changed."""
        if self._path is not None:
            try:
                stat = self._path.stat()
            except OSError:
                return self._header  # mid-rotation: keep the last good token
            if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                self._read_file()
        return self._header

    def _read_file(self) -> None:
        assert self._path is not None
        try:
            stat = self._path.stat()
            token = self._path.read_text().strip()
        except OSError as exc:
            if self._header is None:
                raise LoginError(f"cannot read token file {self._path}: {exc.strerror}") from exc
            return
        if token:
            self._header = f"Bearer {token}"
            self._stamp = (stat.st_mtime_ns, stat.st_size)

    def stale(self, now: datetime.datetime | None = None) -> bool:
        """Whether the header is about to expire (only renewable headers expire)."""
        if self._expiry is None or self._reload is None:
            return False
        now = now or datetime.datetime.now(datetime.UTC)
        return now >= self._expiry - EXPIRY_MARGIN

    @property
    def renewable(self) -> bool:
        return self._reload is not None or self._path is not None

    def renew_now(self) -> None:
        """Get a fresh header (runs the exec plugin again); blocking."""
        if self._path is not None:
            self._stamp = None
            self._read_file()
        if self._reload is not None:
            self._header, self._expiry = self._reload()

    async def renew(self, *, force: bool = False) -> None:
        """Renew once for all the requests that found the header stale at the same moment."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        before = self._header
        async with self._lock:
            if self._header != before:
                return  # another request renewed it while this one waited
            if force or self.stale():
                await asyncio.to_thread(self.renew_now)

    async def middleware(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """aiohttp client middleware: every request (ours and Kopf's) carries a valid header."""
        if self.stale():
            await self.renew()
        header = self.header()
        if header:
            request.headers["Authorization"] = header
        return await handler(request)


@dataclass
class Credentials:
    """Everything a session needs to reach and authenticate to one API server."""

    server: str
    ssl: ssl.SSLContext
    token: TokenSource
    #: ``proxy-url`` of the cluster; when unset, HTTPS_PROXY/NO_PROXY from the environment apply.
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
            trust_env=self.proxy is None,
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
        raise LoginError(f"cannot read kubeconfig {paths}: {_one_line(exc)}") from exc
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
    cfg, loader, context_ssl = _run_loader(merged, context, paths)
    user_name = str(loader.current_context["context"].get("user") or "")
    user = loader.user
    header = cfg.api_key.get("BearerToken") or None
    expiry = _aware(getattr(loader, "expiry", None))
    token: TokenSource
    exec_user = _has(user, "exec")
    if exec_user or _has(user, "auth-provider"):

        def renew() -> tuple[str | None, datetime.datetime | None]:
            fresh_cfg, fresh_loader, _ = _run_loader(merged, context, paths)
            return (
                fresh_cfg.api_key.get("BearerToken") or None,
                _aware(getattr(fresh_loader, "expiry", None)),
            )

        token = TokenSource(header, expiry=expiry, reload=renew)
    elif _has(user, "tokenFile") and not _has(user, "token"):
        token = TokenSource(header, path=_resolve(str(user["tokenFile"]), user_path(loader)))
    else:
        token = TokenSource(header)
    # An exec plugin may hand out a client certificate instead of a token: it expires as a whole.
    cert_expiry = expiry if exec_user and header is None else None
    return Credentials(
        server=str(cfg.host),
        ssl=context_ssl,
        token=token,
        proxy=getattr(cfg, "proxy", None) or None,
        user=user_name,
        context=context,
        origin=paths,
        default_namespace=str(loader.current_context["context"].get("namespace") or "default"),
        expiration=cert_expiry,
        reload=reload,
    )


def _has(node: Any, key: str) -> bool:
    """Whether a kubeconfig node (the library's ConfigNode, or None) sets ``key``."""
    return node is not None and bool(node.safe_get(key))


def user_path(loader: Any) -> str | None:
    """The kubeconfig file the current user came from (relative paths resolve against it)."""
    path = getattr(loader.user, "path", None)
    return str(path) if path else None


def _resolve(path: str, base_file: str | None) -> Path:
    candidate = Path(os.path.expanduser(path))
    if candidate.is_absolute() or base_file is None:
        return candidate
    return Path(os.path.dirname(os.path.abspath(base_file))) / candidate


def _loader_class() -> type[Any]:
    from kubernetes.config.kube_config import KubeConfigLoader

    class Loader(KubeConfigLoader):  # type: ignore[misc]
        """The library's loader, except that a failing exec plugin is an error.

        The library logs the plugin's failure and carries on without credentials, so every
        request then runs as ``system:anonymous`` — the confusing 403 users report.
        """

        @property
        def user(self) -> Any:
            return self._user

        def _load_from_exec_plugin(self) -> Any:
            if not self._user or "exec" not in self._user:
                return None
            capture = _ErrorCapture()
            root = logging.getLogger()
            root.addHandler(capture)
            try:
                result = super()._load_from_exec_plugin()
            finally:
                root.removeHandler(capture)
            if not result:
                command = self._user["exec"].safe_get("command") or "?"
                user = self._current_context["context"].safe_get("user")
                problem = capture.message or "it printed no token and no client certificate"
                raise LoginError(f"exec plugin {command!r} of user {user!r} failed: {problem}")
            return result

    return Loader


class _ErrorCapture(logging.Handler):
    """Collects the loader's logged error about an exec plugin (it logs instead of raising)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message = ""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("exec") and not self.message:
            self.message = _one_line(text)


def _run_loader(merged: Any, context: str, paths: str) -> tuple[Any, Any, ssl.SSLContext]:
    """Run the library's loader once; returns its configuration, itself and our TLS context.

    Inline key material lands in a private folder made for this call and is gone when it
    returns (the TLS context keeps what it needs in memory).
    """
    from kubernetes.client import Configuration
    from kubernetes.config import kube_config
    from kubernetes.config.config_exception import ConfigException

    with tempfile.TemporaryDirectory(prefix="nsbaseline-login-") as private:
        os.chmod(private, 0o700)
        loader = _loader_class()(
            config_dict=merged,
            active_context=context,
            config_base_path=None,
            temp_file_path=private,
        )
        cfg = type.__call__(Configuration)
        try:
            loader.load_and_set(cfg)
            context_ssl = _ssl_context(cfg)
        except LoginError:
            raise
        except (ConfigException, OSError, ValueError, KeyError, ssl.SSLError) as exc:
            raise LoginError(
                f"cannot use context {context!r} of kubeconfig {paths}: {_one_line(exc)}"
            ) from exc
        finally:
            # The library caches the names of the files it wrote; forget them with the files.
            kube_config._cleanup_temp_files()
    return cfg, loader, context_ssl


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
        context_ssl = _ssl_context(cfg)
    except (ConfigException, OSError, ssl.SSLError) as exc:
        raise LoginError(f"cannot use the pod's ServiceAccount: {_one_line(exc)}") from exc
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


# ----- TLS ------------------------------------------------------------------------------------
class _ServerNameContext(ssl.SSLContext):
    """A TLS context that checks the server against ``tls-server-name``, not the URL's host.

    asyncio hands the URL's host to ``wrap_bio``; kubeconfigs that reach the API server by an
    address its certificate does not name say which name to expect instead.
    """

    server_name: str = ""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)


def _ssl_context(cfg: Any) -> ssl.SSLContext:
    server_name = getattr(cfg, "tls_server_name", None)
    context: ssl.SSLContext
    if server_name:
        named = _ServerNameContext(ssl.PROTOCOL_TLS_CLIENT)
        named.server_name = str(server_name)
        context = named
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cfg.verify_ssl:
        if cfg.ssl_ca_cert:
            context.load_verify_locations(cafile=cfg.ssl_ca_cert)
        else:
            context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cfg.cert_file:
        context.load_cert_chain(certfile=cfg.cert_file, keyfile=cfg.key_file or None)
    return context


def _aware(value: Any) -> datetime.datetime | None:
    if not isinstance(value, datetime.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def _one_line(exc: BaseException | str) -> str:
    text = str(exc).strip() or (type(exc).__name__ if isinstance(exc, BaseException) else "")
    return " ".join(text.split())


__all__ = ["Credentials", "LoginError", "TokenSource", "load"]
