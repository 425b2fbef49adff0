"""A real GitOps engine for the end-to-end tests: Argo CD, its Redis, and a Git server, all local.

- :class:`GitServer` serves one bare repository over Git's smart HTTP protocol on loopback
  (``git http-backend`` behind a small threaded HTTP server in this process), the way a Git host
  serves ``https://.../cluster-config.git``; commits are pushed to it from a work tree.
- :class:`ArgoCD` runs ``redis-server`` (Debian package), Argo CD's repo server and application
  controller (built from the argo-cd Go module by ``hack/gitops/build.sh``) against the test
  cluster, each on a free loopback port, and stops exactly the processes it started. Argo CD's
  CRDs and default config come from the argo-cd module in the Go module cache, never retyped.
- :func:`kstatus` and :func:`lua_health` compute health with the ecosystem's own code: kstatus
  (upstream and Flux's fork), Flux's CEL health checks, and Argo CD's Lua evaluator.
- :class:`DeployedOperator` runs the operator the GitOps-applied Deployment describes, as a
  local process (nothing runs pods here).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.support.deploy import INSTALL_NAMESPACE, token_kubeconfig
from tests.support.kube import REPO, Cluster, OperatorProcess, free_port, wait_for

GITOPS_BUILD = REPO / "hack" / "gitops" / "build.sh"
KSTATUS_BUILD = REPO / "hack" / "kstatus" / "build.sh"
#: The shipped GitOps files (docs/gitops.md shows them byte for byte; a unit test checks that).
EXAMPLES = REPO / "docs" / "examples" / "gitops"
ARGOCD_NAMESPACE = "argocd"
HEALTH_KEY = "resource.customizations.health.nsbaseline.io_BaselinePolicy"
#: The kubectl commands docs/gitops.md shows, exactly as the tests run them (with the file in
#: docs/examples/gitops/); tests/unit/test_gitops_docs.py checks the page shows these and no other.
DOC_COMMANDS: dict[str, tuple[str, ...]] = {
    "apply-application": ("apply", "-f", "application.yaml"),
    "patch-health-check": (
        "-n", "argocd", "patch", "configmap", "argocd-cm",
        "--type", "merge", "--patch-file", "argocd-cm.yaml",
    ),
    "patch-server-side": (
        "-n", "argocd", "patch", "application", "nsbaseline",
        "--type", "merge", "--patch-file", "server-side-apply.yaml",
    ),
    "delete-crds": (
        "delete", "crd", "baselinepolicies.nsbaseline.io", "clusterkopfpeerings.kopf.dev",
    ),
}  # fmt: skip


def doc_command(key: str, folder: Path = EXAMPLES) -> list[str]:
    """A documented kubectl command's arguments, its file argument taken from ``folder``."""
    return [str(folder / a) if a.endswith(".yaml") else a for a in DOC_COMMANDS[key]]


# ----- builds ------------------------------------------------------------------------------------


def _build(script: Path, what: str) -> str:
    """Run one of our cached Go builds; its last stdout line is the path it built."""
    if shutil.which("go") is None:
        pytest.skip(f"no Go toolchain to build {what}")
    proc = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=3600, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"building {what} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def gitops_bindir() -> Path:
    """Folder with argocd-application-controller, argocd-repo-server, argocd-health-lua,
    kustomize and git-verify-wrapper.sh, from Go modules by hack/gitops/build.sh (cached)."""
    return Path(_build(GITOPS_BUILD, "the GitOps engine (Argo CD)"))


def kstatus_binary() -> str:
    """The kstatus wrapper built from Go modules by hack/kstatus/build.sh (cached)."""
    return _build(KSTATUS_BUILD, "the kstatus wrapper")


#: The kustomize-controller release whose Flux libraries hack/kstatus pins; its CRD validates the
#: shipped Flux Kustomization.
FLUX_KUSTOMIZE_CONTROLLER = "github.com/fluxcd/kustomize-controller@v1.9.6"


def module_dir(module: str) -> Path:
    """A module@version from the Go module cache, downloaded if missing."""
    proc = subprocess.run(
        ["go", "mod", "download", "-json", module],
        cwd=KSTATUS_BUILD.parent,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "GOTOOLCHAIN": "local"},
        check=False,
    )
    info = json.loads(proc.stdout or "{}")
    if proc.returncode != 0 or not info.get("Dir"):
        raise AssertionError(f"go mod download {module} failed: {info.get('Error') or proc.stderr}")
    return Path(info["Dir"])


