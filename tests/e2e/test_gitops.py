"""GitOps-managed, for real: Argo CD installs nsbaseline from Git and keeps it Synced and Healthy.

Argo CD's application controller and repo server (built from the argo-cd Go module) run against
the test control plane; the Git repository is served over smart HTTP on loopback and holds the
layout docs/gitops.md recommends: ``nsbaseline/`` = a copy of ``deploy/`` plus the policies.
The Application is the shipped ``docs/examples/gitops/application.yaml`` with only its repoURL
changed and one test-only kustomize patch: the Deployment is scaled to zero, because nothing here
runs pods (no kubelet). The operator the Deployment describes runs as a local process instead,
with the ServiceAccount token and ClusterRole Argo CD installed (tests.support.gitops
.DeployedOperator). So these tests prove what Argo CD does with our manifests and status; they do
not prove that the operator's pod starts in a real cluster (tests/e2e/test_image.py and
test_install.py cover the image and the pod spec).

The tests are one story in order: each builds on the previous commit. Every step is asserted on
Argo CD's own view (the Application's sync and health status, its resource list and resource
tree) and on the cluster.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import INSTALL_NAMESPACE, VAP_NAME
from tests.support.gitops import (
    ARGOCD_NAMESPACE,
    EXAMPLES,
    ArgoCD,
    DeployedOperator,
    GitServer,
    app_summary,
    argocd_module_dir,
    doc_command,
    gitops_bindir,
    resource_entry,
    wait_app,
    wait_established,
)
from tests.support.kube import REPO, Cluster, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = "nsbaseline"
OPTED_IN = {"nsbaseline.io/enabled": "true"}
#: The one test-only change to the shipped Application: no kubelet, so no replicas.
SCALE_TO_ZERO = {
    "target": {"group": "apps", "kind": "Deployment", "name": "nsbaseline"},
    "patch": "- op: replace\n  path: /spec/replicas\n  value: 0\n",
}
TRACKING_PREFIXES = ("argocd.argoproj.io/", "app.kubernetes.io/instance")

#: A template that renders a valid NetworkPolicy until the policy sets values.bad (then it
#: references an undefined variable: a template error the operator reports as Degraded).
ALLOW_WEB = """\
{%- if not values.bad %}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {}
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress]
  ingress:
  - ports:
    - port: {{ values.port }}
{%- else %}
{{ values.no_such_value.port }}
{%- endif %}
"""


@dataclass
class Bed:
    cluster: Cluster
    argocd: ArgoCD
    git: GitServer
    operator: DeployedOperator
    namespaces: list[str]
    shas: list[str] = field(default_factory=list)

    def app(self) -> dict[str, Any]:
        return self.argocd.app(APP)

    def commit(self, message: str, files: dict[str, str | Path | None]) -> str:
        sha = self.git.commit(message, files)
        self.shas.append(sha)
        self.argocd.refresh(APP)  # what a Git webhook does; the poll would get there too
        return sha

    def patch_app(self, patch: dict[str, Any]) -> None:
        self.cluster.kubectl(
            "-n", ARGOCD_NAMESPACE, "patch", "application.argoproj.io", APP,
            "--type", "merge", "-p", json.dumps(patch),
        )  # fmt: skip

    def annotate_app(self, *pairs: str) -> None:
        self.cluster.kubectl(
            "-n", ARGOCD_NAMESPACE, "annotate", "application.argoproj.io", APP, *pairs,
            "--overwrite",
        )  # fmt: skip

    def netpols(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {
            (ns, name): obj
            for ns in self.namespaces
            for name, obj in self.cluster.netpols(ns).items()
        }


def _policy_health(app: dict[str, Any], name: str) -> dict[str, Any]:
    entry = resource_entry(app, "BaselinePolicy", name) or {}
    return dict(entry.get("health") or {})


def _shipped_application(repo_url: str) -> dict[str, Any]:
    app: dict[str, Any] = yaml.safe_load((EXAMPLES / "application.yaml").read_text())
    app["spec"]["source"]["repoURL"] = repo_url
    app["spec"]["source"]["kustomize"] = {"patches": [SCALE_TO_ZERO]}
    return app


def _kustomization(*resources: str, templates: bool = False) -> str:
    doc: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(resources),
    }
    if templates:
        # deploy/README.md "Templates": extra template files merged into the ConfigMap.
        doc["configMapGenerator"] = [
            {
                "name": "nsbaseline-templates",
                "namespace": INSTALL_NAMESPACE,
                "behavior": "merge",
                "files": ["templates/allow-web.yaml.j2"],
            }
        ]
    return yaml.safe_dump(doc, sort_keys=False)


def _policy(name: str, spec: dict[str, Any]) -> str:
    doc = {
        "apiVersion": "nsbaseline.io/v1alpha1",
        "kind": "BaselinePolicy",
        "metadata": {"name": name},
        "spec": spec,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _restore_session(cluster: Cluster, namespaces: list[str]) -> None:
    """Leave the session as the other tests expect it: our CRDs in place, no cluster-wide
    admission binding, no install namespace (half-deleted or not), no test namespaces."""
    cluster.kubectl("delete", "validatingadmissionpolicybinding", VAP_NAME, "--ignore-not-found")
    cluster.kubectl("delete", "namespace", INSTALL_NAMESPACE, "--ignore-not-found", "--wait=false")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    wait_established(cluster, "baselinepolicies.nsbaseline.io", "clusterkopfpeerings.kopf.dev")
    wait_for(
        lambda: cluster.get("namespace", INSTALL_NAMESPACE) is None,
        180,
        what=f"namespace {INSTALL_NAMESPACE} gone",
    )
    cluster.kubectl("delete", "namespace", *namespaces, "--wait=false", check=False)


def _remove_argocd_install(cluster: Cluster) -> None:
    cluster.kubectl("delete", "namespace", ARGOCD_NAMESPACE, "--wait=false", check=False)
    cluster.kubectl(
        "delete", "crd", "applications.argoproj.io", "appprojects.argoproj.io",
        "applicationsets.argoproj.io", "--ignore-not-found", "--wait=false", check=False,
    )  # fmt: skip


def _delete_app(cluster: Cluster) -> None:
    """While Argo CD still runs, so its finalizer can finish; else drop the finalizer."""
    if cluster.get("application.argoproj.io", APP, "-n", ARGOCD_NAMESPACE) is None:
        return
    cluster.kubectl(
        "-n", ARGOCD_NAMESPACE, "delete", "application.argoproj.io", APP,
        "--timeout=120s", check=False, timeout=150,
    )  # fmt: skip
    cluster.kubectl(
        "-n", ARGOCD_NAMESPACE, "patch", "application.argoproj.io", APP,
        "--type", "merge", "-p", '{"metadata":{"finalizers":null}}', check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def bed(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    for tool in ("redis-server", "git"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (apt-get install redis-server git)")
    bindir = gitops_bindir()
    cluster.kubectl("delete", "baselinepolicies", "--all", "--wait=true")
    cluster.settle()
    workdir = tmp_path_factory.mktemp("gitops")
    # Every clean-up step is registered as soon as there is something to clean up, and runs
    # (last registered first) even when an earlier one fails.
    with contextlib.ExitStack() as cleanup:
        namespaces = [cluster.namespace("gitops", OPTED_IN) for _ in range(2)]
        cleanup.callback(_restore_session, cluster, namespaces)
        argocd = ArgoCD(cluster, bindir, workdir / "argocd")
        cleanup.callback(_remove_argocd_install, cluster)
        argocd.install(argocd_module_dir())
        git = GitServer(workdir / "git").start()
        cleanup.callback(git.stop)
        operator = DeployedOperator(cluster, workdir / "operator")
        bed = Bed(cluster, argocd, git, operator, namespaces)
        # The documented repository layout: cluster-config/nsbaseline/{kustomization,
        # baseline}.yaml and a copy of deploy/ next to them.
        bed.shas.append(
            git.commit(
                "nsbaseline: install and baseline policy",
                {
                    "nsbaseline": EXAMPLES / "cluster-config" / "nsbaseline",
                    "nsbaseline/deploy": REPO / "deploy",
                },
            )
        )
        cleanup.callback(argocd.stop)
        argocd.start()
        cleanup.callback(operator.cleanup)
        cleanup.callback(_delete_app, cluster)
        cleanup.callback(
            lambda: print(f"\n{argocd.logs(80)}\n----- operator -----\n{operator.tail(80)}")
        )
        yield bed


def test_first_sync_installs_crds_operator_and_policy_in_one_sync(bed: Bed) -> None:
    """One Application, one sync: CRDs, RBAC, operator and a BaselinePolicy of the new CRD.

    Argo CD skips the dry run of a custom resource whose CRD is in the same sync and applies
    CRDs before other kinds, so no sync wave or SkipDryRunOnMissingResource is needed. Until the
    operator runs, the shipped health check keeps the policy Progressing (not-yet-observed).
    """
    folder = bed.operator.logdir.parent
    (folder / "application.yaml").write_text(json.dumps(_shipped_application(bed.git.url)))
    bed.cluster.kubectl(*doc_command("apply-application", folder))
    app = wait_app(bed.argocd, APP, health=None, revision=bed.shas[-1], timeout=300)
    assert app["status"]["operationState"]["phase"] == "Succeeded", app_summary(app)
    kinds = {(r["kind"], r["name"]): r["status"] for r in app["status"]["resources"]}
    for key in [
        ("CustomResourceDefinition", "baselinepolicies.nsbaseline.io"),
        ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev"),
        ("Namespace", INSTALL_NAMESPACE),
        ("ServiceAccount", "nsbaseline"),
        ("ClusterRole", "nsbaseline"),
        ("ClusterRoleBinding", "nsbaseline"),
        ("Deployment", "nsbaseline"),
        ("ValidatingAdmissionPolicyBinding", VAP_NAME),
        ("BaselinePolicy", "baseline"),
    ]:
        assert kinds.get(key) == "Synced", (key, kinds)
    health = _policy_health(app, "baseline")
    assert health.get("status") == "Progressing", health
    assert "Waiting for the nsbaseline operator" in health.get("message", ""), health
    # The cluster agrees: the Deployment is deploy/'s (scaled to zero here), the policy is in.
    dep = bed.cluster.get("deployment", "nsbaseline", "-n", INSTALL_NAMESPACE)
    assert dep["spec"]["replicas"] == 0
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["run", "--peering"]
    policy = bed.cluster.get("baselinepolicy", "baseline")
    assert policy["spec"]["monitoring"]["enabled"] is True
    # Only the CRD's default (what kstatus and Argo CD read as "not observed yet"): no operator.
    assert policy.get("status") == {"observedGeneration": 0}, policy.get("status")

    bed.operator.follow()
    compliant = {"status": "Healthy", "message": "All 2 namespace(s) are compliant."}
    wait_app(
        bed.argocd,
        APP,
        revision=bed.shas[-1],
        timeout=180,
        until=lambda app: _policy_health(app, "baseline") == compliant,
    )
    for ns in bed.namespaces:
        assert set(bed.cluster.netpols(ns)) == {
            "nsbaseline-baseline-default-deny",
            "nsbaseline-baseline-allow-dns",
            "nsbaseline-baseline-allow-monitoring",
        }


def test_generated_network_policies_are_not_the_apps_and_survive_a_pruning_sync(bed: Bed) -> None:
    """Not in the Application's resources, no tracking metadata, shown only as children of the
    policy in the resource tree, and a sync with prune neither deletes nor writes them."""
    before = bed.netpols()
    assert len(before) == 6
    app = bed.app()
    assert not [r for r in app["status"]["resources"] if r["kind"] == "NetworkPolicy"]
    for (ns, name), obj in before.items():
        meta = obj["metadata"]
        keys = set(meta.get("labels") or {}) | set(meta.get("annotations") or {})
        assert not [k for k in keys if k.startswith(TRACKING_PREFIXES)], (ns, name, keys)
        (owner,) = meta["ownerReferences"]
        assert (owner["kind"], owner["name"]) == ("BaselinePolicy", "baseline")

    def tree_children() -> list[dict[str, Any]]:
        nodes = bed.argocd.resource_tree(APP)["nodes"]
        found = [n for n in nodes if n.get("kind") == "NetworkPolicy"]
        return found if len(found) == 6 else []

    children = wait_for(tree_children, 60, what="NetworkPolicies in the resource tree")
    for node in children:
        assert [(p["kind"], p["name"]) for p in node["parentRefs"]] == [
            ("BaselinePolicy", "baseline")
        ], node
    orphaned = bed.argocd.resource_tree(APP)["orphanedNodes"]
    assert not [n for n in orphaned if n.get("kind") == "NetworkPolicy"]

    writes_before = bed.cluster.request_counts()
    started = app["status"]["operationState"]["startedAt"]
    bed.patch_app(
        {
            "operation": {
                "initiatedBy": {"username": "e2e"},
                "sync": {"prune": True, "revision": bed.shas[-1]},
            }
        }
    )

    def synced_again() -> dict[str, Any] | None:
        a = bed.app()
        op = a["status"].get("operationState") or {}
        return a if op.get("startedAt") != started and op.get("phase") == "Succeeded" else None

    synced = wait_for(synced_again, 120, interval=1, what="the manual sync with prune")
    assert synced is not None and app_summary(synced)["sync"] == "Synced"
    after = bed.netpols()
    assert {k: v["metadata"]["uid"] for k, v in after.items()} == {
        k: v["metadata"]["uid"] for k, v in before.items()
    }
    assert {k: v["metadata"]["resourceVersion"] for k, v in after.items()} == {
        k: v["metadata"]["resourceVersion"] for k, v in before.items()
    }
    assert bed.cluster.writes("networkpolicies", writes_before) == 0


def test_defaulted_policies_stay_synced_without_a_perpetual_diff(bed: Bed) -> None:
    """``spec: {}`` and a list item whose ``protocol`` the CRD defaults (the kyverno#5738
    shape): the live objects carry the defaults, Argo CD still reports Synced and does not sync
    again. With ServerSideApply the list default does show as a diff unless ServerSideDiff is on
    too: both pinned here, as docs/gitops.md says."""
    sha = bed.commit(
        "two defaulted policies",
        {
            "nsbaseline/kustomization.yaml": _kustomization(
                "deploy", "baseline.yaml", "defaulted.yaml", "egress.yaml"
            ),
            "nsbaseline/defaulted.yaml": _policy("defaulted", {}),
            "nsbaseline/egress.yaml": _policy(
                "egress",
                {
                    "namespaceSelector": {"matchLabels": {"e2e.nsbaseline.io/none": "x"}},
                    "egressCIDRs": [{"cidr": "203.0.113.0/24", "ports": [{"port": 443}]}],
                },
            ),
        },
    )
    app = wait_app(bed.argocd, APP, revision=sha)
    live = bed.cluster.get("baselinepolicy", "defaulted")
    assert live["spec"]["mode"] == "Enforce" and live["spec"]["dns"]["enabled"] is True
    live = bed.cluster.get("baselinepolicy", "egress")
    assert live["spec"]["egressCIDRs"][0]["ports"] == [{"port": 443, "protocol": "TCP"}]
    for name in ("defaulted", "egress"):
        assert (resource_entry(app, "BaselinePolicy", name) or {}).get("status") == "Synced"
    synced_at = app["status"]["operationState"]["startedAt"]
    for _ in range(2):
        bed.annotate_app("argocd.argoproj.io/refresh=hard")
        wait_for(
            lambda: (
                "argocd.argoproj.io/refresh" not in bed.app()["metadata"].get("annotations", {})
            ),
            120,
            what="the hard refresh",
        )
        app = wait_app(bed.argocd, APP, revision=sha)
    assert app["status"]["operationState"]["startedAt"] == synced_at, "synced again: a diff"

    # ServerSideApply=true compares with structured-merge-diff: the defaulted protocol in the
    # atomic ports list is a diff...
    bed.patch_app({"spec": {"syncPolicy": {"syncOptions": ["ServerSideApply=true"]}}})
    bed.argocd.refresh(APP)
    app = wait_app(bed.argocd, APP, sync="OutOfSync", health=None, timeout=120)
    out_of_sync = [r["name"] for r in app["status"]["resources"] if r["status"] == "OutOfSync"]
    assert out_of_sync == ["egress"], app_summary(app)
    # ...which ServerSideDiff=true (a dry-run apply, so the API server fills the defaults)
    # clears: the documented patch, both options.
    bed.cluster.kubectl(*doc_command("patch-server-side"))
    bed.argocd.refresh(APP)
    wait_app(bed.argocd, APP, revision=sha, timeout=120)
    # Back to the shipped Application for the next tests.
    bed.cluster.kubectl(
        "-n", ARGOCD_NAMESPACE, "annotate", "application.argoproj.io", APP,
        "argocd.argoproj.io/compare-options-",
    )  # fmt: skip
    bed.patch_app({"spec": {"syncPolicy": {"syncOptions": None}}})
    bed.argocd.refresh(APP)
    wait_app(bed.argocd, APP, revision=sha, timeout=120)


def test_commit_changing_the_policy_rolls_out_and_stays_synced(bed: Bed) -> None:
    """A commit adds a template to the ConfigMap and uses it in the policy: Argo CD applies the
    new ConfigMap and the Deployment that references it (the rollout), the operator renders the
    new piece, and the Application ends Synced and Healthy at that commit."""
    old = bed.cluster.get("deployment", "nsbaseline", "-n", INSTALL_NAMESPACE)
    old_cm = old["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
    baseline = {
        "monitoring": {"enabled": True},
        "templates": [{"name": "allow-web", "values": {"port": 8080, "bad": False}}],
    }
    sha = bed.commit(
        "baseline: allow web traffic on 8080",
        {
            "nsbaseline/kustomization.yaml": _kustomization(
                "deploy", "baseline.yaml", "defaulted.yaml", "egress.yaml", templates=True
            ),
            "nsbaseline/templates/allow-web.yaml.j2": ALLOW_WEB,
            "nsbaseline/baseline.yaml": _policy("baseline", baseline),
        },
    )
    wait_app(bed.argocd, APP, health=None, revision=sha)
    dep = bed.cluster.get("deployment", "nsbaseline", "-n", INSTALL_NAMESPACE)
    new_cm = dep["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
    assert new_cm != old_cm and new_cm.startswith("nsbaseline-templates-")
    assert bed.operator.follow(), "the Deployment's pod template did not change"
    app = wait_app(bed.argocd, APP, revision=sha, timeout=180)
    assert _policy_health(app, "baseline")["status"] == "Healthy"
    policy = bed.cluster.get("baselinepolicy", "baseline")
    assert policy["status"]["observedGeneration"] == policy["metadata"]["generation"] == 2
    for ns in bed.namespaces:
        web = bed.cluster.netpols(ns)["nsbaseline-baseline-allow-web"]
        assert web["spec"]["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    # The old ConfigMap is pruned (it is no longer in Git); the policy is not touched again.
    assert bed.cluster.get("configmap", old_cm, "-n", INSTALL_NAMESPACE) is None


def test_broken_template_shows_degraded_in_argo_cd_and_a_fix_recovers(bed: Bed) -> None:
    """The health check maps the operator's Degraded condition: a commit that breaks the
    template makes the policy, and so the Application, Degraded in Argo CD while it stays
    Synced (Git and cluster agree; the operator cannot render). The baseline already in place
    stays. Reverting the commit brings Healthy back."""
    before = {k: v["metadata"]["uid"] for k, v in bed.netpols().items()}
    broken = {
        "monitoring": {"enabled": True},
        "templates": [{"name": "allow-web", "values": {"port": 8080, "bad": True}}],
    }
    sha = bed.commit(
        "baseline: break allow-web", {"nsbaseline/baseline.yaml": _policy("baseline", broken)}
    )
    app = wait_app(bed.argocd, APP, health="Degraded", revision=sha, timeout=180)
    health = _policy_health(app, "baseline")
    assert health["status"] == "Degraded", health
    assert "template 'allow-web'" in health["message"], health
    policy = bed.cluster.get("baselinepolicy", "baseline")
    conditions = {c["type"]: c for c in policy["status"]["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["message"] == health["message"]
    assert {k: v["metadata"]["uid"] for k, v in bed.netpols().items()} == before

    fixed = {
        "monitoring": {"enabled": True},
        "templates": [{"name": "allow-web", "values": {"port": 8080, "bad": False}}],
    }
    sha = bed.commit(
        "baseline: fix allow-web", {"nsbaseline/baseline.yaml": _policy("baseline", fixed)}
    )
    app = wait_app(bed.argocd, APP, revision=sha, timeout=180)
    assert _policy_health(app, "baseline")["status"] == "Healthy"


def test_deleting_the_app_removes_the_install_and_policies_and_their_objects(bed: Bed) -> None:
    """Deleting the Application (with Argo CD's resources finalizer) deletes everything it
    installed except the CRDs, which Argo CD never deletes on purpose (that would delete every
    BaselinePolicy in the cluster); the policies' NetworkPolicies are garbage-collected through
    their ownerReferences."""
    assert len(bed.netpols()) >= 8  # baseline (4 pieces) and defaulted (2) in each namespace
    bed.cluster.kubectl(
        "-n", ARGOCD_NAMESPACE, "delete", "application.argoproj.io", APP, "--wait=false"
    )
    wait_for(
        lambda: bed.cluster.get("deployment", "nsbaseline", "-n", INSTALL_NAMESPACE) is None,
        180,
        what="the Deployment deleted by Argo CD",
    )
    bed.operator.stop()  # the Deployment is gone, so would its pods be
    wait_for(
        lambda: bed.cluster.get("application.argoproj.io", APP, "-n", ARGOCD_NAMESPACE) is None,
        180,
        what="the Application's finalizer done",
    )
    assert bed.cluster.items("baselinepolicies") == []
    for kind, name in [
        ("clusterrole", "nsbaseline"),
        ("clusterrolebinding", "nsbaseline"),
        ("validatingadmissionpolicybinding", VAP_NAME),
    ]:
        assert bed.cluster.get(kind, name) is None, (kind, name)
    wait_for(lambda: not bed.netpols(), 120, what="generated NetworkPolicies garbage-collected")
    wait_for(
        lambda: bed.cluster.get("namespace", INSTALL_NAMESPACE) is None,
        180,
        what=f"namespace {INSTALL_NAMESPACE} deleted",
    )
    for crd in ("baselinepolicies.nsbaseline.io", "clusterkopfpeerings.kopf.dev"):
        assert bed.cluster.get("crd", crd) is not None, f"{crd} deleted"
    # Removing nsbaseline for good, as documented (the fixture puts the CRDs back).
    bed.cluster.kubectl(*doc_command("delete-crds"))
    assert bed.cluster.get("crd", "baselinepolicies.nsbaseline.io") is None
