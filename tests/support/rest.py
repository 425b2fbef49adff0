"""A minimal keep-alive REST client for tests that time admission, one request at a time.

kubectl costs tens of milliseconds per call in process start-up alone, which would drown what
the pod gate tests measure (how soon after its namespace a pod is admitted). This client reuses
one HTTPS connection and the kubeconfig handling of :mod:`tests.support.watcher`.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

from tests.support.watcher import _Connection


class Rest:
    """JSON requests to the API server with a kubeconfig's identity."""

    def __init__(self, kubeconfig: Path, timeout: float = 30) -> None:
        self._conn = _Connection(kubeconfig)
        self._timeout = timeout
        self._http: http.client.HTTPSConnection | None = None

    def request(
        self, method: str, path: str, body: Any = None, query: str = ""
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, decoded body); one retry on a connection the server closed."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {**self._conn.headers, "Content-Type": "application/json"}
        url = self._conn.prefix + path + (f"?{query}" if query else "")
        for attempt in (1, 2):
            if self._http is None:
                self._http = http.client.HTTPSConnection(
                    self._conn.host,
                    self._conn.port,
                    context=self._conn.context,
                    timeout=self._timeout,
                )
            try:
                self._http.request(method, url, body=payload, headers=headers)
                resp = self._http.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                self._http.close()
                self._http = None
                if attempt == 2:
                    raise
                continue
            return resp.status, (json.loads(data) if data else {})
        raise AssertionError("unreachable")

    def create(self, path: str, obj: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self.request("POST", path, obj)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        self._conn.close()

    def __enter__(self) -> Rest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
