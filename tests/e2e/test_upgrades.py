"""Upgrades lose nothing: a new operator version that renames or removes built-in templates.

Version 1 is the operator as shipped. Version 2 is the same code with a different set of built-in
pieces, the way a release would change them: ``allow-dns`` is renamed ``dns``, ``default-deny`` is
renamed ``deny-all`` and ``allow-monitoring`` is gone. The shipped code is not forked for this:
a ``sitecustomize`` module (loaded by Python at start-up, only in the version 2 process) replaces
the constants in :mod:`nsbaseline.names`, and the renamed templates come from ``--templates-dir``.

Version 2 must prune every object of the old names and create the new ones, and the independent
watcher must see no moment in which a namespace denies egress without DNS, none without a
default-deny and none without DNS once they had them. Then the same going back to version 1.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nsbaseline import names
from nsbaseline.render import builtin_template_dir
from tests.support.kube import Cluster, OperatorProcess, baseline_policy, wait_for
from tests.support.watcher import PolicyWatcher

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TEST_LABEL = "faults.nsbaseline.io/upgrade"
NAMESPACES = 20
V2_PIECES = ("dns", "allow-ingress-controller", "allow-egress-cidrs", "deny-all")
V2_DENY = "deny-all"

SITECUSTOMIZE = textwrap.dedent(
    '''
    """Turn this process into "version 2" of nsbaseline: other built-in pieces."""
    import os

    if os.environ.get("NSBASELINE_TEST_BUILTIN_PIECES"):
        import nsbaseline.names as names

        names.BUILTIN_PIECES = tuple(os.environ["NSBASELINE_TEST_BUILTIN_PIECES"].split(","))
        names.DEFAULT_DENY = os.environ["NSBASELINE_TEST_DEFAULT_DENY"]
    '''
)


@pytest.fixture
def version2(tmp_path: Path) -> dict[str, str]:
    """Arguments and environment that make an OperatorProcess run as version 2."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    templates = tmp_path / "templates"
    templates.mkdir()
    builtin = builtin_template_dir()
    (templates / "dns.yaml.j2").write_text((builtin / "allow-dns.yaml.j2").read_text())
    (templates / "deny-all.yaml.j2").write_text((builtin / "default-deny.yaml.j2").read_text())
    return {
        "templates": str(templates),
        "PYTHONPATH": str(site),
        "NSBASELINE_TEST_BUILTIN_PIECES": ",".join(V2_PIECES),
        "NSBASELINE_TEST_DEFAULT_DENY": V2_DENY,
    }


@pytest.fixture
def run_label(cluster: Cluster) -> Iterator[dict[str, str]]:
    run = uuid.uuid4().hex[:6]
    yield {TEST_LABEL: run}
    cluster.kubectl("delete", "ns", "-l", f"{TEST_LABEL}={run}", "--wait=false", timeout=120)


def _names(cluster: Cluster, policy: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for obj in cluster.items("networkpolicies", "-A", "-l", f"{names.POLICY_LABEL}={policy}"):
        out.setdefault(obj["metadata"]["namespace"], set()).add(obj["metadata"]["name"])
    return out


def test_renamed_and_removed_builtin_templates_are_replaced_without_a_gap(
    cluster: Cluster,
    logdir: Path,
    clean_policies: None,
    version2: dict[str, str],
    run_label: dict[str, str],
) -> None:
    run = run_label[TEST_LABEL]
    policy = f"upg-{run}"
    v1_names = {names.object_name(policy, p) for p in ("allow-dns", "default-deny")}
    v1_names.add(names.object_name(policy, "allow-monitoring"))
    v2_names = {names.object_name(policy, p) for p in ("dns", V2_DENY)}
    env = {k: v for k, v in version2.items() if k != "templates"}

    prefix = f"upg-{run}-"
    with PolicyWatcher(cluster.kubeconfig, lambda ns: ns.startswith(prefix)) as watcher:
        v1 = OperatorProcess(cluster, logdir / "v1").start()
        try:
            cluster.apply(
                baseline_policy(
                    policy,
                    namespaceSelector={"matchLabels": run_label},
                    monitoring={"enabled": True},
                )
            )
            nss = [cluster.namespace(f"upg-{run}", run_label) for _ in range(NAMESPACES)]
            wait_for(
                lambda: _names(cluster, policy) == dict.fromkeys(nss, v1_names),
                120,
                what="version 1 baselines",
            )
        finally:
            v1.stop()

        v2 = OperatorProcess(
            cluster, logdir / "v2", "--templates-dir", version2["templates"], env=env
        ).start()
        try:
            wait_for(
                lambda: _names(cluster, policy) == dict.fromkeys(nss, v2_names),
                120,
                what="version 2 to prune the old names and create the new ones",
            )
        finally:
            v2.stop()

        # And back: downgrading restores the version 1 names, again without a gap.
        v1 = OperatorProcess(cluster, logdir / "v1-again").start()
        try:
            wait_for(
                lambda: _names(cluster, policy) == dict.fromkeys(nss, v1_names),
                120,
                what="version 1 again after the downgrade",
            )
        finally:
            v1.stop()

        # The watch saw every write of all three versions' work.
        assert watcher.relists == 1, watcher.blind_spots
        assert not watcher.violations(), watcher.violations()[:5]
        no_deny = watcher.lost(nss, lambda m: m.deny_egress and m.deny_ingress)
        assert not no_deny, f"a namespace was without default-deny: {no_deny[:5]}"
        no_dns = watcher.lost(nss, lambda m: m.dns)
        assert not no_dns, f"a namespace was without its DNS allowance: {no_dns[:5]}"
        for ns in nss:
            seen = {name for m in watcher.history(ns) for name in m.names}
            assert v1_names | v2_names <= seen, f"{ns}: the watch missed a generation: {seen}"
