"""Kopf wiring: Namespaces and BaselinePolicies through Kopf; our NetworkPolicies through our watch.

Only ``@kopf.index`` and ``@kopf.on.event`` are used for resources. Neither stores progress on the
watched objects nor posts Kopf's own Events, so the operator never writes to Namespaces and never
to a BaselinePolicy except its status. Kopf runs event handlers only after every index has
finished its initial listing, so the first reconcile already sees the whole cluster: a restart
finds everything in place and writes nothing.

NetworkPolicies are not Kopf's: a label-selected watch of our own objects feeds a compact mirror
(:mod:`nsbaseline.reconcile.objects`) — per-event processing in Kopf cost more than everything
else the operator does per object, and its per-object memory grew with every NetworkPolicy in
the cluster.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from nsbaseline import kopfpatch, kube, names
from nsbaseline.kube import watch
from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.reconcile.gate import ActiveGate
from nsbaseline.reconcile.reconciler import Reconciler, Settings

logger = logging.getLogger("nsbaseline")

# Kopf's start-up with indexes is O(objects^2) without it (see kopfpatch); patch on import.
kopfpatch.apply()

NETWORK_POLICIES = "/apis/networking.k8s.io/v1/networkpolicies"
PEERINGS = "/apis/kopf.dev/v1/clusterkopfpeerings"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
#: After becoming active, how long to wait for Kopf's fresh listing before trusting its indexes.
RESUME_SETTLE = 10.0


@dataclass
class Runtime:
    """Process-wide wiring, configured by the CLI before Kopf starts."""

    settings: Settings = field(default_factory=Settings)
    reconciler: Reconciler | None = None
    #: ``--kubeconfig`` and ``--context`` of ``nsbaseline run`` (None: kubectl's defaults).
    kubeconfig: str | None = None
    context: str | None = None
    credentials: kube.Credentials | None = None
    #: Peering: the shared object's name (None: standalone), our identity and priority.
    peering: str | None = None
    identity: str = ""
    priority: int = 0
    last_listing: float = 0.0

    def login(self) -> kube.Credentials:
        """Load credentials afresh (at start, and whenever Kopf or our client saw a 401)."""
        self.credentials = kube.load(self.kubeconfig, self.context)
        return self.credentials


RUNTIME = Runtime()


class KopfIndexState:
    """:class:`~nsbaseline.reconcile.reconciler.ClusterView` over Kopf's in-memory indexes."""

    def __init__(
        self, namespaces: kopf.Index[str, Namespace], policies: kopf.Index[str, BaselinePolicy]
    ) -> None:
        self._namespaces = namespaces
        self._policies = policies

    def namespace(self, name: str) -> Namespace | None:
        store = self._namespaces.get(name)
        return next(iter(store), None) if store is not None else None

    def namespace_names(self) -> Iterable[str]:
        return list(self._namespaces.keys())

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
    handled state — work only change-detecting handlers (create/update/resume) use. Adding such
    a handler later requires removing this storage.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, None)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _tune(settings: kopf.OperatorSettings) -> None:
    """Kopf settings that keep the operator write-free on objects it only reads, and lean."""
    settings.posting.enabled = False  # we post our own, meaningful Events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.watching.chunk_size = 500  # initial listings paginated, never one huge response
    settings.execution.max_workers = 4
    # No cap on Kopf's per-object workers, on purpose (measured, docs/sizing.md): with
    # ``@kopf.index`` handlers every object's first worker waits until *all* objects are indexed,
    # so a cap below the number of namespaces deadlocks the start-up (worker_limit=50, 404
    # namespaces: no reconcile in 12 minutes). A shorter idle_timeout or MALLOC_ARENA_MAX=2 did
    # not move the re-sync peak either (280 MB at 10,104 namespaces, all three).
    settings.queueing.worker_limit = None
    settings.networking.error_backoffs = EndlessBackoffs()
    settings.persistence.diffbase_storage = EventOnlyDiffBase()


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
    """Tune Kopf, then start our side: the NetworkPolicy watch, the peering gate, the workers.

    Kopf hands every handler its indexes as keyword arguments named after the index functions.
    """
    _tune(settings)
    namespace_index: kopf.Index[str, Namespace] = kwargs["namespace_index"]
    policy_index: kopf.Index[str, BaselinePolicy] = kwargs["policy_index"]
    client = kube.KubeClient(RUNTIME.credentials or RUNTIME.login(), relogin=RUNTIME.login)
    if RUNTIME.peering is not None:
        await _ensure_peering_object(client, RUNTIME.peering)

    def activated(active: bool) -> None:
        reconciler = RUNTIME.reconciler
        if active and reconciler is not None:
            # Kopf relists Namespaces and BaselinePolicies when it resumes; wait for that.
            if time.monotonic() - RUNTIME.last_listing > 3.0:
                reconciler.cluster_ready.clear()
                asyncio.get_running_loop().call_later(RESUME_SETTLE, reconciler.cluster_ready.set)
            reconciler.enqueue_all()

    gate = ActiveGate(RUNTIME.peering, RUNTIME.identity, RUNTIME.priority, activated)
    state = KopfIndexState(namespace_index, policy_index)
    reconciler = Reconciler(client, state, RUNTIME.settings, gate=gate)
    RUNTIME.reconciler = reconciler
    selector = {"labelSelector": f"{names.MANAGED_BY_LABEL}={names.MANAGED_BY_VALUE}"}

    async def watches() -> None:
        tasks = [watch.run(client, NETWORK_POLICIES, reconciler.objects, selector)]
        if RUNTIME.peering is not None:
            by_name = {"fieldSelector": f"metadata.name={RUNTIME.peering}"}
            tasks.append(watch.run(client, PEERINGS, gate, by_name))
        if reconciler.reports is not None:  # the report CRD, installed now or later
            presence = reconciler.reports.presence
            tasks.append(watch.run(client, CRDS, presence, presence.params))
        await asyncio.gather(*tasks)

    reconciler.start(watches)


