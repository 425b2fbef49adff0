"""Run the operator's image the way its Deployment runs it: podman, driven by the manifest.

The pod template is read from the install (``kubectl kustomize deploy/``), never restated here:
its security context becomes podman's user, read-only root, dropped capabilities and
no-new-privileges; its args, env, volumes, resource limits, probes and grace period are used as
written. What the kubelet adds is added the same way: the ServiceAccount's token (a real
TokenRequest), the cluster CA and the namespace at
``/var/run/secrets/kubernetes.io/serviceaccount``, ``KUBERNETES_SERVICE_HOST``/``PORT``, the pod's
hostname. Anything in the security context or the
volumes this translation does not know fails loudly instead of being dropped.

Each pod gets a network namespace of its own from :mod:`tests.support.podnet`; cluster DNS is
stood in for by an ``/etc/hosts`` entry for ``kubernetes.default.svc``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import resource
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support import podnet
from tests.support.kube import REPO, Cluster

PODMAN = ("podman", "--runtime", "runc")
BUILD_SCRIPT = REPO / "hack" / "image" / "build.sh"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: Marks the containers this worktree's tests start, so a later run removes only its own leftovers.
OWNER_LABEL = "io.nsbaseline.e2e-owner"
OWNER = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
#: Kubernetes' default when a pod spec does not set terminationGracePeriodSeconds.
DEFAULT_GRACE_SECONDS = 30


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def ulimits() -> list[str]:
    """Explicit limits: podman's defaults are above what this machine lets a container set."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def build_image() -> str:
    """The image built from the Dockerfile by hack/image/build.sh (cached by content).

    Without podman the tests are skipped on a developer's machine, but fail under CI, where
    ``.ci/run`` installs it: a silent skip there would hide a missing install step.
    """
    if shutil.which("podman") is None:
        message = "podman is not installed (apt-get install podman runc debootstrap)"
        if os.environ.get("CI"):
            raise AssertionError(message)
        pytest.skip(message)
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise AssertionError(f"building the image failed:\n{proc.stderr[-4000:]}")
    return proc.stdout.strip().splitlines()[-1]


def remove_leftover_containers() -> None:
    """Remove containers an interrupted earlier run of this worktree's tests left behind."""
    ids = podman(
        "ps", "-a", "--filter", f"label={OWNER_LABEL}={OWNER}", "--format", "{{.ID}}"
    ).stdout.split()
    if ids:
        podman("rm", "--force", "--time", "0", *ids, timeout=180)


# ----- the manifest ------------------------------------------------------------------------
def _quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number (bytes for memory, cores for CPU)."""
    text = str(value)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    suffixes["m"] = 1e-3
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    if not match or (match.group(2) and match.group(2) not in suffixes):
        raise ValueError(f"unsupported quantity {text!r}")
    return float(match.group(1)) * suffixes.get(match.group(2), 1)


@dataclass
class PodTemplate:
    """The Deployment's pod template and the ConfigMaps its volumes refer to."""

    deployment: dict[str, Any]
    configmaps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_docs(cls, docs: Sequence[Mapping[str, Any]], name: str = "nsbaseline") -> PodTemplate:
        (deployment,) = (
            dict(d) for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name
        )
        configmaps = {d["metadata"]["name"]: dict(d) for d in docs if d["kind"] == "ConfigMap"}
        return cls(deployment, configmaps)

    @property
    def namespace(self) -> str:
        return str(self.deployment["metadata"]["namespace"])

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.spec["containers"]
        return dict(container)

    @property
    def grace_seconds(self) -> int:
        return int(self.spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS))

    def port(self, name_or_number: str | int) -> int:
        if isinstance(name_or_number, int):
            return name_or_number
        for port in self.container.get("ports", []):
            if port.get("name") == name_or_number:
                return int(port["containerPort"])
        raise KeyError(f"no container port named {name_or_number!r}")

    def probe(self, kind: str) -> tuple[int, str]:
        """(port, path) of the ``livenessProbe``/``readinessProbe`` httpGet."""
        get = self.container[kind]["httpGet"]
        return self.port(get["port"]), str(get.get("path", "/"))

    def security_context(self) -> dict[str, Any]:
        """The container's effective security context (its own fields win over the pod's)."""
        pod = dict(self.spec.get("securityContext") or {})
        for unsupported in ("fsGroup", "supplementalGroups", "sysctls", "windowsOptions"):
            if unsupported in pod:
                raise NotImplementedError(f"pod securityContext.{unsupported} is not translated")
        pod.pop("fsGroupChangePolicy", None)
        return {**pod, **(self.container.get("securityContext") or {})}