def argocd_module_dir() -> Path:
    """The argo-cd module in the Go module cache, at the version hack/gitops pins."""
    versions = (GITOPS_BUILD.parent / "versions.env").read_text()
    (version,) = re.findall(r"^ARGOCD_VERSION=(\S+)$", versions, re.MULTILINE)
    return module_dir(f"github.com/argoproj/argo-cd/v3@{version}")


# ----- health as the ecosystem computes it -------------------------------------------------------


def _health_lines(argv: list[str], obj: Mapping[str, Any]) -> dict[str, str]:
    proc = subprocess.run(
        argv, input=json.dumps(dict(obj)), capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    (line,) = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
    return {str(k): str(v) for k, v in line.items() if k != "name"}


def kstatus(
    binary: str, obj: Mapping[str, Any], flux_kustomization: Path | None = None
) -> dict[str, str]:
    """kstatus's verdict on one object (InProgress, Current, Failed...): ``status`` and
    ``message`` from sigs.k8s.io/cli-utils, ``fluxStatus`` and ``fluxMessage`` from Flux's fork,
    and with ``flux_kustomization``, ``celStatus`` and ``celMessage``: that Kustomization's
    ``healthCheckExprs`` evaluated by Flux's CEL package."""
    extra = ["--flux-kustomization", str(flux_kustomization)] if flux_kustomization else []
    return _health_lines([binary, *extra], obj)


def lua_health(bindir: Path, script: str, obj: Mapping[str, Any]) -> dict[str, str]:
    """Argo CD's own Lua evaluation (util/lua) of a health ``script``: status and message."""
    return _health_lines([str(bindir / "argocd-health-lua"), "--script", script], obj)


def shipped_health_lua() -> str:
    """The BaselinePolicy health check from the shipped argocd-cm patch."""
    doc = yaml.safe_load((EXAMPLES / "argocd-cm.yaml").read_text())
    return str(doc["data"][HEALTH_KEY])


# ----- Git over smart HTTP ------------------------------------------------------------------------


class _GitBackend(BaseHTTPRequestHandler):
    """Forwards each request to ``git http-backend`` (CGI) and relays its answer."""

    project_root: ClassVar[Path]
    protocol_version = "HTTP/1.1"

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._body()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        for header, var in (("Content-Encoding", "HTTP_CONTENT_ENCODING"),
                            ("Git-Protocol", "GIT_PROTOCOL")):  # fmt: skip
            if self.headers.get(header):
                env[var] = self.headers[header]
        proc = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=120
        )
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status, headers = 200, []
        for raw in head.decode("latin-1").splitlines():
            name, _, value = raw.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _serve
    do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the Git client's requests are not test output."""