async def _ensure_peering_object(client: kube.KubeClient, name: str) -> None:
    """Create the ClusterKopfPeering the replicas share when it is missing.

    Kopf never creates it, and a replica in mandatory peering mode stays paused without it. The
    install cannot carry it either: one ``kubectl apply -k`` cannot create a CRD and an object of
    that kind together.
    """
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    try:
        await client.request("POST", PEERINGS, body=body)
        logger.info("created ClusterKopfPeering %s", name)
    except kube.ApiError as exc:
        if exc.status != 409:  # 409: it exists already, the normal case
            raise


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    reconciler, RUNTIME.reconciler = RUNTIME.reconciler, None
    if reconciler is not None:
        await reconciler.stop()
    kopfpatch.cancel_heralds()


# ----- indexes ------------------------------------------------------------------------------
# Async on purpose: Kopf runs sync handlers in a thread pool, and a thread hop per event cost CPU
# and spread allocations over malloc arenas that never shrink (hundreds of MB at 10k namespaces).
@kopf.index("namespaces")
async def namespace_index(name: str, body: kopf.Body, **_: Any) -> dict[str, Namespace]:
    return {name: Namespace.from_body(body)}


@kopf.index(names.GROUP, names.VERSION, names.PLURAL)
async def policy_index(name: str, body: kopf.Body, **_: Any) -> dict[str, BaselinePolicy]:
    return {name: BaselinePolicy.from_body(body)}


# ----- triggers -----------------------------------------------------------------------------
@kopf.on.event("namespaces")
async def namespace_event(name: str, type: str | None, **_: Any) -> None:
    reconciler = RUNTIME.reconciler
    if reconciler is None:
        return
    if type is None:  # Kopf's (re)listing: its indexes are current from here on
        RUNTIME.last_listing = time.monotonic()
        reconciler.cluster_ready.set()
    reconciler.enqueue(name)


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)
async def policy_event(name: str, body: kopf.Body, type: str | None, **_: Any) -> None:
    reconciler = RUNTIME.reconciler
    if reconciler is None:
        return
    policy = None if type == "DELETED" else BaselinePolicy.from_body(body)
    reconciler.policy_changed(policy, name)