def security_args(context: Mapping[str, Any], image_user: str) -> list[str]:
    """podman options for a container security context; unknown fields are refused."""
    args: list[str] = []
    known = {
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "readOnlyRootFilesystem",
        "allowPrivilegeEscalation",
        "capabilities",
        "seccompProfile",
        "privileged",
    }
    unknown = set(context) - known
    if unknown:
        raise NotImplementedError(f"securityContext fields not translated: {sorted(unknown)}")
    image_uid, _, image_gid = image_user.partition(":")
    uid = context.get("runAsUser", image_uid or "0")
    gid = context.get("runAsGroup", image_gid or "")
    # The kubelet refuses to start the container unless it can verify a numeric non-0 UID.
    if context.get("runAsNonRoot") and (not str(uid).isdigit() or int(uid) == 0):
        raise AssertionError(f"runAsNonRoot with user {uid!r}: the kubelet would refuse it")
    args += ["--user", f"{uid}:{gid}" if gid != "" else str(uid)]
    if context.get("readOnlyRootFilesystem"):
        # Only the root filesystem: no tmpfs podman would otherwise add on /tmp, /run, /var/tmp.
        args += ["--read-only", "--read-only-tmpfs=false"]
    if context.get("privileged"):
        args.append("--privileged")
    if context.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    capabilities = context.get("capabilities") or {}
    for cap in capabilities.get("drop", []):
        args += ["--cap-drop", str(cap).lower() if cap == "ALL" else f"CAP_{cap}"]
    for cap in capabilities.get("add", []):
        args += ["--cap-add", f"CAP_{cap}"]
    seccomp = (context.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":  # podman applies its default profile unless told otherwise
        raise NotImplementedError(f"seccompProfile {seccomp} is not translated")
    return args


def resource_args(resources: Mapping[str, Any]) -> list[str]:
    limits = resources.get("limits") or {}
    args = []
    if "memory" in limits:
        args += ["--memory", str(int(_quantity(limits["memory"])))]
    if "cpu" in limits:
        args += ["--cpus", f"{_quantity(limits['cpu']):g}"]
    return args


# ----- credentials -------------------------------------------------------------------------
@dataclass
class ApiServer:
    """Where the API server is (host side) and the CA it serves with."""

    host: str
    port: int
    ca_pem: bytes

    @classmethod
    def from_kubeconfig(cls, path: Path) -> ApiServer:
        config = yaml.safe_load(path.read_text())
        context_name = config.get("current-context") or config["contexts"][0]["name"]
        context = next(c for c in config["contexts"] if c["name"] == context_name)["context"]
        entry = next(c for c in config["clusters"] if c["name"] == context["cluster"])["cluster"]
        url = urlsplit(entry["server"])
        if "certificate-authority-data" in entry:
            ca = base64.b64decode(entry["certificate-authority-data"])
        else:
            ca = Path(entry["certificate-authority"]).read_bytes()
        return cls(url.hostname or "127.0.0.1", url.port or 443, ca)


def service_account_volume(
    cluster: Cluster, folder: Path, api: ApiServer, service_account: str, namespace: str
) -> Path:
    """What the kubelet mounts for a pod's ServiceAccount: a TokenRequest token, CA, namespace.

    World-readable like the projected volume's default mode 0644, since the container runs as
    an arbitrary UID.
    """
    token = cluster.kubectl(
        "create", "token", service_account, "-n", namespace, "--duration=2h"
    ).stdout.strip()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    for name, data in (
        ("token", token.encode()),
        ("ca.crt", api.ca_pem),
        ("namespace", namespace.encode()),
    ):
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o644)
    return folder


