"""The guardrail on the real API server, driven by the same table of cases as ``lint``.

A namespace admin (a ServiceAccount with the ``admin`` ClusterRole bound in each namespace)
creates every NetworkPolicy of ``tests.support.widening_cases``: the refused ones must be refused
with exactly the words ``nsbaseline lint`` prints for them, the others admitted. The cluster
admin and the operator's ServiceAccount are never refused, namespaces no policy selects are never
affected, and a change to a BaselinePolicy's egressCIDRs changes what is admitted at once.

The ValidatingAdmissionPolicy is exactly the one ``deploy/components/guardrail`` ships; only its
binding is narrowed to this run's namespaces.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from nsbaseline import lint, widening, widening_codes
from tests.support.deploy import OPERATOR_USER, as_user, install_base, token_kubeconfig
from tests.support.gate import component_objects
from tests.support.kube import E2E_DIR, REPO, TEST_LABEL, Cluster, manifest, wait_for
from tests.support.widening_cases import CASES, PROFILES, Case, netpol, object_name, policy

pytestmark = pytest.mark.e2e

GUARDRAIL = REPO / "deploy" / "components" / "guardrail" / "validatingadmissionpolicies.yaml"
SCOPE = "nsbaseline-test/guardrail-scope"
PROFILE = "nsbaseline-test/guardrail-profile"


@dataclass
class Env:
    scope: str
    tenant: Cluster
    namespaces: dict[tuple[str, str], str]  # (profile, annotations as JSON) -> namespace
    unselected: str
    policies: dict[str, dict[str, Any]]  # profile -> BaselinePolicy as applied
    objects: dict[str, dict[str, Any]]  # namespace -> Namespace as the API server has it

    def namespace(self, case: Case) -> str:
        return self.namespaces[(case.profile, json.dumps(case.annotations, sort_keys=True))]


def _policy_name(profile: str) -> str:
    return f"guardrail-{profile}"


@pytest.fixture(scope="module")
def env(cluster: Cluster) -> Iterator[Env]:
    scope = uuid.uuid4().hex[:6]
    install_base(cluster)
    vap, binding = component_objects(GUARDRAIL)
    binding = copy.deepcopy(binding)
    binding["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {SCOPE: scope}}}
    policies = {
        p: policy(p, _policy_name(p), {"matchLabels": {SCOPE: scope, PROFILE: p}}) for p in PROFILES
    }
    cluster.apply(vap, binding, *policies.values())
    home = f"guardrail-{scope}-tenant"
    namespaces: dict[tuple[str, str], str] = {}
    for case in CASES:
        key = (case.profile, json.dumps(case.annotations, sort_keys=True))
        if key not in namespaces:
            namespaces[key] = f"guardrail-{scope}-{len(namespaces)}"
            cluster.apply(
                _namespace(namespaces[key], {SCOPE: scope, PROFILE: case.profile}, case.annotations)
            )
    unselected = f"guardrail-{scope}-unselected"
    cluster.apply(_namespace(home, {SCOPE: scope}), _namespace(unselected, {SCOPE: scope}))
    cluster.kubectl("create", "serviceaccount", "tenant", "-n", home)
    for ns in [*namespaces.values(), unselected]:
        cluster.kubectl(
            "create",
            "rolebinding",
            "tenant-admin",
            "-n",
            ns,
            "--clusterrole=admin",
            f"--serviceaccount={home}:tenant",
        )
    kubeconfig = token_kubeconfig(
        cluster, E2E_DIR / "logs" / "test_guardrail" / "tenant.kubeconfig", "tenant", home
    )
    tenant = as_user(cluster, kubeconfig)
    objects = {ns: cluster.get("namespace", ns) for ns in namespaces.values()}
    environment = Env(scope, tenant, namespaces, unselected, policies, objects)
    refused = next(c for c in CASES if c.expect)
    probe = netpol(refused, environment.namespace(refused))
    wait_for(
        lambda: (
            tenant.kubectl(
                "apply", "--dry-run=server", "-f", "-", input=manifest([probe]), check=False
            ).returncode
            != 0
        ),
        60,
        what="the guardrail to be in force",
    )
    yield environment
    cluster.kubectl("delete", "validatingadmissionpolicybinding", binding["metadata"]["name"])
    cluster.kubectl("delete", "validatingadmissionpolicy", vap["metadata"]["name"])
    cluster.kubectl(
        "delete", "baselinepolicies", *(_policy_name(p) for p in PROFILES), "--ignore-not-found"
    )
    cluster.kubectl("delete", "namespaces", "-l", f"{SCOPE}={scope}", "--wait=false")


def _namespace(
    name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {TEST_LABEL: "true", **labels},
            "annotations": annotations or {},
        },
    }


def _lint(env: Env, body: dict[str, Any]) -> list[widening.Widening]:
    """What lint reports for ``body``, given the namespace as the API server has it."""
    namespace = env.objects[body["metadata"]["namespace"]]
    docs = [*env.policies.values(), namespace, body]
    found = widening.for_documents(body, docs)
    reported = {
        (f.code, f.path, f.message)
        for f in lint.lint([lint.Located(d, "cases.yaml") for d in docs])
        if f.code in widening_codes.CODES
    }
    assert {(w.code, w.field, w.text) for w in found} == reported, "lint and widening disagree"
    return found


def _create(client: Cluster, body: dict[str, Any], *flags: str) -> subprocess.CompletedProcess[str]:
    return client.kubectl("create", *flags, "-f", "-", input=manifest([body]), check=False)


@pytest.fixture(scope="module")
def tenant_results(env: Env) -> dict[str, str]:
    """Every case created by the namespace admin in one request stream (one kubectl: the table is
    long); per NetworkPolicy name, the API server's refusal or "" when it was created."""
    docs = [netpol(c, env.namespace(c)) for c in CASES]
    proc = env.tenant.kubectl("create", "-f", "-", input=manifest(docs), check=False, timeout=120)
    results = {object_name(c): "" for c in CASES}
    for line in proc.stderr.splitlines():
        if '" is forbidden: ' in line:
            name = line.split('networkpolicies.networking.k8s.io "', 1)[1].split('"', 1)[0]
            results[name] = line
        elif line.strip():
            raise AssertionError(f"unexpected kubectl output: {line}")
    created = {line.split("/", 1)[1].split(" ", 1)[0] for line in proc.stdout.splitlines()}
    assert created == {name for name, refusal in results.items() if not refusal}, proc.stdout
    return results


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_lint_and_the_guardrail_agree_word_for_word(
    env: Env, tenant_results: dict[str, str], case: Case
) -> None:
    body = netpol(case, env.namespace(case))
    found = _lint(env, body)
    refusal = tenant_results[object_name(case)]
    if case.expect is None:
        assert not found
        assert not refusal, f"{case.id} refused: {refusal}"
        return
    assert found and (found[0].code, found[0].field) == case.expect
    assert refusal, f"{case.id}: admitted"
    ns, name = body["metadata"]["namespace"], object_name(case)
    expected = (
        f"ValidatingAdmissionPolicy 'nsbaseline-guardrail' with binding 'nsbaseline-guardrail' "
        f"denied request: NetworkPolicy {ns}/{name} {found[0]}"
    )
    assert refusal.endswith(expected), f"\nwant: {expected}\ngot:  {refusal}"
    assert refusal.startswith("Error from server (Forbidden)")


