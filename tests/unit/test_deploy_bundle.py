"""The install bundles agree with the code and with each other, without a cluster.

The e2e tests apply them for real; these catch the cheap mistakes first: a stale CRD copy, an
admission policy keyed on a label the operator no longer sets, an identity that is not the
ServiceAccount the RBAC binds, a pod that could write to its image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hack import sync_deploy
from nsbaseline import names

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(path: Path, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _docs(path) if d["kind"] == kind]
    return doc


def test_crd_copies_are_identical_to_the_crds_folder() -> None:
    assert sync_deploy.stale_copies() == [], "run `make deploy-sync`"


def test_stale_copy_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, target = tmp_path / "crds", tmp_path / "copy"
    source.mkdir()
    target.mkdir()
    (source / "a.yaml").write_text("kind: A\n")
    (target / "a.yaml").write_text("kind: B\n")
    (target / "old.yaml").write_text("kind: Old\n")
    monkeypatch.setattr(sync_deploy, "REPO", tmp_path)
    monkeypatch.setattr(sync_deploy, "SOURCE", source)
    monkeypatch.setattr(sync_deploy, "TARGETS", (target,))
    assert sync_deploy.stale_copies() == [
        "copy/a.yaml differs from crds/a.yaml",
        "copy/old.yaml has no source in crds/",
    ]
    sync_deploy.sync()
    assert sync_deploy.stale_copies() == []
    assert sorted(p.name for p in target.iterdir()) == ["a.yaml"]


def test_admission_policy_keys_on_the_labels_the_operator_sets() -> None:
    vap = _one(DEPLOY / "admission" / "validatingadmissionpolicy.yaml", "ValidatingAdmissionPolicy")
    condition = vap["spec"]["matchConditions"][0]["expression"]
    assert f"'{names.MANAGED_BY_LABEL}'" in condition
    assert f"== '{names.MANAGED_BY_VALUE}'" in condition
    policy_var = {v["name"]: v["expression"] for v in vap["spec"]["variables"]}["policy"]
    assert f"'{names.POLICY_LABEL}'" in policy_var
    rules = vap["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [
        {
            "apiGroups": ["networking.k8s.io"],
            "apiVersions": ["*"],
            "resources": ["networkpolicies"],
            "operations": ["UPDATE", "DELETE"],
        }
    ]


def test_admission_policy_trusts_exactly_the_service_account_the_rbac_binds() -> None:
    vap = _one(DEPLOY / "admission" / "validatingadmissionpolicy.yaml", "ValidatingAdmissionPolicy")
    allowed = {v["name"]: v["expression"] for v in vap["spec"]["variables"]}["allowedUsers"]
    users = set(yaml.safe_load(allowed))
    binding = _one(DEPLOY / "base" / "rbac.yaml", "ClusterRoleBinding")
    (subject,) = binding["subjects"]
    operator = f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
    assert users == {
        operator,
        "system:serviceaccount:kube-system:generic-garbage-collector",
        "system:serviceaccount:kube-system:namespace-controller",
        "system:kube-controller-manager",
    }


DELETION_ORDER = DEPLOY / "admission" / "deletion-order.yaml"


def test_deletion_order_policy_finds_the_same_namespaces_default_deny_by_our_labels() -> None:
    """The parameter is the admitted object's own namespace's default-deny: a selector on the
    labels the operator sets, no paramRef.namespace, and no default-deny means nothing to
    protect."""
    vap = _one(DELETION_ORDER, "ValidatingAdmissionPolicy")
    binding = _one(DELETION_ORDER, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert vap["spec"]["paramKind"] == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
    }
    ref = binding["spec"]["paramRef"]
    assert "namespace" not in ref and "name" not in ref
    assert ref["parameterNotFoundAction"] == "Allow"
    assert ref["selector"] == {
        "matchLabels": {
            names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE,
            names.PIECE_LABEL: names.DEFAULT_DENY,
        }
    }
    managed = {c["name"]: c["expression"] for c in vap["spec"]["matchConditions"]}
    for token in (
        names.MANAGED_BY_LABEL,
        names.MANAGED_BY_VALUE,
        names.POLICY_LABEL,
        names.PIECE_LABEL,
        names.DEFAULT_DENY,
    ):
        assert f"'{token}'" in managed["managed-allow-piece"], token
    assert f"'{names.POLICY_LABEL}'" in vap["spec"]["validations"][0]["expression"]
    assert vap["spec"]["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["networking.k8s.io"],
            "apiVersions": ["*"],
            "resources": ["networkpolicies"],
            "operations": ["DELETE"],
        }
    ]


def test_deletion_order_policy_exempts_exactly_the_service_account_the_rbac_binds() -> None:
    vap = _one(DELETION_ORDER, "ValidatingAdmissionPolicy")
    expression = {c["name"]: c["expression"] for c in vap["spec"]["matchConditions"]}[
        "not-the-operator"
    ]
    binding = _one(DEPLOY / "base" / "rbac.yaml", "ClusterRoleBinding")
    (subject,) = binding["subjects"]
    operator = f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
    assert expression.strip() == f"request.userInfo.username != '{operator}'"


def test_the_default_install_includes_the_admission_component_and_base_does_not() -> None:
    top = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert top["resources"] == ["base"] and top["components"] == ["admission"]
    base = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    assert not any("admission" in r for r in base["resources"])
    assert "components" not in base


def test_operator_pod_cannot_write_to_its_image_or_gain_privileges() -> None:
    dep = _one(DEPLOY / "base" / "deployment.yaml", "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsUser"] == 65532 == sc["runAsUser"]
    # The only writable paths are volumes: the API client's temporary CA file lands in /tmp.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/tmp"]["name"] == "tmp"
    assert mounts["/etc/nsbaseline/templates"]["readOnly"] is True


def test_example_policy_is_kept_out_of_the_base_install() -> None:
    """A CRD and objects of its kind cannot be created by one `kubectl apply`."""
    for path in (DEPLOY / "base").glob("*.yaml"):
        assert all(d.get("kind") != names.KIND for d in _docs(path)), path
    example = _one(DEPLOY / "examples" / "baselinepolicy.yaml", names.KIND)
    assert example["apiVersion"] == names.API_VERSION