class GitServer:
    """One bare repository, ``cluster-config.git``, served over smart HTTP on a loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "srv"
        self.bare = self.root / "cluster-config.git"
        self.work = workdir / "work"
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/cluster-config.git"

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "nsbaseline e2e",
            "GIT_AUTHOR_EMAIL": "e2e@nsbaseline.invalid",
            "GIT_COMMITTER_NAME": "nsbaseline e2e",
            "GIT_COMMITTER_EMAIL": "e2e@nsbaseline.invalid",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
        }
        proc = subprocess.run(
            ["git", *args], cwd=cwd or self.work, env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed:\n{proc.stderr}")
        return proc.stdout.strip()

    def start(self) -> GitServer:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.work.mkdir(parents=True)
        self._git("init", "--bare", "--initial-branch=main", str(self.bare), cwd=self.root)
        self._git("init", "--initial-branch=main")
        self._git("remote", "add", "origin", str(self.bare))
        handler = type("GitBackend", (_GitBackend,), {"project_root": self.root})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def commit(self, message: str, files: Mapping[str, str | Path | None]) -> str:
        """Write (text or a folder to copy) or delete (None) paths, commit, push; the new SHA."""
        for rel, content in files.items():
            target = self.work / rel
            if content is None:
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
            elif isinstance(content, Path):
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(content, target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
        self._git("add", "-A")
        self._git("commit", "--quiet", "--allow-empty", "-m", message)
        self._git("push", "--quiet", "origin", "HEAD:main")
        return self._git("rev-parse", "HEAD")

    def ls_remote(self) -> str:
        """``git ls-remote`` through the HTTP server: proves a Git client can talk to it."""
        return self._git("ls-remote", self.url, "refs/heads/main")


# ----- Argo CD ------------------------------------------------------------------------------------


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}:\n{_tail(log)}")
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, timeout, interval=0.5, what=f"port {port} of {proc.args!r}")


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_established(cluster: Cluster, *crds: str, timeout: float = 60) -> None:
    """Wait until the CRDs are Established (``kubectl wait`` fails outright on a CRD so new
    that it has no conditions yet, hence the retry)."""

    def established() -> bool:
        args = ["wait", "--for=condition=Established", "--timeout=10s"]
        return cluster.kubectl(*args, *(f"crd/{c}" for c in crds), check=False).returncode == 0

    wait_for(established, timeout, interval=0.5, what=f"CRDs {', '.join(crds)} established")


def _resp(sock: socket.socket, reader: Any, *command: str) -> bytes | list[bytes] | int | None:
    """One Redis command over RESP (no client library needed for two read-only commands)."""
    out = f"*{len(command)}\r\n".encode()
    for part in command:
        raw = part.encode()
        out += b"$%d\r\n%s\r\n" % (len(raw), raw)
    sock.sendall(out)
    return _resp_value(reader)


def _resp_value(reader: Any) -> bytes | list[bytes] | int | None:
    line: bytes = reader.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data: bytes = reader.read(size + 2)[:-2]
        return data
    if kind == b"*":
        items = [_resp_value(reader) for _ in range(int(rest))]
        return [i for i in items if isinstance(i, bytes)]
    if kind == b":":
        return int(rest)
    if kind == b"-":
        raise AssertionError(f"redis: {rest.decode()}")
    return rest


class ArgoCD:
    """Redis, Argo CD's repo server and application controller, as local processes.

    The controller manages the test cluster as Argo CD's in-cluster destination
    (``https://kubernetes.default.svc``): ``ARGOCD_FAKE_IN_CLUSTER=true`` makes it use
    ``KUBECONFIG`` for that destination, as in Argo CD's own local development setup.
    """

    def __init__(self, cluster: Cluster, bindir: Path, workdir: Path) -> None:
        self.cluster = cluster
        self.bindir = bindir
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log(name), "ab") as log:
            log.write(f"\n===== {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                cwd=self.workdir,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def install(self, module_dir: Path) -> None:
        """Argo CD's CRDs and default configuration from its module, plus our health check."""
        crds = self.cluster.kubectl("kustomize", str(module_dir / "manifests" / "crds")).stdout
        self.cluster.kubectl("apply", "--server-side", "-f", "-", input=crds, timeout=120)
        wait_established(self.cluster, "applications.argoproj.io", "appprojects.argoproj.io")
        self.cluster.kubectl("create", "namespace", ARGOCD_NAMESPACE, check=False)
        config = self.cluster.kubectl(
            "kustomize", str(module_dir / "manifests" / "base" / "config")
        ).stdout
        self.cluster.kubectl("apply", "-n", ARGOCD_NAMESPACE, "-f", "-", input=config)
        # The shipped health check, applied the way docs/gitops.md says.
        self.cluster.kubectl(*doc_command("patch-health-check"))
        # argocd-server creates the `default` project at start; we run no API server.
        self.cluster.apply(
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "AppProject",
                "metadata": {"name": "default", "namespace": ARGOCD_NAMESPACE},
                "spec": {
                    "sourceRepos": ["*"],
                    "destinations": [{"server": "*", "namespace": "*"}],
                    "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
                },
            }
        )

    def start(self) -> ArgoCD:
        redis_port, repo_port = free_port(), free_port()
        self.ports = {"redis": redis_port, "repo-server": repo_port}
        redis = self._spawn(
            "redis",
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            {},
        )  # fmt: skip
        _wait_port(redis_port, redis, self.log("redis"))
        tmp = self.workdir / "tmp"
        for sub in ("tmp", "tls", "ssh", "gpg", "plugins", "home"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        common = {
            "ARGOCD_FAKE_IN_CLUSTER": "true",
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "ARGOCD_TLS_DATA_PATH": str(self.workdir / "tls"),
            "ARGOCD_SSH_DATA_PATH": str(self.workdir / "ssh"),
            "ARGOCD_GNUPGHOME": str(self.workdir / "gpg"),
            "ARGOCD_GPG_ENABLED": "false",
            "ARGOCD_PLUGINSOCKFILEPATH": str(self.workdir / "plugins"),
            "HOME": str(self.workdir / "home"),
            "TMPDIR": str(tmp),
            # The repo server runs `git` and `kustomize` from the PATH.
            "PATH": f"{self.bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "GIT_CONFIG_NOSYSTEM": "1",
            # Default: a fixed /tmp path that two sessions on one machine would share.
            "ARGOCD_ASK_PASS_SOCK": str(self.workdir / "askpass.sock"),
        }
        repo = self._spawn(
            "repo-server",
            [str(self.bindir / "argocd-repo-server"), "--address", "127.0.0.1",
             "--port", str(repo_port), "--metrics-address", "127.0.0.1",
             "--metrics-port", str(free_port()), "--redis", f"127.0.0.1:{redis_port}",
             "--disable-tls", "--client-ca-path=", "--logformat", "text"],
            common,
        )  # fmt: skip
        _wait_port(repo_port, repo, self.log("repo-server"))
        metrics_port = free_port()
        self.ports["controller-metrics"] = metrics_port
        controller = self._spawn(
            "application-controller",
            [str(self.bindir / "argocd-application-controller"),
             "--namespace", ARGOCD_NAMESPACE, "--redis", f"127.0.0.1:{redis_port}",
             "--repo-server", f"127.0.0.1:{repo_port}", "--repo-server-plaintext",
             "--commit-server", f"127.0.0.1:{free_port()}",
             "--metrics-port", str(metrics_port), "--persist-resource-health",
             "--app-resync", "30", "--app-resync-jitter", "0",
             "--self-heal-timeout-seconds", "2", "--logformat", "text"],
            {**common, "HOSTNAME": "argocd-application-controller-0"},
        )  # fmt: skip
        _wait_port(metrics_port, controller, self.log("application-controller"))
        return self

    def stop(self) -> None:
        """Stop our processes, newest first; each by its own handle."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=20)
        self.procs.clear()

    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs.values())

    def logs(self, lines: int = 60) -> str:
        return "\n".join(
            f"----- {name} ({self.log(name)}) -----\n{_tail(self.log(name), lines)}"
            for name in self.procs or ("redis", "repo-server", "application-controller")
        )

    # --- the engine's own view ---

    def app(self, name: str) -> dict[str, Any]:
        found = self.cluster.get("application.argoproj.io", name, "-n", ARGOCD_NAMESPACE)
        assert found is not None, f"Application {name} not found"
        return dict(found)

    def resource_tree(self, name: str) -> dict[str, Any]:
        """The Application's resource tree as the controller caches it in Redis (what the UI and
        ``argocd app resources`` show): managed objects and their children by ownerReference."""
        with socket.create_connection(("127.0.0.1", self.ports["redis"]), timeout=10) as sock:
            reader = sock.makefile("rb")
            keys = _resp(sock, reader, "KEYS", f"app|resources-tree|{name}|*")
            assert isinstance(keys, list) and keys, f"no resource tree for {name} in Redis"
            nodes: list[Any] = []
            orphaned: list[Any] = []
            for key in keys:
                raw = _resp(sock, reader, "GET", key.decode())
                assert isinstance(raw, bytes)
                data = gzip.decompress(raw) if key.endswith(b".gz") else raw
                tree = json.loads(data) or {}
                nodes += tree.get("nodes") or []
                orphaned += tree.get("orphanedNodes") or []
        return {"nodes": nodes, "orphanedNodes": orphaned}

    def refresh(self, name: str) -> None:
        """What a Git webhook does: ask the controller to compare with Git now."""
        self.cluster.kubectl(
            "-n", ARGOCD_NAMESPACE, "annotate", "application.argoproj.io", name,
            "argocd.argoproj.io/refresh=normal", "--overwrite",
        )  # fmt: skip


def app_summary(app: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an Application's status the tests assert on, for readable failures."""
    status = app.get("status") or {}
    op = status.get("operationState") or {}
    return {
        "sync": (status.get("sync") or {}).get("status"),
        "revision": (status.get("sync") or {}).get("revision"),
        "health": (status.get("health") or {}).get("status"),
        "operation": op.get("phase"),
        "operationMessage": op.get("message"),
        "conditions": [c.get("message") for c in status.get("conditions") or []],
        "resources": [
            (r.get("kind"), r.get("name"), r.get("status"), (r.get("health") or {}).get("status"))
            for r in status.get("resources") or []
        ],
    }


