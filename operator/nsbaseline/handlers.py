"""Kopf wiring: the operator's life, login, peering and BaselinePolicies; the rest our watches.

Kopf runs the operator: start-up and clean-up, its login (ours), the peering of replicas, and the
BaselinePolicies (``@kopf.index`` and ``@kopf.on.event``: neither stores progress on the watched
objects nor posts Kopf's own Events, so the operator never writes to a BaselinePolicy except its
status). No reconcile runs before the namespaces are listed whole and Kopf's policy index holds
every policy the API server lists (:mod:`nsbaseline.reconcile.policy_sync`), so the first
reconcile already sees the whole cluster: a restart finds everything in place and writes nothing.

Namespaces and our NetworkPolicies come through watches of our own feeding compact mirrors
(:mod:`nsbaseline.reconcile.namespaces`, :mod:`nsbaseline.reconcile.objects`): Kopf's per-object
workers and memory were most of the operator's CPU per event and of its memory, growing with
every object in the cluster (measured in bench/README.md).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from nsbaseline import kopfpatch, kube, names
from nsbaseline.kube import watch
from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.reconcile import policy_sync
from nsbaseline.reconcile.gate import ActiveGate
from nsbaseline.reconcile.namespaces import ObservedNamespaces
from nsbaseline.reconcile.reconciler import Reconciler, Settings

logger = logging.getLogger("nsbaseline")

# Kopf's start-up with indexes is O(objects^2) without it (see kopfpatch); patch on import.
kopfpatch.apply()

NETWORK_POLICIES = "/apis/networking.k8s.io/v1/networkpolicies"
NAMESPACES = "/api/v1/namespaces"
PEERINGS = "/apis/kopf.dev/v1/clusterkopfpeerings"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


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
    namespaces: ObservedNamespaces | None = None

    def login(self) -> kube.Credentials:
        """Load credentials afresh (at start, and whenever Kopf or our client saw a 401)."""
        self.credentials = kube.load(self.kubeconfig, self.context)
        return self.credentials


RUNTIME = Runtime()


class WatchedCluster:
    """:class:`~nsbaseline.reconcile.reconciler.ClusterView`: our namespace mirror, Kopf's index."""

    def __init__(
        self, namespaces: ObservedNamespaces, policies: kopf.Index[str, BaselinePolicy]
    ) -> None:
        self._namespaces = namespaces
        self._policies = policies

    def namespace(self, name: str) -> Namespace | None:
        return self._namespaces.namespace(name)

    def namespace_names(self) -> Iterable[str]:
        return self._namespaces.namespace_names()

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
    # so a cap below the number of indexed objects deadlocks the start-up (worker_limit=50 when
    # namespaces were indexed, 404 of them: no reconcile in 12 minutes). Only BaselinePolicies
    # are Kopf's now, a handful of workers.
    settings.queueing.worker_limit = None
    settings.networking.error_backoffs = EndlessBackoffs()
    settings.persistence.diffbase_storage = EventOnlyDiffBase()


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
    """Tune Kopf, then start our side: the NetworkPolicy watch, the peering gate, the workers.

    Kopf hands every handler its indexes as keyword arguments named after the index functions.
    """
    _tune(settings)
    policy_index: kopf.Index[str, BaselinePolicy] = kwargs["policy_index"]
    client = kube.KubeClient(RUNTIME.credentials or RUNTIME.login(), relogin=RUNTIME.login)
    if RUNTIME.peering is not None:
        await _ensure_peering_object(client, RUNTIME.peering)

    namespaces = ObservedNamespaces(
        lambda name: reconciler.enqueue(name), lambda name: reconciler.enqueue_new(name)
    )
    RUNTIME.namespaces = namespaces
    state = WatchedCluster(namespaces, policy_index)
    syncs: set[asyncio.Task[None]] = set()

    async def policies_indexed() -> None:
        """Trust Kopf's policy index only once it holds what the API server lists."""
        await policy_sync.until_indexed(client.list_policies, state.policies)
        await namespaces.ready.wait()
        reconciler.cluster_ready.set()

    def sync_policies() -> None:
        # Only the latest check may open the gate: one begun before a pause compared a stale index.
        for earlier in syncs:
            earlier.cancel()
        reconciler.cluster_ready.clear()
        task = asyncio.get_running_loop().create_task(policies_indexed())
        syncs.add(task)
        task.add_done_callback(syncs.discard)

    def activated(active: bool) -> None:
        if active and RUNTIME.reconciler is not None:
            # Kopf lists BaselinePolicies anew when it resumes: wait until it has.
            sync_policies()
            reconciler.enqueue_all()

    gate = ActiveGate(RUNTIME.peering, RUNTIME.identity, RUNTIME.priority, activated)
    reconciler = Reconciler(client, state, RUNTIME.settings, gate=gate)
    RUNTIME.reconciler = reconciler
    selector = {"labelSelector": f"{names.MANAGED_BY_LABEL}={names.MANAGED_BY_VALUE}"}

    async def watches() -> None:
        sync_policies()
        tasks = [
            watch.run(client, NAMESPACES, namespaces),
            watch.run(client, NETWORK_POLICIES, reconciler.objects, selector),
        ]
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


# ----- the policy index and trigger ---------------------------------------------------------
# Async on purpose: Kopf runs sync handlers in a thread pool, and a thread hop per event cost CPU
# and spread allocations over malloc arenas that never shrink.
@kopf.index(names.GROUP, names.VERSION, names.PLURAL)
async def policy_index(name: str, body: kopf.Body, **_: Any) -> dict[str, BaselinePolicy]:
    return {name: BaselinePolicy.from_body(body)}


@kopf.on.event(names.GROUP, names.VERSION, names.PLURAL)
async def policy_event(name: str, body: kopf.Body, type: str | None, **_: Any) -> None:
    await policy_seen(name, body, type)


async def policy_seen(name: str, body: Mapping[str, Any], type: str | None) -> None:
    """A BaselinePolicy event (Kopf's listing has type None), handed to the reconciler."""
    reconciler, namespaces = RUNTIME.reconciler, RUNTIME.namespaces
    if reconciler is None or namespaces is None:
        return
    # Kopf lists policies while our namespace listing may still run: a new generation must
    # await every namespace, not the few known yet, or its status is written early and twice.
    await namespaces.ready.wait()
    policy = None if type == "DELETED" else BaselinePolicy.from_body(body)
    reconciler.policy_changed(policy, name)
