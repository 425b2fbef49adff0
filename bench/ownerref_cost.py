"""What a controller ownerReference costs the API server per server-side apply.

The bench's reference writes the same objects as the operator, ownerReference included
(``run.py --no-reference-owner`` leaves it out). This measures why that matters: on a local
control plane it creates two sets of NetworkPolicies by POST — one with an ownerReference to a
BaselinePolicy, one without, otherwise identical — then changes a port in every object of each
set by server-side apply (the bench's fan-out: the first apply onto POST-created objects), in
alternating order, and prints the kube-apiserver's CPU per object for each. Every round uses
fresh objects, so each fan-out is a first apply.

    .venv/bin/python bench/ownerref_cost.py [--objects 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))  # hack.localcluster

from kubeaccess import Access, Api, np_path  # noqa: E402
from run import REF_OWNER, cpu_seconds, install_crds  # noqa: E402

from hack.localcluster import LocalCluster  # noqa: E402
from nsbaseline import names  # noqa: E402

NAMESPACE = "ownerref-cost"
CONCURRENCY = 16


def policy(name: str, port: int, owner: dict[str, Any] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "labels": {names.MANAGED_BY_LABEL: "ownerref-cost"},
    }
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": port}]}],
        },
    }


async def send(api: Api, requests: list[tuple[str, str, dict[str, Any]]]) -> None:
    queue = list(requests)

    async def worker() -> None:
        while queue:
            verb, path, body = queue.pop()
            if verb == "APPLY":
                params = {"fieldManager": "ownerref-cost", "force": "true"}
                content_type = "application/apply-patch+yaml"
                await api.request("PATCH", path, body, params=params, content_type=content_type)
            else:
                await api.request(verb, path, body)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def measure(cluster: LocalCluster, objects: int, rounds: int) -> dict[str, list[float]]:
    api = Api(Access.from_kubeconfig(cluster.kubeconfig), limit=CONCURRENCY)
    apiserver = cluster.pids["kube-apiserver"]
    await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    owner_body = await api.request(
        "POST",
        f"/apis/{names.API_VERSION}/{names.PLURAL}",
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": REF_OWNER},
            "spec": {"namespaceSelector": {"matchLabels": {"ownerref-cost": "none"}}},
        },
    )
    owner = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": REF_OWNER,
        "uid": owner_body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": False,
    }
    found: dict[str, list[float]] = {"with ownerReference": [], "without": []}
    for round_ in range(rounds):
        sets = {
            "with ownerReference": (f"own-{round_}", owner),
            "without": (f"bare-{round_}", None),
        }
        for prefix, ref in sets.values():
            creates = [policy(f"{prefix}-{i}", 80, ref) for i in range(objects)]
            await send(api, [("POST", np_path(NAMESPACE), body) for body in creates])
        order = list(sets) if round_ % 2 == 0 else list(reversed(sets))
        for label in order:
            prefix, ref = sets[label]
            await asyncio.sleep(2.0)
            before = cpu_seconds(apiserver)
            changes = [policy(f"{prefix}-{i}", 81, ref) for i in range(objects)]
            await send(
                api, [("APPLY", np_path(NAMESPACE, b["metadata"]["name"]), b) for b in changes]
            )
            await asyncio.sleep(1.0)  # the watch cache and the GC's share of the same work
            found[label].append((cpu_seconds(apiserver) - before) * 1000 / objects)
            print(f"round {round_ + 1}: {label}: {found[label][-1]:.2f} ms", flush=True)
    await api.close()
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--objects", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ownerref-cost-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster")
        cluster.start()
        try:
            assert cluster.bindir is not None
            kubectl = str(cluster.bindir / "kubectl")
            install_crds(cluster.kubeconfig, kubectl, cluster, BENCH.parent / "crds")
            started = time.time()
            found = asyncio.run(measure(cluster, args.objects, args.rounds))
        finally:
            cluster.stop()
    with_, without = (statistics.median(found[k]) for k in ("with ownerReference", "without"))
    print(
        f"kube-apiserver CPU per first server-side apply, median of {args.rounds} rounds of "
        f"{args.objects}: with ownerReference {with_:.2f} ms, without {without:.2f} ms "
        f"({with_ / without:.2f}x); {time.time() - started:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