def resource_entry(app: Mapping[str, Any], kind: str, name: str) -> dict[str, Any] | None:
    """The Application's status.resources entry for one managed object, if it manages it."""
    for r in (app.get("status") or {}).get("resources") or []:
        if r.get("kind") == kind and r.get("name") == name:
            return dict(r)
    return None


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def wait_app(
    argocd: ArgoCD,
    name: str,
    *,
    sync: str | None = "Synced",
    health: str | None = "Healthy",
    revision: str | None = None,
    timeout: float = 240,
    until: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """Wait until the Application reports ``sync``/``health`` (at ``revision``, if given, and
    with ``until(app)`` true, if given); the Application then."""

    def reached() -> dict[str, Any] | None:
        if not argocd.alive():
            raise AssertionError("Argo CD stopped:\n" + argocd.logs())
        app = argocd.app(name)
        s = app_summary(app)
        ok = (sync is None or s["sync"] == sync) and (health is None or s["health"] == health)
        ok = ok and (revision is None or s["revision"] == revision)
        return app if ok and (until is None or until(app)) else None

    try:
        found = wait_for(reached, timeout, interval=1.0, what=f"Application {name} {sync}/{health}")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nnow: {app_summary(argocd.app(name))}\n{argocd.logs(30)}"
        ) from None
    assert found is not None
    return found


