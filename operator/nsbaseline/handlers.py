"""Kopf wiring: watches feed in-memory indexes; every event only enqueues namespaces.

Only ``@kopf.index`` and ``@kopf.on.event`` are used. Neither stores progress on the watched
objects nor posts Kopf's own Events, so the operator never writes to Namespaces, never to a
NetworkPolicy it merely reads, and never to a BaselinePolicy except its status. Kopf runs event
handlers only after every index has finished its initial listing, so the first reconcile already
sees the whole cluster: a restart finds everything in place and writes nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from nsbaseline import kopfpatch, kube, names
from nsbaseline.model import BaselinePolicy, ManagedObject, Namespace, is_candidate
from nsbaseline.reconciler import Reconciler, Settings

logger = logging.getLogger("nsbaseline")

# Kopf's start-up with indexes is O(objects^2) without it (see kopfpatch); patch on import.
kopfpatch.apply()


@dataclass
class Runtime:
    """Process-wide wiring, configured by the CLI before Kopf starts."""

    settings: Settings = field(default_factory=Settings)
    reconciler: Reconciler | None = None
    #: ``--kubeconfig`` and ``--context`` of ``nsbaseline run`` (None: kubectl's defaults).
    kubeconfig: str | None = None
    context: str | None = None
    credentials: kube.Credentials | None = None

    def login(self) -> kube.Credentials:
        """Load credentials afresh (at start, and whenever Kopf or our client saw a 401)."""
        self.credentials = kube.load(self.kubeconfig, self.context)
        return self.credentials


RUNTIME = Runtime()


class KopfIndexState:
    """:class:`reconciler.StateView` over Kopf's in-memory indexes."""

    def __init__(self, namespaces: Any, objects: Any, policies: Any) -> None:
        self._namespaces = namespaces
        self._objects = objects
        self._policies = policies

    def namespace(self, name: str) -> Namespace | None:
        store = self._namespaces.get(name)
        return next(iter(store), None) if store is not None else None

    def namespace_names(self) -> Iterable[str]:
        return list(self._namespaces.keys())

    def objects_in(self, namespace: str) -> list[ManagedObject]:
        store = self._objects.get(namespace)
        return list(store) if store is not None else []

    def policies(self) -> dict[str, BaselinePolicy]:
        return {name: next(iter(store)) for name, store in self._policies.items() if store}


@kopf.on.login()
async def login(**_: Any) -> kopf.AiohttpSession:
    """Kopf's watches log in exactly as our own client and the CLI do (:mod:`nsbaseline.kube`).

    Kopf gets a session of ours: the same TLS, proxy and self-renewing Authorization header.
    Kopf calls this again after a 401, so rotated or revoked credentials are loaded anew.
    """
    try:
        # Loading may run an exec plugin: off the event loop. The session must be made on it.
        credentials = await asyncio.to_thread(RUNTIME.login)
    except kube.LoginError as exc:
        raise kopf.LoginError(str(exc)) from exc
    return kopf.AiohttpSession(
        server=credentials.server,
        aiohttp_session=credentials.session(limit=0),
        default_namespace=credentials.default_namespace,
        expiration=credentials.expiration,
    )


class EndlessBackoffs:
    """Retry delays for Kopf's requests that never run out.

    With Kopf's default (eight retries, about a minute) an API server outage longer than that
    makes a watch stream give up: its task dies, is only logged, and the operator keeps running
    blind to that resource until restarted. Watches must outlive any outage instead.
    """

    def __iter__(self) -> Iterator[float]:
        return itertools.chain((1, 1, 2, 3, 5), itertools.repeat(10))


