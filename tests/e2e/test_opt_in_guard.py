"""The opt-in guard: only allowed identities may take a namespace out of a BaselinePolicy or
change its nsbaseline.io/ annotations, tested with real RBAC identities.

The ValidatingAdmissionPolicy is the one ``deploy/components/opt-in-guard`` ships, with one
identity added to its ``allowedUsers`` variable the way the docs show (a GitOps controller's
ServiceAccount); its binding is narrowed to this run's namespaces so the rest of the suite (which
relabels namespaces as the admin) cannot be affected.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from nsbaseline import protections
from tests.support.deploy import as_user, install_base, token_kubeconfig
from tests.support.gate import component_objects
from tests.support.kube import E2E_DIR, REPO, TEST_LABEL, Cluster, baseline_policy, wait_for

pytestmark = pytest.mark.e2e

GUARD = REPO / "deploy" / "components" / "opt-in-guard" / "validatingadmissionpolicies.yaml"
SCOPE = "nsbaseline-test/guard-scope"
OPT_IN = "nsbaseline-test/guard"
EXCLUDE = "nsbaseline-test/guard-exclude"
POLICY = "guarded"
PORTS = "nsbaseline.io/ingress-ports"


@dataclass
class Identities:
    editor: Cluster  # may edit and create namespaces, nothing else
    policy_admin: Cluster  # may also update BaselinePolicies
    gitops: Cluster  # listed in the guard's allowedUsers
    admin: Cluster  # system:masters


@pytest.fixture(scope="module")
def scope(cluster: Cluster) -> Iterator[str]:
    scope = uuid.uuid4().hex[:6]
    install_base(cluster)
    cluster.kubectl("delete", "baselinepolicies", POLICY, "--ignore-not-found")
    vap, binding = component_objects(GUARD)
    assert binding["spec"]["paramRef"] == {"selector": {}, "parameterNotFoundAction": "Allow"}
    vap = copy.deepcopy(vap)
    variables = {v["name"]: v for v in vap["spec"]["variables"]}
    assert json.loads(variables["allowedUsers"]["expression"].replace("'", '"')) == []
    variables["allowedUsers"]["expression"] = f"['system:serviceaccount:{_home(scope)}:gitops']"
    binding = copy.deepcopy(binding)
    binding["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {SCOPE: scope}}}
    selector = {
        "matchLabels": {OPT_IN: "on", SCOPE: scope},
        "matchExpressions": [{"key": EXCLUDE, "operator": "DoesNotExist"}],
    }
    cluster.apply(vap, binding, baseline_policy(POLICY, namespaceSelector=selector))
    yield scope
    cluster.kubectl("delete", "validatingadmissionpolicybinding", binding["metadata"]["name"])
    cluster.kubectl("delete", "validatingadmissionpolicy", vap["metadata"]["name"])
    cluster.kubectl("delete", "baselinepolicy", POLICY, "--ignore-not-found")
    cluster.kubectl("delete", "namespaces", "-l", f"{SCOPE}={scope}", "--wait=false")
    cluster.kubectl("delete", "clusterrolebinding,clusterrole", "-l", f"{SCOPE}={scope}")


def _home(scope: str) -> str:
    return f"guard-{scope}-identities"


@pytest.fixture(scope="module")
def identities(cluster: Cluster, scope: str) -> Identities:
    home = _home(scope)
    cluster.apply(_namespace(home, scope, opt_in=False))
    logdir = E2E_DIR / "logs" / "test_opt_in_guard"
    roles = {
        "editor": [("", "namespaces", ["get", "list", "watch", "create", "update", "patch"])],
        "policy-admin": [
            ("", "namespaces", ["get", "list", "watch", "create", "update", "patch"]),
            ("nsbaseline.io", "baselinepolicies", ["get", "list", "watch", "update", "patch"]),
        ],
        "gitops": [("", "namespaces", ["get", "list", "watch", "create", "update", "patch"])],
    }
    clients: dict[str, Cluster] = {}
    for name, rules in roles.items():
        role = f"guard-{scope}-{name}"
        cluster.kubectl("create", "serviceaccount", name, "-n", home)
        cluster.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": role, "labels": {SCOPE: scope}},
                "rules": [
                    {"apiGroups": [g], "resources": [r], "verbs": verbs} for g, r, verbs in rules
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": role, "labels": {SCOPE: scope}},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": home}],
            },
        )
        clients[name] = as_user(
            cluster, token_kubeconfig(cluster, logdir / f"{name}.kubeconfig", name, home)
        )
    editor = clients["editor"]
    # RBAC alone lets the editor do everything below: every refusal comes from admission.
    assert editor.kubectl("auth", "can-i", "patch", "namespaces").stdout.strip() == "yes"
    assert (
        editor.kubectl(
            "auth", "can-i", "update", "baselinepolicies.nsbaseline.io", check=False
        ).stdout.strip()
        == "no"
    )
    # The API server loads new policies asynchronously: wait until the guard refuses.
    probe = f"guard-{scope}-probe"
    cluster.apply(_namespace(probe, scope))
    wait_for(
        lambda: (
            editor.kubectl(
                "label", "namespace", probe, f"{OPT_IN}-", "--dry-run=server", check=False
            ).returncode
            != 0
        ),
        60,
        what="the opt-in guard to be in force",
    )
    return Identities(editor, clients["policy-admin"], clients["gitops"], cluster)


def _namespace(
    name: str,
    scope: str,
    opt_in: bool = True,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    labels = {TEST_LABEL: "true", SCOPE: scope, **({OPT_IN: "on"} if opt_in else {})}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels, "annotations": annotations or {}},
    }


def _changes(ns: str, scope: str) -> dict[str, tuple[str, ...]]:
    """What only allowed identities may do to a selected namespace (kubectl arguments)."""
    return {
        "remove the opt-in label": ("label", "namespace", ns, f"{OPT_IN}-"),
        "change the opt-in label": ("label", "namespace", ns, "--overwrite", f"{OPT_IN}=off"),
        "add the exclusion label": ("label", "namespace", ns, f"{EXCLUDE}=yes"),
        "set an nsbaseline.io annotation": ("annotate", "namespace", ns, f"{PORTS}=1-65535"),
        "change an nsbaseline.io annotation": (
            "annotate",
            "namespace",
            f"{ns}-annotated",
            "--overwrite",
            f"{PORTS}=1-65535",
        ),
        "remove an nsbaseline.io annotation": (
            "annotate",
            "namespace",
            f"{ns}-annotated",
            f"{PORTS}-",
        ),
    }


@pytest.fixture
def namespaces(cluster: Cluster, scope: str) -> str:
    """A selected namespace, and a selected one with an annotation (set by the admin)."""
    ns = f"guard-{scope}-{uuid.uuid4().hex[:4]}"
    cluster.apply(
        _namespace(ns, scope), _namespace(f"{ns}-annotated", scope, annotations={PORTS: "443"})
    )
    return ns


def test_a_namespace_editor_cannot_take_a_namespace_out_or_change_its_parameters(
    cluster: Cluster, scope: str, identities: Identities, namespaces: str
) -> None:
    before = {
        n: cluster.get("namespace", n)["metadata"] for n in (namespaces, f"{namespaces}-annotated")
    }
    for what, args in _changes(namespaces, scope).items():
        proc = identities.editor.kubectl(*args, check=False)
        assert proc.returncode != 0, f"{what}: admitted"
        message = proc.stderr
        assert protections.OPT_IN_GUARD_POLICY in message, what
        assert f"is selected by BaselinePolicy {POLICY}" in message, (what, message)
        assert "ask your platform team" in message, (what, message)
        if "label" in what:
            keys = message.split("the labels it selects on (", 1)[1].split(")", 1)[0]
            assert set(keys.split(", ")) == {OPT_IN, SCOPE, EXCLUDE}, message
        else:
            assert f"annotations ({PORTS})" in message, message
    for name, meta in before.items():
        after = cluster.get("namespace", name)["metadata"]
        assert after["resourceVersion"] == meta["resourceVersion"], f"{name} changed"


def test_a_namespace_editor_cannot_smuggle_parameters_in_by_opting_in_or_creating(
    cluster: Cluster, scope: str, identities: Identities
) -> None:
    annotated = f"guard-{scope}-{uuid.uuid4().hex[:4]}"
    cluster.apply(_namespace(annotated, scope, opt_in=False, annotations={PORTS: "1-65535"}))
    proc = identities.editor.kubectl("label", "namespace", annotated, f"{OPT_IN}=on", check=False)
    assert proc.returncode != 0 and f"annotations ({PORTS})" in proc.stderr, proc.stderr
    created = _namespace(f"{annotated}-new", scope, annotations={PORTS: "1-65535"})
    proc = identities.editor.apply(created, check=False)
    assert proc.returncode != 0 and f"annotations ({PORTS})" in proc.stderr, proc.stderr


def test_a_namespace_editor_keeps_everything_else(
    cluster: Cluster, scope: str, identities: Identities, namespaces: str
) -> None:
    editor = identities.editor
    editor.kubectl("label", "namespace", namespaces, "team=a")
    editor.kubectl("annotate", "namespace", namespaces, "example.com/owner=team-a")
    # Opting in is always allowed; so is anything on a namespace no policy selects.
    plain = f"guard-{scope}-{uuid.uuid4().hex[:4]}"
    cluster.apply(_namespace(plain, scope, opt_in=False))
    editor.kubectl("annotate", "namespace", plain, f"{PORTS}=8080")
    editor.kubectl("annotate", "namespace", plain, f"{PORTS}-")
    editor.kubectl("label", "namespace", plain, f"{OPT_IN}=on")
    editor.apply(_namespace(f"{plain}-new", scope))
    assert cluster.get("namespace", f"{plain}-new") is not None


@pytest.mark.parametrize("who", ["admin", "policy_admin", "gitops"])
def test_allowed_identities_may_do_all_of_it(
    cluster: Cluster, scope: str, identities: Identities, namespaces: str, who: str
) -> None:
    """The cluster admin, anyone allowed to update the BaselinePolicy, and listed identities."""
    client: Cluster = getattr(identities, who)
    for what, args in _changes(namespaces, scope).items():
        proc = client.kubectl(*args, "--dry-run=server", check=False)
        assert proc.returncode == 0, f"{who}: {what}: {proc.stderr}"
    created = _namespace(f"{namespaces}-{who.replace('_', '-')}", scope, annotations={PORTS: "80"})
    proc = client.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(created), check=False
    )
    assert proc.returncode == 0, f"{who}: {proc.stderr}"


def test_the_guard_follows_the_policy_selector_without_reinstall(
    cluster: Cluster, scope: str, identities: Identities, namespaces: str
) -> None:
    """Once the policy no longer relies on the label, the guard no longer protects it."""
    selector = {"matchLabels": {SCOPE: scope, "nsbaseline-test/guard-other": "on"}}
    cluster.kubectl(
        "patch",
        "baselinepolicy",
        POLICY,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"namespaceSelector": selector}}),
    )
    try:
        wait_for(
            lambda: (
                identities.editor.kubectl(
                    "label", "namespace", namespaces, f"{OPT_IN}-", "--dry-run=server", check=False
                ).returncode
                == 0
            ),
            30,
            what="the guard to read the changed selector",
        )
    finally:
        cluster.kubectl(
            "patch",
            "baselinepolicy",
            POLICY,
            "--type=merge",
            "-p",
            json.dumps(
                {
                    "spec": {
                        "namespaceSelector": {
                            "matchLabels": {OPT_IN: "on", SCOPE: scope},
                            "matchExpressions": [{"key": EXCLUDE, "operator": "DoesNotExist"}],
                        }
                    }
                }
            ),
        )
