"""The e2e image tests run the container "the way the Deployment runs it": pin that translation.

``tests/support/pod.py`` turns the manifest's pod template into ``podman run`` options. If it
silently dropped a field (a capability drop, the read-only root, an env var), the image tests
would pass while testing a laxer pod than users deploy; these checks need no podman.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube import REPO
from tests.support.pod import ApiServer, Pod, PodTemplate, security_args

IMAGE = "localhost/nsbaseline:test"
NAME = "nsbaseline-0123456789-abcde"


def _template(edit: Any = None) -> PodTemplate:
    docs = list(yaml.safe_load_all((REPO / "deploy" / "base" / "deployment.yaml").read_text()))
    docs = [copy.deepcopy(d) for d in docs if d]
    docs.append(
        {
            "kind": "ConfigMap",
            "metadata": {"name": "nsbaseline-templates"},
            "data": {"extra.yaml.j2": "kind: NetworkPolicy\n"},
        }
    )
    template = PodTemplate.from_docs(docs)
    if edit is not None:
        edit(template.spec)
    return template


def _args(tmp_path: Path, template: PodTemplate | None = None) -> list[str]:
    pod = Pod(
        template or _template(),
        IMAGE,
        "65532:65532",
        ApiServer("127.0.0.1", 6443, b"ca"),
        tmp_path / "sa",
        tmp_path,
        name=NAME,
    )
    pod.network.path = "/proc/1/fd/3"
    return pod.podman_args()


def _pairs(args: list[str]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(args))


def test_the_manifests_security_context_becomes_podmans_confinement(tmp_path: Path) -> None:
    pairs = _pairs(_args(tmp_path))
    assert ("--user", "65532:65532") in pairs
    assert ("--read-only", "--read-only-tmpfs=false") in pairs
    assert ("--cap-drop", "all") in pairs
    assert ("--security-opt", "no-new-privileges") in pairs
    assert not any(flag == "--privileged" or flag == "--cap-add" for flag, _ in pairs)


def test_the_pod_gets_its_own_network_namespace_never_the_hosts(tmp_path: Path) -> None:
    pairs = _pairs(_args(tmp_path))
    networks = [value for flag, value in pairs if flag == "--network"]
    assert networks == ["ns:/proc/1/fd/3"]
    assert ("--add-host", "kubernetes.default.svc:127.0.0.1") in pairs


def test_args_env_volumes_and_limits_are_the_manifests(tmp_path: Path) -> None:
    template = _template()
    args = _args(tmp_path, template)
    pairs = _pairs(args)
    image_at = args.index(IMAGE)
    assert args[image_at + 1 :] == template.container["args"]
    assert ("--env", f"POD_ID={NAME}") in pairs, "fieldRef metadata.name is the pod's name"
    assert ("--env", "KUBERNETES_SERVICE_HOST=127.0.0.1") in pairs
    assert ("--env", "KUBERNETES_SERVICE_PORT=443") in pairs
    assert ("--tmpfs", f"/tmp:rw,mode=0777,size={16 * 2**20}") in pairs, "the emptyDir"
    assert ("--memory", str(512 * 2**20)) in pairs
    assert ("--cpus", "1") in pairs
    sa = f"{tmp_path / 'sa'}:/var/run/secrets/kubernetes.io/serviceaccount:ro"
    assert ("--volume", sa) in pairs
    templates = tmp_path / NAME / "volumes" / "templates"
    assert ("--volume", f"{templates}:/etc/nsbaseline/templates:ro") in pairs
    assert (templates / "extra.yaml.j2").read_text() == "kind: NetworkPolicy\n"


def test_fields_the_translation_does_not_know_fail_instead_of_being_dropped(
    tmp_path: Path,
) -> None:
    def proc_mount(spec: dict[str, Any]) -> None:
        spec["containers"][0]["securityContext"]["procMount"] = "Unmasked"

    with pytest.raises(NotImplementedError, match="procMount"):
        _args(tmp_path, _template(proc_mount))

    def host_path(spec: dict[str, Any]) -> None:
        spec["volumes"][1] = {"name": "tmp", "hostPath": {"path": "/tmp"}}

    with pytest.raises(NotImplementedError, match="hostPath"):
        _args(tmp_path, _template(host_path))

    def secret_env(spec: dict[str, Any]) -> None:
        spec["containers"][0]["env"].append(
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
        )

    with pytest.raises(NotImplementedError, match="env X"):
        _args(tmp_path, _template(secret_env))


def test_run_as_non_root_refuses_uid_0_like_the_kubelet() -> None:
    with pytest.raises(AssertionError, match="kubelet would refuse"):
        security_args({"runAsNonRoot": True, "runAsUser": 0}, "65532:65532")
    with pytest.raises(AssertionError, match="kubelet would refuse"):
        security_args({"runAsNonRoot": True}, "root")
    assert security_args({"runAsNonRoot": True}, "65532:65532")[:2] == ["--user", "65532:65532"]