def _dry_run_all(client: Cluster, docs: list[dict[str, Any]], *flags: str) -> str:
    """Server-side dry run of every document at once (admission runs; nothing is stored); the
    errors, if any."""
    proc = client.kubectl(
        "apply", "--dry-run=server", *flags, "-f", "-", input=manifest(docs), check=False
    )
    return proc.stderr if proc.returncode else ""


def test_namespaces_no_policy_selects_are_never_affected(env: Env) -> None:
    assert _dry_run_all(env.tenant, [netpol(c, env.unselected) for c in CASES]) == ""


@pytest.mark.parametrize("who", ["cluster admin", "operator"])
def test_the_cluster_admin_and_the_operator_are_never_refused(
    cluster: Cluster, env: Env, who: str
) -> None:
    flags = [f"--as={OPERATOR_USER}"] if who == "operator" else []
    docs = [netpol(c, env.namespace(c)) for c in CASES]
    assert _dry_run_all(cluster, docs, *flags) == ""


def test_changing_egress_cidrs_changes_what_is_admitted_without_reinstall(
    cluster: Cluster, env: Env
) -> None:
    case = next(c for c in CASES if c.id == "egress-to-a-network-outside-the-policy")
    body = netpol(case, env.namespace(case))
    body["metadata"]["name"] = "after-egress-cidrs-change"
    assert _create(env.tenant, body, "--dry-run=server").returncode != 0
    name = _policy_name(case.profile)
    original = env.policies[case.profile]["spec"]["egressCIDRs"]
    widened = [*original, {"cidr": "192.0.2.0/24", "ports": [{"port": 443}]}]

    def patch(cidrs: list[dict[str, Any]]) -> None:
        cluster.kubectl(
            "patch",
            "baselinepolicy",
            name,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"egressCIDRs": cidrs}}),
        )

    patch(widened)
    try:
        # Every port to 192.0.2.0/24 is still more than the policy allows; 443 is not.

        def refusal() -> str:
            stderr = _create(env.tenant, body, "--dry-run=server").stderr
            return stderr if "[egress-ipblock-ports]" in stderr else ""

        message = wait_for(refusal, 30, what="the guardrail to read the new egressCIDRs")
        assert "allows egress to 192.0.2.0/24 on every port" in message
        body["spec"]["egress"][0]["ports"] = [{"port": 443}]
        proc = _create(env.tenant, body)
        assert proc.returncode == 0, proc.stderr
    finally:
        patch(original)
    body["metadata"]["name"] = "after-egress-cidrs-restored"
    wait_for(
        lambda: _create(env.tenant, body, "--dry-run=server").returncode != 0,
        30,
        what="the guardrail to read the restored egressCIDRs",
    )


