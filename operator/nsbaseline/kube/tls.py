"""TLS contexts from a loaded kubeconfig: CA, client certificate, insecure, tls-server-name."""

from __future__ import annotations

import ssl
from typing import Any


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


def ssl_context(cfg: Any) -> ssl.SSLContext:
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


__all__ = ["ssl_context"]