class EventOnlyDiffBase(kopf.DiffBaseStorage):
    """No diff-base at all: this operator has only index and event handlers.

    Kopf builds a deep copy of every watched body on every event to diff it against the last
    handled state — work only change-detecting handlers (create/update/resume) use. Profiles of a
    1000-namespace rollout put it among Kopf's largest per-event costs. Adding such a handler
    later requires removing this storage.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, None)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
    """Kopf settings that keep the operator write-free on objects it only reads."""
    settings.posting.enabled = False  # we post our own, meaningful Events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.watching.chunk_size = 500  # initial listings paginated, never one huge response
    settings.execution.max_workers = 4
    settings.batching.worker_limit = None
    settings.networking.error_backoffs = EndlessBackoffs()
    settings.persistence.diffbase_storage = EventOnlyDiffBase()
    if settings.peering.mandatory and settings.peering.clusterwide:
        await _ensure_peering_object(settings)


async def _ensure_peering_object(settings: kopf.OperatorSettings) -> None:
    """Create the ClusterKopfPeering the replicas share when it is missing.

    Kopf never creates it, and a replica in mandatory peering mode stays paused without it. The
    install cannot carry it either: one ``kubectl apply -k`` cannot create a CRD and an object of
    that kind together. Startup handlers run before Kopf's login, so this logs in by itself.
    """
    name = settings.peering.name
    client = kube.KubeClient(RUNTIME.credentials or RUNTIME.login())
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    try:
        await client.request("POST", "/apis/kopf.dev/v1/clusterkopfpeerings", body=body)
        logger.info("created ClusterKopfPeering %s", name)
    except kube.ApiError as exc:
        if exc.status != 409:  # 409: it exists already, the normal case
            raise
    finally:
        await client.close()


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    if RUNTIME.reconciler is not None:
        await RUNTIME.reconciler.stop()
        RUNTIME.reconciler = None


def _reconciler(kwargs: dict[str, Any]) -> Reconciler:
    """Create the reconciler on the first event: by then every index is fully populated."""
    if RUNTIME.reconciler is None:
        namespace_index = kwargs["namespace_index"]
        object_index = kwargs["object_index"]
        policy_index = kwargs["policy_index"]

        client = kube.KubeClient(RUNTIME.credentials or RUNTIME.login(), relogin=RUNTIME.login)
        state = KopfIndexState(namespace_index, object_index, policy_index)
        RUNTIME.reconciler = Reconciler(client, state, RUNTIME.settings)
        RUNTIME.reconciler.start()
    return RUNTIME.reconciler


# ----- indexes ------------------------------------------------------------------------------
@kopf.index("namespaces")
def namespace_index(name: str, body: kopf.Body, **_: Any) -> dict[str, Namespace]:
    return {name: Namespace.from_body(body)}


@kopf.index("networking.k8s.io", "v1", "networkpolicies", when=lambda body, **_: is_candidate(body))
def object_index(
    namespace: str | None, body: kopf.Body, **_: Any
) -> dict[str | None, ManagedObject]:
    return {namespace: ManagedObject.from_body(body)}


@kopf.index(names.GROUP, names.VERSION, names.PLURAL)
def policy_index(name: str, body: kopf.Body, **_: Any) -> dict[str, BaselinePolicy]:
    return {name: BaselinePolicy.from_body(body)}


# ----- triggers -----------------------------------------------------------------------------
# Kopf passes each index as a keyword argument named after its function.


@kopf.on.event("namespaces")
async def namespace_event(name: str, **kwargs: Any) -> None:
    _reconciler(kwargs).enqueue(name)


@kopf.on.event(
    "networking.k8s.io", "v1", "networkpolicies", when=lambda body, **_: is_candidate(body)
)
async def network_policy_event(
    namespace: str | None, name: str, body: kopf.Body, type: str, **kwargs: Any
) -> None:
    reconciler = _reconciler(kwargs)
    if type is None:  # Kopf's listing, not a change: a relist may have left deleted objects
        reconciler.relisted()
    if namespace is None:
        return
    resource_version = str(body.metadata.get("resourceVersion", ""))
    echo = reconciler.observed(namespace, name, resource_version, type == "DELETED")
    if echo and type is not None:
        return  # the echo of our own write: nothing new to reconcile
    reconciler.enqueue(namespace)


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)
async def policy_event(name: str, body: kopf.Body, type: str, **kwargs: Any) -> None:
    policy = None if type == "DELETED" else BaselinePolicy.from_body(body)
    _reconciler(kwargs).policy_changed(policy, name)