def test_updates_are_checked_and_metadata_edits_of_older_policies_are_not(
    cluster: Cluster, env: Env
) -> None:
    ns = env.namespace(next(c for c in CASES if c.profile == "full" and not c.annotations))
    allow: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "widened-later", "namespace": ns},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {}}]}],
        },
    }
    assert _create(env.tenant, allow).returncode == 0
    widen = json.dumps({"spec": {"ingress": [{"from": [{"namespaceSelector": {}}]}]}})
    proc = env.tenant.kubectl(
        "patch",
        "networkpolicy",
        "widened-later",
        "-n",
        ns,
        "--type=merge",
        "-p",
        widen,
        check=False,
    )
    assert proc.returncode != 0 and "[ingress-from-all-namespaces]" in proc.stderr, proc.stderr
    # A wide policy from before the guardrail (here: the admin's) keeps working for metadata
    # edits; only spec changes are checked.
    legacy = copy.deepcopy(allow)
    legacy["metadata"]["name"] = "legacy-allow-all"
    legacy["spec"]["ingress"] = [{}]
    cluster.apply(legacy)
    env.tenant.kubectl("label", "networkpolicy", "legacy-allow-all", "-n", ns, "reviewed=yes")
    env.tenant.kubectl("delete", "networkpolicy", "legacy-allow-all", "-n", ns)


def test_lint_on_the_cluster_reports_what_the_guardrail_would_refuse(
    cluster: Cluster, env: Env, tmp_path: Path
) -> None:
    """`nsbaseline lint --cluster POLICY.yaml`: an admin's wide policy, in the guardrail's words."""
    ns = env.namespace(next(c for c in CASES if c.profile == "full" and not c.annotations))
    wide = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "admin-allow-all", "namespace": ns},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},
    }
    cluster.apply(wide)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(env.policies["full"]))
    proc = subprocess.run(
        [sys.executable, "-m", "nsbaseline.cli", "lint", "--cluster", str(policy_file)],
        capture_output=True,
        text=True,
        env=cluster.env,
        timeout=120,
    )
    (found,) = _lint(env, wide)
    line = f"NetworkPolicy {ns}/admin-allow-all: error: {found}"
    assert line in proc.stdout.splitlines(), proc.stdout + proc.stderr
    assert proc.returncode == 1
