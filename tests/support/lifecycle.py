"""Groups of namespaces under continuous probes, for the dataplane's lifecycle scenarios.

A :class:`Fleet` is N namespaces with one pod each, and the record of what the test did to them
and when: opting in (for the opt-in -> isolation latency) and lifting the isolation on purpose
(opt-out, policy deletion, an exception on default-deny), so that
:func:`hack.dataplane.probes.summarize` counts as violations only the forbidden connections that
succeeded while the namespace was meant to be isolated.
"""

from __future__ import annotations

import contextlib
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from hack.dataplane.dataplane import Dataplane, Pod
from hack.dataplane.probes import (
    DENIED,
    ContinuousProber,
    Figures,
    Lane,
    LaneRecord,
    summarize,
)
from tests.support.dataplane import Shared, lanes_for
from tests.support.kube import Cluster, OperatorProcess

OPT_IN = "life.nsbaseline.io/opt-in"
INF = float("inf")


class Fleet:
    """``count`` namespaces ``<prefix>-NN``, each with a pod ``web``, not opted in yet; opting
    in sets ``label`` (key, value) on the namespace."""

    def __init__(
        self,
        cluster: Cluster,
        dp: Dataplane,
        shared: Shared,
        prefix: str,
        count: int,
        label: tuple[str, str] = (OPT_IN, "true"),
    ) -> None:
        self.cluster, self.dp, self.shared = cluster, dp, shared
        self.label = label
        self.names = [f"{prefix}-{i:02d}" for i in range(count)]
        cluster.apply(
            *(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                for ns in self.names
            )
        )
        self.pods: dict[str, Pod] = {
            ns: dp.create_pod(ns, "web", {"app": "web"}) for ns in self.names
        }
        dp.wait_protected(list(self.pods.values()))
        self.opted_in_at: dict[str, float] = {}
        self.released: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def lanes(self, names: Iterable[str] | None = None) -> list[Lane]:
        chosen = [self.pods[ns] for ns in (names or self.names)]
        return lanes_for(self.dp, chosen, self.shared.dns, self.shared.outsider)

    def _label(self, ns: str, value: str | None) -> float:
        """Set (or remove) the opt-in label through the API; the time just before the write."""
        at = time.time()
        labels = {self.label[0]: value}
        self.dp.api.merge_patch(f"/api/v1/namespaces/{ns}", {"metadata": {"labels": labels}})
        return at

    def opt_in(self, ns: str) -> None:
        self.opted_in_at[ns] = self._label(ns, self.label[1])

    def opt_out(self, ns: str) -> None:
        self.released[ns].append((self._label(ns, None), INF))

    def release_all(
        self, at: float, until: float = INF, names: Iterable[str] | None = None
    ) -> None:
        """Record that the test lifted the isolation of ``names`` at ``at`` (until ``until``)."""
        for ns in names or self.names:
            self.released[ns].append((at, until))

    def figures(self, records: Sequence[LaneRecord]) -> Figures:
        """The scenario's figures; the latency only for namespaces opted in while probed."""
        starts = [r.runs[0][1] for r in records if r.runs]
        since = min(starts) - 1.0 if starts else 0.0  # (lanes start staggered)
        opted = {ns: t for ns, t in self.opted_in_at.items() if t >= since}
        return summarize(records, opted, self.released)

    def delete(self) -> None:
        """Delete the namespaces and the pods' networks (kube-router stays lean for the next)."""
        self.cluster.kubectl("delete", "namespace", *self.names, "--wait=false", timeout=120)
        for pod in self.pods.values():
            self.dp.delete_pod(pod)


@contextlib.contextmanager
def running(
    cluster: Cluster, logdir: Path, *extra: str, env: Mapping[str, str] | None = None
) -> Iterator[OperatorProcess]:
    """An operator process for the length of the block (``extra``: its arguments)."""
    op = OperatorProcess(cluster, logdir, *extra, env=env).start()
    try:
        yield op
    finally:
        op.stop()


def wait_lanes(
    prober: ContinuousProber, groups: Iterable[str], verdict: str, timeout: float = 180
) -> float:
    """Wait until the latest probe of every flow in the forbidden lane of every group in
    ``groups`` saw ``verdict`` (DENIED: isolated, ALLOWED: released); the seconds waited.
    AssertionError names the groups still waiting after ``timeout``."""
    wanted = set(groups)
    start = time.monotonic()
    while True:
        records = [r for r in prober.snapshot() if r.expect == DENIED]
        done = {
            r.group
            for r in records
            if len(r.latest()) == r.flows and set(r.latest().values()) == {verdict}
        }
        pending = wanted - done
        if not pending:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(
                f"{len(pending)} namespaces never {verdict}: {sorted(pending)[:5]}"
            )
        time.sleep(0.5)


SITECUSTOMIZE = textwrap.dedent(
    '''
    """Turn this process into "version 2" of nsbaseline: other built-in pieces (as in
    tests/e2e/test_upgrades.py)."""
    import os

    if os.environ.get("NSBASELINE_TEST_BUILTIN_PIECES"):
        import nsbaseline.names as names

        names.BUILTIN_PIECES = tuple(os.environ["NSBASELINE_TEST_BUILTIN_PIECES"].split(","))
        names.DEFAULT_DENY = os.environ["NSBASELINE_TEST_DEFAULT_DENY"]
    '''
)
V2_PIECES = ("dns", "allow-ingress-controller", "allow-egress-cidrs", "deny-all")


def version2(folder: Path) -> tuple[Path, dict[str, str]]:
    """The templates folder and environment that make an operator "version 2": ``allow-dns``
    renamed ``dns``, ``default-deny`` renamed ``deny-all``, ``allow-monitoring`` gone."""
    from nsbaseline.render import builtin_template_dir

    site, templates = folder / "site", folder / "templates"
    site.mkdir(parents=True, exist_ok=True)
    templates.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    builtin = builtin_template_dir()
    (templates / "dns.yaml.j2").write_text((builtin / "allow-dns.yaml.j2").read_text())
    (templates / "deny-all.yaml.j2").write_text((builtin / "default-deny.yaml.j2").read_text())
    env = {
        "PYTHONPATH": str(site),
        "NSBASELINE_TEST_BUILTIN_PIECES": ",".join(V2_PIECES),
        "NSBASELINE_TEST_DEFAULT_DENY": "deny-all",
    }
    return templates, env
