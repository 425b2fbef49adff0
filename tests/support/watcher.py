"""An independent witness of every NetworkPolicy the API server stores, moment by moment.

The fault tests must prove a negative: that no namespace was ever left denying egress without its
DNS allowance, and that no baseline ever went missing. Polling with kubectl could miss a window
of a few milliseconds; a watch cannot. The API server delivers the writes of one resource in
resourceVersion order, so replaying the watch reproduces every state each namespace went through,
including states that lasted a single write.

This module deliberately does not share code with the operator: it reads the kubeconfig itself,
talks HTTP to the API server with the standard library, and decides what is a "deny" and what is
a "DNS allowance" from the NetworkPolicy specs, not from our names or labels (so it also holds
when an upgrade renames the pieces).

Watch restarts are handled the Kubernetes way: a stream that ends (server timeout, dropped
connection) is resumed from the last resourceVersion seen, bookmarks included, so nothing is
missed. Only when the server no longer has that version (410 Gone, or an API server that was
restarted) is the collection listed again; the states between the last event and the new list
are then unknowable, and the relist is counted in :attr:`PolicyWatcher.relists` and recorded in
:attr:`PolicyWatcher.blind_spots` so a test can decide whether it can accept the blind spot.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import json
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MANAGED_BY = "app.kubernetes.io/managed-by"
PATH = "/apis/networking.k8s.io/v1/networkpolicies"


# ----- what a NetworkPolicy means ------------------------------------------------------------
def is_ours(obj: Mapping[str, Any]) -> bool:
    return (obj.get("metadata", {}).get("labels") or {}).get(MANAGED_BY) == "nsbaseline"


def denies_egress(obj: Mapping[str, Any]) -> bool:
    """Selects every pod, isolates egress and allows none: a default-deny for egress."""
    spec = obj.get("spec") or {}
    return (
        not (spec.get("podSelector") or {})
        and "Egress" in (spec.get("policyTypes") or [])
        and not spec.get("egress")
    )


def denies_ingress(obj: Mapping[str, Any]) -> bool:
    spec = obj.get("spec") or {}
    return (
        not (spec.get("podSelector") or {})
        and "Ingress" in (spec.get("policyTypes") or [])
        and not spec.get("ingress")
    )


def allows_dns(obj: Mapping[str, Any]) -> bool:
    """Selects every pod and allows egress to port 53 over UDP (what name resolution needs)."""
    spec = obj.get("spec") or {}
    if (spec.get("podSelector") or {}) or "Egress" not in (spec.get("policyTypes") or []):
        return False
    for rule in spec.get("egress") or []:
        for port in rule.get("ports") or []:
            if port.get("port") == 53 and port.get("protocol", "TCP") == "UDP":
                return True
    return False


@dataclass(frozen=True)
class Moment:
    """The state of our NetworkPolicies in one namespace right after one write."""

    at: float  # time.monotonic() when the watcher saw it
    namespace: str
    names: frozenset[str]
    deny_egress: bool
    deny_ingress: bool
    dns: bool
    event: str  # the watch event that produced it: ADDED, MODIFIED, DELETED or RELIST
    resource_version: str

    @property
    def deny_without_dns(self) -> bool:
        return self.deny_egress and not self.dns


@dataclass(frozen=True)
class BlindSpot:
    """A span the watch could not see (relist after 410 Gone or an API server restart)."""

    lost_at: float
    relisted_at: float
    reason: str


# ----- connection --------------------------------------------------------------------------
class _Connection:
    """Server, TLS context and headers from a kubeconfig (token or client-certificate auth)."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        context_name = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        url = urllib.parse.urlsplit(cluster["server"])
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 443
        self.prefix = url.path.rstrip("/")
        self._tmp = tempfile.TemporaryDirectory(prefix="watcher-")
        tmp = Path(self._tmp.name)

        def material(key: str) -> str | None:
            if cluster.get(key) or user.get(key):
                return str(cluster.get(key) or user.get(key))
            data = cluster.get(key + "-data") or user.get(key + "-data")
            if data:
                path = tmp / key
                path.write_bytes(base64.b64decode(data))
                return str(path)
            return None

        ca = material("certificate-authority")
        self.context = ssl.create_default_context(cafile=ca)
        if cluster.get("insecure-skip-tls-verify"):
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE
        cert, key = material("client-certificate"), material("client-key")
        if cert and key:
            self.context.load_cert_chain(cert, key)
        self.headers = {"Accept": "application/json"}
        if user.get("token"):
            self.headers["Authorization"] = f"Bearer {user['token']}"
        elif not (cert and key):
            raise ValueError(f"{kubeconfig}: the watcher supports token or client-cert users only")

    def open(self, path: str, timeout: float) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(
            self.host, self.port, context=self.context, timeout=timeout
        )
        conn.request("GET", self.prefix + path, headers=self.headers)
        return conn

    def close(self) -> None:
        self._tmp.cleanup()


