"""Running the official ``kubernetes`` client's kubeconfig loader, and reading what it found.

:mod:`nsbaseline.kube.login` turns a kubeconfig context into credentials; this module holds what
that needs from the library's internals, kept apart so the login reads as the order kubectl
follows while the loader's quirks live in one place: a subclass that makes a failing exec plugin
an error (the library only logs it), the run of the loader into a private folder, and the few
kubeconfig fields (``proxy-url``, the user's file, which keys are set) read off its nodes.

Secrets never linger: the loader writes inline certificate and key data to files only because
Python's ``ssl`` cannot load them from memory; :func:`run_loader` points it at a private (0700)
folder made for that one load, builds the TLS context, and removes the files and the folder at
once.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

from nsbaseline.kube.errors import LoginError
from nsbaseline.kube.tls import ssl_context


def cluster_proxy(loader: Any) -> str | None:
    """The ``proxy-url`` of the context's cluster in the kubeconfig, if it sets one."""
    cluster = getattr(loader, "_cluster", None)
    value = cluster.safe_get("proxy-url") if cluster is not None else None
    return str(value) if value else None


def node_sets(node: Any, key: str) -> bool:
    """Whether a kubeconfig node (the library's ConfigNode, or None) sets ``key``."""
    return node is not None and bool(node.safe_get(key))


def user_path(loader: Any) -> str | None:
    """The kubeconfig file the current user came from (relative paths resolve against it)."""
    path = getattr(loader.user, "path", None)
    return str(path) if path else None


def resolve_path(path: str, base_file: str | None) -> Path:
    """A path from a kubeconfig: relative ones resolve against the file that named them."""
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
            self.message = one_line(text)


def run_loader(merged: Any, context: str, paths: str) -> tuple[Any, Any, ssl.SSLContext]:
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
            context_ssl = ssl_context(cfg)
        except LoginError:
            raise
        except (ConfigException, OSError, ValueError, KeyError, ssl.SSLError) as exc:
            raise LoginError(
                f"cannot use context {context!r} of kubeconfig {paths}: {one_line(exc)}"
            ) from exc
        finally:
            # The library caches the names of the files it wrote; forget them with the files.
            kube_config._cleanup_temp_files()
    return cfg, loader, context_ssl


def one_line(exc: BaseException | str) -> str:
    """An exception or message as one line: for errors a person reads."""
    text = str(exc).strip() or (type(exc).__name__ if isinstance(exc, BaseException) else "")
    return " ".join(text.split())


__all__ = ["cluster_proxy", "node_sets", "one_line", "resolve_path", "run_loader", "user_path"]