# ----- a pod -------------------------------------------------------------------------------
def pod_name(deployment: str) -> str:
    """A name shaped like a ReplicaSet's pod: <deployment>-<hash>-<suffix>."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    suffix = "".join(secrets.choice(alphabet) for _ in range(5))
    return f"{deployment}-{secrets.token_hex(5)}-{suffix}"


class Pod:
    """One replica of the Deployment as a podman container in a network namespace of its own."""

    def __init__(
        self,
        template: PodTemplate,
        image: str,
        image_user: str,
        api: ApiServer,
        service_account_dir: Path,
        workdir: Path,
        name: str | None = None,
    ) -> None:
        self.template = template
        self.image = image
        self.image_user = image_user
        self.api = api
        self.service_account_dir = service_account_dir
        self.name = name or pod_name(template.deployment["metadata"]["name"])
        self.workdir = workdir / self.name
        self.network = podnet.PodNetwork(api.host, api.port, self.workdir / "forwarder.log")
        self.started_at = 0.0

    @property
    def log_path(self) -> Path:
        return self.workdir / "container.log"

    def env(self) -> list[str]:
        """The container's env as written, plus what the kubelet adds for the API service."""
        env: dict[str, str] = {}
        fields = {"metadata.name": self.name, "metadata.namespace": self.template.namespace}
        for item in self.template.container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            path = ((item.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if path not in fields:
                raise NotImplementedError(
                    f"env {item['name']}: only {sorted(fields)} are translated"
                )
            env[item["name"]] = fields[path]
        host, port = podnet.SERVICE_HOST, podnet.SERVICE_PORT
        # The kubelet sets these for the kubernetes Service even with enableServiceLinks: false.
        env |= {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
            f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
            f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
        }
        return [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]

    def volume_args(self) -> list[str]:
        volumes = {v["name"]: v for v in self.template.spec.get("volumes", [])}
        args: list[str] = []
        for mount in self.template.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            target = mount["mountPath"]
            if "configMap" in volume:
                folder = self.workdir / "volumes" / mount["name"]
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o755)
                configmap = self.template.configmaps[volume["configMap"]["name"]]
                for key, text in (configmap.get("data") or {}).items():
                    (folder / key).write_text(text)
                    (folder / key).chmod(0o644)
                args += ["--volume", f"{folder}:{target}:ro"]  # ConfigMap volumes are read-only
            elif "emptyDir" in volume:
                size = volume["emptyDir"].get("sizeLimit")
                options = "rw,mode=0777" + (f",size={int(_quantity(size))}" if size else "")
                args += ["--tmpfs", f"{target}:{options}"]
            else:
                raise NotImplementedError(
                    f"volume {mount['name']}: {sorted(volume)} not translated"
                )
        if self.template.spec.get("automountServiceAccountToken", True):
            args += ["--volume", f"{self.service_account_dir}:{SERVICE_ACCOUNT_DIR}:ro"]
        return args

    def options(self) -> list[str]:
        """The ``podman run`` options that make a container this pod (name and logging aside)."""
        container = self.template.container
        args = [
            "--hostname",
            self.name,
            "--label",
            f"{OWNER_LABEL}={OWNER}",
            "--network",
            f"ns:{self.network.path}",
            # Cluster DNS's answer for the in-cluster client's "kubernetes.default.svc".
            "--add-host",
            f"kubernetes.default.svc:{podnet.SERVICE_HOST}",
            "--pull",
            "never",
            # The kubelet adds no /etc/passwd entry for runAsUser; podman would by default.
            "--passwd=false",
            *ulimits(),
            *security_args(self.template.security_context(), self.image_user),
            *resource_args(container.get("resources") or {}),
            *self.volume_args(),
            *self.env(),
        ]
        if "workingDir" in container:
            args += ["--workdir", container["workingDir"]]
        if "command" in container:
            args += ["--entrypoint", json.dumps(container["command"])]
        return args

    def podman_args(self) -> list[str]:
        """The whole ``podman run`` command line for this pod (without the ``podman`` prefix)."""
        logging = ["--log-driver", "k8s-file", "--log-opt", f"path={self.log_path}"]
        head = ["run", "--detach", "--name", self.name, *logging, *self.options()]
        return [*head, self.image, *self.template.container.get("args", [])]

    def run_once(self, *command: str, entrypoint: str | None = None) -> str:
        """Run ``command`` in a container confined like this pod's; its stdout."""
        own_network = not self.network.path
        if own_network:
            self.network.start()
        try:
            override = ["--entrypoint", entrypoint] if entrypoint else []
            proc = podman(
                "run",
                "--rm",
                *self.options(),
                *override,
                self.image,
                *command,
                check=False,
                timeout=180,
            )
        finally:
            if own_network:
                self.network.stop()
                self.network.path = ""
        if proc.returncode != 0:
            raise AssertionError(
                f"{command} failed in the image ({proc.returncode}):\n{proc.stderr}"
            )
        return proc.stdout

    def start(self) -> Pod:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.network.start()
        try:
            self.started_at = time.monotonic()
            podman(*self.podman_args(), timeout=180)
        except BaseException:
            self.network.stop()
            raise
        return self

    # ----- observing it --------------------------------------------------------------------
    def http_get(self, port: int, path: str) -> tuple[int, str]:
        return self.network.http_get(port, path)

    def probe_ok(self, kind: str) -> bool:
        """What the kubelet's httpGet probe decides: 2xx/3xx is success."""
        port, path = self.template.probe(kind)
        try:
            status, _ = self.http_get(port, path)
        except OSError:
            return False
        return 200 <= status < 400

    def state(self) -> str:
        return podman(
            "inspect", "--format", "{{.State.Status}}", self.name, check=False
        ).stdout.strip()

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # ----- stopping it ---------------------------------------------------------------------
    def terminate(self) -> tuple[float, int]:
        """What the kubelet does on pod deletion: SIGTERM, then SIGKILL after the grace period.

        Returns (seconds until the container exited, its exit code); 137 means it had to be
        killed.
        """
        grace = self.template.grace_seconds
        start = time.monotonic()
        podman("kill", "--signal", "TERM", self.name)
        try:
            code = int(podman("wait", self.name, timeout=grace).stdout.strip())
        except subprocess.TimeoutExpired:
            podman("kill", "--signal", "KILL", self.name, check=False)
            code = int(podman("wait", self.name, timeout=60).stdout.strip())
        return time.monotonic() - start, code

    def kill(self) -> None:
        """SIGKILL, as when a node dies or the container is OOM-killed: no goodbye."""
        podman("kill", "--signal", "KILL", self.name)
        podman("wait", self.name, timeout=60)

    def remove(self) -> None:
        """Remove the container and its namespace's forwarder; keep the log."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            podman("rm", "--force", "--time", "0", self.name, check=False, timeout=120)
        self.network.stop()


def image_user(image: str) -> str:
    return podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