# ----- the operator the Deployment describes -----------------------------------------------------


class DeployedOperator:
    """Runs the operator the way the GitOps-applied Deployment says, as a local process.

    There is no kubelet here, so the Deployment's pods never run (the tests scale it to zero).
    This stands in for them: the ServiceAccount's token and ClusterRole that Argo CD installed,
    the Deployment's own arguments, and its templates ConfigMap written to a folder the way the
    kubelet mounts it. :meth:`follow` restarts the process when the Deployment's pod template
    changes, as a rollout would.
    """

    def __init__(self, cluster: Cluster, logdir: Path) -> None:
        self.cluster = cluster
        self.logdir = logdir
        self.process: OperatorProcess | None = None
        self.template_hash = ""
        self.peering = f"gitops-{uuid.uuid4().hex[:8]}"

    def _deployment(self) -> dict[str, Any]:
        dep = self.cluster.get("deployment", "nsbaseline", "-n", INSTALL_NAMESPACE)
        assert dep is not None, "the nsbaseline Deployment is not installed"
        return dict(dep)

    def follow(self) -> bool:
        """Start, or restart on a changed pod template; True when it (re)started."""
        dep = self._deployment()
        template = dep["spec"]["template"]
        digest = json.dumps(template, sort_keys=True)
        if self.process is not None and digest == self.template_hash:
            return False
        self.stop()
        (container,) = template["spec"]["containers"]
        volumes = {v["name"]: v for v in template["spec"].get("volumes") or []}
        configmap = volumes["templates"]["configMap"]["name"]
        cm = self.cluster.get("configmap", configmap, "-n", INSTALL_NAMESPACE)
        assert cm is not None, f"ConfigMap {configmap} missing"
        mount = self.logdir / f"templates-{configmap}"
        shutil.rmtree(mount, ignore_errors=True)
        mount.mkdir(parents=True)
        for name, text in (cm.get("data") or {}).items():
            (mount / name).write_text(text)
        args = [
            a
            for a in container["args"][1:]
            if not a.startswith(("--templates-dir", "--health", "--metrics-port"))
        ]
        kubeconfig = token_kubeconfig(self.cluster, self.logdir / "nsbaseline-sa.kubeconfig")
        self.process = OperatorProcess(
            self.cluster,
            self.logdir,
            *args,
            "--templates-dir",
            str(mount),
            "--peering-name",
            self.peering,
            env={"KUBECONFIG": str(kubeconfig), "POD_ID": f"{self.peering}-local"},
        ).start()
        self.template_hash = digest
        return True

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        # check=False: the CRD itself may be gone (uninstalled), and the peering with it.
        self.cluster.kubectl(
            "delete", "clusterkopfpeering", self.peering, "--ignore-not-found", check=False
        )

    def tail(self, lines: int = 60) -> str:
        return self.process.tail(lines) if self.process is not None else ""
