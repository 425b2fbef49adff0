"""The install, for real: ``kubectl apply -k deploy/`` on the control plane, then every object
checked on the server (CRDs established, RBAC, admission policy, a Deployment whose pods the
`restricted` Pod Security level admits). The Helm chart's output goes through a server-side dry
run and is compared with the kustomize output, so the two installs cannot drift apart.

The shipped admission binding covers the whole cluster and refuses even the admin's edits of
generated objects, which the rest of the suite relies on; the module removes it when done.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.deploy import (
    CHART,
    DELETION_ORDER_VAP_NAME,
    DEPLOY,
    INSTALL_NAMESPACE,
    OPERATOR_USER,
    VAP_NAME,
    by_kind_name,
    helm_template,
    kustomize,
    operator_as_service_account,
)
from tests.support.kube import Cluster, baseline_policy, wait_for

pytestmark = pytest.mark.e2e

#: Labels and annotations Argo CD and Flux use to track what they own; copied onto generated
#: objects they make those tools prune or adopt them (kyverno#12091, argo-cd#15472).
GITOPS_TRACKING = {
    "labels": {
        "app.kubernetes.io/instance": "platform-baselines",
        "argocd.argoproj.io/instance": "platform-baselines",
        "kustomize.toolkit.fluxcd.io/name": "platform",
        "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
        "helm.toolkit.fluxcd.io/name": "platform",
        "helm.toolkit.fluxcd.io/namespace": "flux-system",
    },
    "annotations": {
        "argocd.argoproj.io/tracking-id": "platform:nsbaseline.io/BaselinePolicy:/x",
        "argocd.argoproj.io/sync-options": "Prune=true",
        "kustomize.toolkit.fluxcd.io/checksum": "abc",
        "kustomize.toolkit.fluxcd.io/reconcile": "enabled",
    },
}
TRACKING_PREFIXES = ("argocd.argoproj.io/", "toolkit.fluxcd.io/", "fluxcd.io/")


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Iterator[list[dict[str, Any]]]:
    """``kubectl apply -k deploy/`` exactly as the README says; the objects it sent."""
    docs = kustomize(cluster, DEPLOY)
    proc = cluster.kubectl("apply", "-k", str(DEPLOY), timeout=120)
    assert "error" not in proc.stderr.lower(), proc.stderr
    yield docs
    cluster.kubectl(
        "delete",
        "validatingadmissionpolicybinding",
        VAP_NAME,
        DELETION_ORDER_VAP_NAME,
        "--ignore-not-found",
    )


def test_every_object_of_the_bundle_exists_on_the_server(
    cluster: Cluster, installed: list[dict[str, Any]]
) -> None:
    kinds = sorted({d["kind"] for d in installed})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    for doc in installed:
        kind, namespace, name = _key(doc)
        args = [doc["kind"].lower() + "." + doc["apiVersion"].split("/")[0]]
        if "/" not in doc["apiVersion"]:
            args = [doc["kind"].lower()]
        found = cluster.get(*args, name, *(["-n", namespace] if namespace else []))
        assert found is not None, f"{kind} {namespace}/{name} missing after apply -k"
    # The example policy is separate (a CRD and its objects cannot go in one apply), and valid.
    cluster.kubectl("apply", "-k", str(DEPLOY / "examples"), "--dry-run=server")


def test_crds_are_established_and_identical_to_the_crds_folder(
    cluster: Cluster, installed: list[dict[str, Any]]
) -> None:
    for name in ("baselinepolicies.nsbaseline.io", "clusterkopfpeerings.kopf.dev"):
        crd = cluster.get("crd", name)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True", name
    shipped = {
        d["metadata"]["name"]: d for d in installed if d["kind"] == "CustomResourceDefinition"
    }
    source = {
        d["metadata"]["name"]: d
        for path in sorted((DEPLOY.parent / "crds").glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d
    }
    for name, doc in source.items():
        assert shipped[name]["spec"] == doc["spec"], f"deploy/ ships a stale {name}"


def test_rbac_binds_the_least_privilege_cluster_role_to_the_service_account(
    cluster: Cluster, installed: list[dict[str, Any]]
) -> None:
    assert cluster.get("serviceaccount", "nsbaseline", "-n", INSTALL_NAMESPACE) is not None
    role = cluster.get("clusterrole", "nsbaseline")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("",), ("namespaces",)): {"get", "list", "watch"},
        (("networking.k8s.io",), ("networkpolicies",)): {
            "get",
            "list",
            "watch",
            "create",
            "patch",
            "delete",
        },
        (("nsbaseline.io",), ("baselinepolicies",)): {"get", "list", "watch"},
        (("nsbaseline.io",), ("baselinepolicies/status",)): {"patch"},
        (("",), ("events",)): {"create"},
        (("kopf.dev",), ("clusterkopfpeerings",)): {"get", "list", "watch", "patch", "create"},
        (("apiextensions.k8s.io",), ("customresourcedefinitions",)): {"list", "watch"},
        (("wgpolicyk8s.io",), ("policyreports",)): {"list", "create", "patch", "delete"},
        (("openreports.io",), ("reports",)): {"list", "create", "patch", "delete"},
    }
    binding = cluster.get("clusterrolebinding", "nsbaseline")
    assert binding["roleRef"]["name"] == "nsbaseline"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "nsbaseline", "namespace": INSTALL_NAMESPACE}
    ]


def test_deployment_runs_two_peering_replicas_with_a_restricted_read_only_pod(
    cluster: Cluster, installed: list[dict[str, Any]]
) -> None:
    dep = cluster.get("deployment", "nsbaseline", "-n", INSTALL_NAMESPACE)
    spec = dep["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "nsbaseline"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["args"][:2] == ["run", "--peering"]
    assert "--templates-dir=/etc/nsbaseline/templates" in container["args"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsUser"] == 65532
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
        assert container[probe]["httpGet"]["port"] == "health"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert "--health=http://0.0.0.0:8080/healthz" in container["args"]
    assert "--metrics-port=9090" in container["args"]
    assert set(container["resources"]) == {"requests", "limits"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/etc/nsbaseline/templates"] == "templates"
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmap = volumes["templates"]["configMap"]["name"]
    assert configmap.startswith("nsbaseline-templates-")
    assert cluster.get("configmap", configmap, "-n", INSTALL_NAMESPACE) is not None


def test_restricted_pod_security_admits_the_operator_pods_and_refuses_a_root_pod(
    cluster: Cluster, installed: list[dict[str, Any]]
) -> None:
    ns = cluster.get("namespace", INSTALL_NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # The ReplicaSet controller creates the pods (no node runs them here): creating them passes
    # the API server's Pod Security admission only if the template is `restricted`-clean.
    wait_for(
        lambda: (
            len(
                cluster.items(
                    "pods", "-n", INSTALL_NAMESPACE, "-l", "app.kubernetes.io/name=nsbaseline"
                )
            )
            >= 2
        ),
        120,
        what="operator pods created by the ReplicaSet controller",
    )
    failed = [
        e["message"]
        for e in cluster.events(INSTALL_NAMESPACE, "FailedCreate")
        if e["involvedObject"]["kind"] == "ReplicaSet"
    ]
    assert not failed, failed
    # Control: the same namespace refuses a pod that runs as root.
    root_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root", "namespace": INSTALL_NAMESPACE},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "securityContext": {"runAsUser": 0}}]
        },
    }
    proc = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(root_pod), check=False
    )
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr, proc.stderr


def test_admission_policy_is_installed_bound_and_type_checks_cleanly(
    cluster: Cluster, installed: list[dict[str, Any]]
) -> None:
    binding = cluster.get("validatingadmissionpolicybinding", VAP_NAME)
    assert binding["spec"]["policyName"] == VAP_NAME
    assert binding["spec"]["validationActions"] == ["Deny"]

    def checked() -> dict[str, Any]:
        vap = cluster.get("validatingadmissionpolicy", VAP_NAME)
        status = vap.get("status") or {}
        ok = status.get("observedGeneration") == vap["metadata"]["generation"]
        return status if ok else {}

    status = wait_for(checked, 60, what="the API server's type check of the CEL expressions")
    assert not (status.get("typeChecking") or {}).get("expressionWarnings"), status
    vap = cluster.get("validatingadmissionpolicy", VAP_NAME)
    assert OPERATOR_USER in json.dumps(vap["spec"]["variables"])
    assert vap["spec"]["failurePolicy"] == "Fail"


def test_deletion_order_policy_is_installed_bound_and_type_checks_cleanly(
    cluster: Cluster, installed: list[dict[str, Any]]
) -> None:
    binding = cluster.get("validatingadmissionpolicybinding", DELETION_ORDER_VAP_NAME)
    assert binding["spec"]["policyName"] == DELETION_ORDER_VAP_NAME
    assert binding["spec"]["paramRef"]["parameterNotFoundAction"] == "Allow"

    def checked() -> dict[str, Any]:
        vap = cluster.get("validatingadmissionpolicy", DELETION_ORDER_VAP_NAME)
        status = vap.get("status") or {}
        ok = status.get("observedGeneration") == vap["metadata"]["generation"]
        return status if ok else {}

    status = wait_for(checked, 60, what="the API server's type check of the CEL expressions")
    assert not (status.get("typeChecking") or {}).get("expressionWarnings"), status


def test_generated_objects_never_carry_gitops_tracking_labels_or_annotations(
    cluster: Cluster, installed: list[dict[str, Any]], logdir: Path, clean_policies: None
) -> None:
    """A policy and a namespace both managed by Argo CD / Flux: nothing of theirs is copied."""
    # The cluster-wide bindings would refuse the admin's cleanup below; they are checked above.
    cluster.kubectl(
        "delete",
        "validatingadmissionpolicybinding",
        VAP_NAME,
        DELETION_ORDER_VAP_NAME,
        "--ignore-not-found",
    )
    ns = cluster.namespace("gitops", labels={"nsbaseline-test/gitops": "on"})
    cluster.kubectl(
        "label", "namespace", ns, *[f"{k}={v}" for k, v in GITOPS_TRACKING["labels"].items()]
    )
    cluster.kubectl(
        "annotate",
        "namespace",
        ns,
        *[f"{k}={v}" for k, v in GITOPS_TRACKING["annotations"].items()],
    )
    policy = baseline_policy(
        "gitops",
        namespaceSelector={"matchLabels": {"nsbaseline-test/gitops": "on"}},
        monitoring={"enabled": True},
    )
    policy["metadata"].update(GITOPS_TRACKING)
    cluster.apply(policy)
    with operator_as_service_account(cluster, logdir):
        wait_for(lambda: len(cluster.netpols(ns)) >= 3, 90, what="the gitops namespace's baseline")
        objects = cluster.netpols(ns)
    for name, obj in objects.items():
        meta = obj["metadata"]
        for field in ("labels", "annotations"):
            keys = set(meta.get(field) or {})
            copied = keys & set(GITOPS_TRACKING[field])
            tracking = {k for k in keys if any(p in k for p in TRACKING_PREFIXES)}
            assert not copied and not tracking, f"{name} {field}: {sorted(copied | tracking)}"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "nsbaseline"
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


# ----- Helm ------------------------------------------------------------------------------------


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """What must agree between the installs: everything but labels, annotations, hash suffixes."""
    doc = json.loads(json.dumps(doc))
    doc.pop("status", None)
    meta = doc["metadata"]
    for key in ("labels", "annotations"):
        meta.pop(key, None)
    if doc["kind"] == "Deployment":
        template = doc["spec"]["template"]
        template["metadata"].pop("annotations", None)
        template["metadata"].pop("labels", None)
        for volume in template["spec"]["volumes"]:
            if "configMap" in volume:
                volume["configMap"]["name"] = "nsbaseline-templates"
    if doc["kind"] == "ConfigMap":
        meta["name"] = "nsbaseline-templates"
        doc.pop("data", None)
    return doc


@pytest.fixture(scope="module")
def helm_default() -> list[dict[str, Any]]:
    return helm_template("--include-crds")


def test_helm_chart_renders_the_same_objects_as_kustomize(
    cluster: Cluster, helm_default: list[dict[str, Any]]
) -> None:
    kustomized = {
        (
            d["kind"],
            d["metadata"]["name"].removesuffix("-" + d["metadata"]["name"].split("-")[-1])
            if d["kind"] == "ConfigMap"
            else d["metadata"]["name"],
        ): d
        for d in kustomize(cluster, DEPLOY)
        if d["kind"] != "Namespace"  # Helm installs into a namespace, it does not own it
    }
    helm = by_kind_name(helm_default)
    assert set(helm) == set(kustomized)
    for key, doc in kustomized.items():
        assert _comparable(helm[key]) == _comparable(doc), f"{key} differs between the installs"


def test_helm_output_is_accepted_by_the_api_server(
    cluster: Cluster, helm_default: list[dict[str, Any]]
) -> None:
    rendered = helm_template(
        "--include-crds",
        "--set",
        "defaultPolicy.name=baseline",
        "--set",
        "defaultPolicy.spec.monitoring.enabled=true",
        "--set-string",
        "templates.allow-same-namespace\\.yaml\\.j2=apiVersion: networking.k8s.io/v1\n",
    )
    cluster.kubectl("create", "namespace", INSTALL_NAMESPACE, check=False)
    text = yaml.safe_dump_all(rendered, sort_keys=False)
    proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=text, timeout=120)
    assert "baselinepolicy.nsbaseline.io/baseline" in proc.stdout, proc.stdout
    assert "validatingadmissionpolicy" in proc.stdout


def test_helm_values_switch_the_admission_policy_templates_and_default_policy() -> None:
    bare = by_kind_name(helm_template("--set", "vap.enabled=false", "--set", "replicas=3"))
    assert not {k for k in bare if k[0].startswith("ValidatingAdmissionPolicy")}
    assert not {k for k in bare if k[0] == "BaselinePolicy"}
    assert bare[("Deployment", "nsbaseline")]["spec"]["replicas"] == 3
    assert "data" not in bare[("ConfigMap", "nsbaseline-templates")]

    source = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
    custom = by_kind_name(
        helm_template(
            "--set-string",
            f"templates.extra\\.yaml\\.j2={source}",
            "--set",
            "image.repository=registry.example/nsbaseline,image.tag=1.2.3",
            "--set",
            "defaultPolicy.name=platform",
        )
    )
    assert custom[("ConfigMap", "nsbaseline-templates")]["data"] == {"extra.yaml.j2": source}
    dep = custom[("Deployment", "nsbaseline")]["spec"]["template"]
    assert dep["spec"]["containers"][0]["image"] == "registry.example/nsbaseline:1.2.3"
    assert (
        dep["metadata"]["annotations"]["checksum/templates"]
        != bare[("Deployment", "nsbaseline")]["spec"]["template"]["metadata"]["annotations"][
            "checksum/templates"
        ]
    )
    assert custom[("BaselinePolicy", "platform")]["spec"] == {}

    other_ns = by_kind_name(helm_template(namespace="platform-system"))
    vap = other_ns[("ValidatingAdmissionPolicy", VAP_NAME)]
    assert "system:serviceaccount:platform-system:nsbaseline" in json.dumps(vap["spec"])


def test_helm_refuses_a_template_file_name_the_operator_would_ignore() -> None:
    with pytest.raises(AssertionError, match=r"must end in \.yaml\.j2"):
        helm_template("--set-string", "templates.extra\\.yaml=kind: NetworkPolicy")


def test_chart_crds_are_the_crds_folder() -> None:
    for path in sorted((DEPLOY.parent / "crds").glob("*.yaml")):
        assert (CHART / "crds" / path.name).read_bytes() == path.read_bytes(), path.name