class WatchGone(Exception):
    """The resourceVersion we hold is too old for the server: only a relist can continue."""


# ----- the watcher -------------------------------------------------------------------------
class PolicyWatcher:
    """Records, per namespace, our NetworkPolicies after every write, in a background thread.

    Use as a context manager (or call :meth:`start` / :meth:`stop`). Everything recorded is in
    :attr:`moments` (only moments in which a namespace's state of ours changed).
    """

    def __init__(
        self,
        kubeconfig: Path,
        namespace_filter: Callable[[str], bool] = lambda _: True,
        watch_timeout: int = 60,
    ) -> None:
        self._conn = _Connection(kubeconfig)
        self._filter = namespace_filter
        self._watch_timeout = watch_timeout
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, dict[str, Any]]] = {}  # ns -> name -> object
        self._last: dict[str, Moment] = {}
        self._stop = threading.Event()
        self._listed = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: http.client.HTTPSConnection | None = None
        self.moments: list[Moment] = []
        self.relists = 0
        self.restarts = 0
        self.errors: list[str] = []
        self.blind_spots: list[BlindSpot] = []
        self.resource_version = ""

    # ----- lifecycle --------------------------------------------------------------------
    def start(self, timeout: float = 60) -> PolicyWatcher:
        self._thread = threading.Thread(target=self._run, name="policy-watcher", daemon=True)
        self._thread.start()
        if not self._listed.wait(timeout):
            raise AssertionError(f"watcher could not list NetworkPolicies: {self.errors[-3:]}")
        return self

    def stop(self) -> None:
        self._stop.set()
        live = self._live
        if live is not None and live.sock is not None:
            with contextlib.suppress(OSError):
                live.sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._conn.close()

    def __enter__(self) -> PolicyWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- queries ------------------------------------------------------------------------
    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The current state as the watch knows it: namespace -> name -> object (ours only)."""
        with self._lock:
            return {ns: dict(objs) for ns, objs in self._objects.items() if objs}

    def violations(self, since: float = 0.0) -> list[Moment]:
        """Every moment at which a namespace denied egress without allowing DNS."""
        with self._lock:
            return [m for m in self.moments if m.at >= since and m.deny_without_dns]

    def history(self, namespace: str) -> list[Moment]:
        with self._lock:
            return [m for m in self.moments if m.namespace == namespace]

    def lost(self, namespaces: Iterable[str], what: Callable[[Moment], bool]) -> list[Moment]:
        """Moments at which a namespace that had shown ``what`` no longer did.

        For example ``lost(nss, lambda m: m.deny_egress)`` lists every window without
        default-deny after a namespace first got one.
        """
        wanted = set(namespaces)
        seen: set[str] = set()
        out = []
        with self._lock:
            for m in self.moments:
                if m.namespace not in wanted:
                    continue
                if what(m):
                    seen.add(m.namespace)
                elif m.namespace in seen:
                    out.append(m)
        return out

    # ----- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.2
        lost_at: float | None = None
        reason = "initial list"
        while not self._stop.is_set():
            try:
                if not self.resource_version:
                    self._relist(lost_at, reason)
                    lost_at = None
                self._watch()
                self.restarts += 1
                backoff = 0.2
            except WatchGone as exc:
                lost_at, reason = time.monotonic(), f"410 Gone: {exc}"
                self.resource_version = ""
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if self._stop.is_set():
                    break
                self.errors.append(f"{type(exc).__name__}: {exc}")
                self.restarts += 1
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _relist(self, lost_at: float | None, reason: str) -> None:
        conn = self._conn.open(PATH, timeout=60)
        try:
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise OSError(f"list returned {resp.status}: {body[:200]!r}")
        listing = json.loads(body)
        fresh: dict[str, dict[str, dict[str, Any]]] = {}
        for obj in listing.get("items", []):
            ns = obj["metadata"]["namespace"]
            if is_ours(obj) and self._filter(ns):
                fresh.setdefault(ns, {})[obj["metadata"]["name"]] = obj
        rv = str(listing["metadata"]["resourceVersion"])
        now = time.monotonic()
        with self._lock:
            if self.relists:
                self.blind_spots.append(BlindSpot(lost_at or now, now, reason))
            self.relists += 1
            for ns in set(self._objects) | set(fresh):
                self._objects[ns] = fresh.get(ns, {})
                self._record(ns, "RELIST", rv, now)
            self.resource_version = rv
        self._listed.set()

    def _watch(self) -> None:
        query = urllib.parse.urlencode(
            {
                "watch": "true",
                "allowWatchBookmarks": "true",
                "resourceVersion": self.resource_version,
                "timeoutSeconds": str(self._watch_timeout),
            }
        )
        conn = self._conn.open(f"{PATH}?{query}", timeout=self._watch_timeout + 30)
        self._live = conn
        try:
            resp = conn.getresponse()
            if resp.status == 410:
                raise WatchGone(resp.read()[:200].decode(errors="replace"))
            if resp.status != 200:
                raise OSError(f"watch returned {resp.status}: {resp.read()[:200]!r}")
            while not self._stop.is_set():
                line = resp.readline()
                if not line:
                    return  # the server ended the stream; resume from resource_version
                self._apply(json.loads(line))
        finally:
            self._live = None
            conn.close()

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchGone(str(obj.get("message")))
            raise OSError(f"watch error: {obj.get('message')}")
        rv = str(obj.get("metadata", {}).get("resourceVersion", ""))
        if kind == "BOOKMARK":
            self.resource_version = rv
            return
        meta = obj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        now = time.monotonic()
        with self._lock:
            self.resource_version = rv
            if not self._filter(ns):
                return
            objs = self._objects.setdefault(ns, {})
            if kind == "DELETED" or not is_ours(obj):
                # An object that lost our label is no longer one of ours for the invariant.
                if objs.pop(name, None) is None:
                    return
            else:
                objs[name] = obj
            self._record(ns, str(kind), rv, now)

    def _record(self, ns: str, event: str, rv: str, now: float) -> None:
        objs = list(self._objects.get(ns, {}).values())
        moment = Moment(
            at=now,
            namespace=ns,
            names=frozenset(o["metadata"]["name"] for o in objs),
            deny_egress=any(denies_egress(o) for o in objs),
            deny_ingress=any(denies_ingress(o) for o in objs),
            dns=any(allows_dns(o) for o in objs),
            event=event,
            resource_version=rv,
        )
        previous = self._last.get(ns)
        if previous is not None and (
            previous.names,
            previous.deny_egress,
            previous.deny_ingress,
            previous.dns,
        ) == (moment.names, moment.deny_egress, moment.deny_ingress, moment.dns):
            return
        if previous is None and not moment.names:
            return
        self._last[ns] = moment
        self.moments.append(moment)


# ----- expectations -----------------------------------------------------------------------
# Separate from the watcher on purpose: what a converged namespace holds is computed by the
# operator's own pure core (same templates, same canonical form), imported only here.


def expected_objects(
    policy_body: Mapping[str, Any], namespaces: list[str], labels: Mapping[str, str]
) -> dict[str, dict[str, Mapping[str, Any]]]:
    """namespace -> object name -> desired body, rendered by the operator's own pure core."""
    from nsbaseline.model import BaselinePolicy, Namespace
    from nsbaseline.policy_render import render_policy
    from nsbaseline.render import TemplateSet

    policy = BaselinePolicy.from_body(policy_body)
    templates = TemplateSet()
    out = {}
    for ns in namespaces:
        info = Namespace(ns, labels).with_name_label()
        render = render_policy(templates, info, policy, datetime.datetime.now(datetime.UTC))
        assert not render.errors, render.errors
        out[ns] = {o.name: o.body for o in render.objects}
    return out


def mismatches(
    actual: Mapping[str, Mapping[str, Mapping[str, Any]]],
    expected: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> list[str]:
    """Namespaces whose objects differ from the desired set, with a reason (empty: converged)."""
    from nsbaseline import canonical
    from nsbaseline.plan import HASH_ANNOTATION, desired_hash

    problems = []
    for ns, want in expected.items():
        have = actual.get(ns, {})
        if set(have) != set(want):
            problems.append(f"{ns}: has {sorted(have)}, wants {sorted(want)}")
            continue
        for name, body in want.items():
            obj = have[name]
            annotations = obj["metadata"].get("annotations") or {}
            if canonical.spec(obj["spec"]) != body["spec"]:
                problems.append(f"{ns}/{name}: spec differs")
            elif annotations.get(HASH_ANNOTATION) != desired_hash(body):
                problems.append(f"{ns}/{name}: applied-hash differs")
    return problems


__all__ = [
    "BlindSpot",
    "Moment",
    "PolicyWatcher",
    "allows_dns",
    "denies_egress",
    "expected_objects",
    "is_ours",
    "mismatches",
]
