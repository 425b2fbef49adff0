"""Test helpers for driving a real cluster with kubectl and running the operator as a process.

Everything here talks to a real API server: the local control plane from
``hack/localcluster.py`` or, when ``NSBASELINE_TEST_KUBECONFIG`` is set, any cluster you point it
at (kind, a dev cluster...).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
#: Where the session's control plane and logs live; parallel sessions each need their own.
E2E_DIR = Path(os.environ.get("NSBASELINE_E2E_DIR") or REPO / ".cache" / "e2e").resolve()
T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 60.0,
    interval: float = 0.2,
    what: str = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
            if result:
                return result
            last = result
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_METRIC_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if m:
            labels = dict(_LABEL.findall(m.group("labels") or ""))
            out.append((m.group("name"), labels, float(m.group("value"))))
    return out


WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")
#: Marks namespaces made by tests, so the next test can clear them away.
TEST_LABEL = "e2e.nsbaseline.io/test"


def manifest(docs: Iterable[Mapping[str, Any]]) -> str:
    """Documents for ``kubectl apply -f -``, as JSON separated by ``---``.

    Not PyYAML: it leaves a string such as ``044469`` unquoted, which kubectl's YAML 1.2 parser
    reads as a number (a random label value once broke a test run that way). JSON says exactly
    which values are strings.
    """
    return "\n---\n".join(json.dumps(dict(d)) for d in docs) + "\n"


@dataclass
class Cluster:
    """A cluster reachable through a kubeconfig, driven with kubectl."""

    kubeconfig: Path
    kubectl_bin: str

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl_bin, *args],
            input=input,
            text=True,
            capture_output=True,
            env=self.env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def apply(
        self, *docs: Mapping[str, Any], check: bool = True, server_side: bool = False
    ) -> subprocess.CompletedProcess[str]:
        text = manifest(docs)
        args = ["apply", "-f", "-"]
        if server_side:
            args.insert(1, "--server-side")
        return self.kubectl(*args, input=text, check=check)

    def get(self, *args: str) -> Any:
        """``kubectl get ... -o json``; ``None`` when not found."""
        proc = self.kubectl("get", *args, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        found: dict[str, Any] = json.loads(proc.stdout)
        return found

    def items(self, *args: str) -> list[dict[str, Any]]:
        result = self.get(*args)
        return list(result.get("items", [])) if result else []

    def raw(self, path: str) -> str:
        return self.kubectl("get", "--raw", path).stdout

    def request_counts(self) -> dict[tuple[str, str, str], float]:
        """``apiserver_request_total`` summed by (verb, group, resource), from the API server."""
        counts: dict[tuple[str, str, str], float] = {}
        for name, labels, value in parse_metrics(self.raw("/metrics")):
            if name != "apiserver_request_total":
                continue
            key = (labels.get("verb", ""), labels.get("group", ""), labels.get("resource", ""))
            counts[key] = counts.get(key, 0.0) + value
        return counts

    def writes(
        self, resource: str, since: Mapping[tuple[str, str, str], float] | None = None
    ) -> int:
        """Write requests (create/update/patch/delete/apply) on ``resource`` since a snapshot."""
        now = self.request_counts()
        before = since or {}
        total = 0.0
        for key, value in now.items():
            verb, _, res = key
            if res == resource and verb in WRITE_VERBS:
                total += value - before.get(key, 0.0)
        return int(total)

    def namespace(self, prefix: str = "t", labels: Mapping[str, str] | None = None) -> str:
        """A fresh namespace, marked so a later test's :meth:`settle` can remove it."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {TEST_LABEL: "true", **(labels or {})}},
            }
        )
        return name

    def settle(self, timeout: float = 180.0) -> None:
        """Remove namespaces earlier tests left behind and wait until none is terminating.

        Leftover opted-in namespaces would count against a new policy's Ready condition, and
        the namespace controller's deletes of their NetworkPolicies would show up in the API
        server's write counters that tests read.
        """
        self.kubectl("delete", "namespaces", "-l", f"{TEST_LABEL}=true", "--wait=false")

        def quiet() -> bool:
            items = self.items("namespaces")
            return not any(n["metadata"].get("deletionTimestamp") for n in items)

        wait_for(quiet, timeout, interval=0.5, what="no namespace terminating")

    def netpols(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {o["metadata"]["name"]: o for o in self.items("networkpolicies", "-n", namespace)}

    def events(self, namespace: str, reason: str | None = None) -> list[dict[str, Any]]:
        events = self.items("events", "-n", namespace)
        return [e for e in events if reason is None or e.get("reason") == reason]


class OperatorProcess:
    """``nsbaseline run`` as a child process, the way it runs in a pod (minus the pod)."""

    def __init__(
        self,
        cluster: Cluster,
        logdir: Path,
        *extra: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.cluster = cluster
        self.logdir = logdir
        self.extra = extra
        self.extra_env = dict(env or {})
        #: Working folder of the process (tests that check it leaves no files behind set it).
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.health_port = 0
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.logdir / f"operator-{id(self)}.log"

    def start(self, wait: bool = True) -> OperatorProcess:
        self.metrics_port = free_port()
        self.health_port = free_port()
        args = [
            sys.executable,
            "-m",
            "nsbaseline.cli",
            "run",
            "--metrics-port",
            str(self.metrics_port),
            "--health",
            f"http://127.0.0.1:{self.health_port}/healthz",
            "--sweep-interval",
            "30",
            *self.extra,
        ]
        if "--peering" not in self.extra:
            args.append("--standalone")
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        log.write(f"\n===== start #{self.starts + 1}: {' '.join(args)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.cluster.env, **self.extra_env},
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()
        self.starts += 1
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 60) -> None:
        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
                ) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(healthy, timeout, what="operator health endpoint")

    def metrics(self) -> dict[str, float]:
        """The operator's own Prometheus metrics as {name{labels}: value}."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            text = r.read().decode()
        out = {}
        for name, labels, value in parse_metrics(text):
            key = name + (
                "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
                if labels
                else ""
            )
            out[key] = value
        return out

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_operator(cluster: Cluster, logdir: Path, *extra: str) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster, logdir, *extra).start()
    try:
        yield op
    finally:
        op.stop()


def baseline_policy(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "nsbaseline.io/v1alpha1",
        "kind": "BaselinePolicy",
        "metadata": {"name": name},
        "spec": spec,
    }
