"""A kubeconfig ``exec:`` credential plugin for tests: short-lived, really revocable tokens.

It behaves like ``aws eks get-token`` or ``gke-gcloud-auth-plugin``: each run prints an
ExecCredential (``client.authentication.k8s.io/v1`` or ``v1beta1``, whichever the caller asks
for in ``KUBERNETES_EXEC_INFO``, else ``--api-version``) whose ``status.expirationTimestamp``
is ``--ttl`` seconds away.

The expiry is made real on the server too: each token is a ServiceAccount token from the
TokenRequest API bound to a Secret made for it (``boundObjectRef``); deleting that Secret revokes
the token (TokenRequest will not issue tokens shorter than 10 minutes, so this is how a test
gets a token that dies after a few seconds). A test deletes the Secrets once their advertised
expiry has passed (:class:`tests.support.credentials.Revoker`), so a client that keeps using a
token instead of running the plugin again gets 401.

Every run is counted (``<state>/count``) and each minted token recorded, one JSON line each, in
``<state>/minted.jsonl`` (with the token: this is a throwaway test cluster). ``--fail MESSAGE``
makes the plugin print MESSAGE on stderr and exit 1, like a plugin whose login was refused.
``--client-cert``/``--client-key`` make it hand out that client certificate instead of a token
(with the same short expiry), as some plugins do: a client must load a key it only has in
memory, again at each re-login.

Standard library only, run as a script: the client that runs it may not have our packages.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_API_VERSION = "client.authentication.k8s.io/v1"


def _count(state: Path) -> int:
    """Add one to the invocation counter, under a lock (clients may run the plugin in parallel)."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = state / "count"
        n = int(counter.read_text() or "0") + 1 if counter.exists() else 1
        counter.write_text(str(n))
        return n


def _kubectl(args: argparse.Namespace, *cmd: str) -> str:
    # --kubeconfig explicitly: KUBECONFIG in our environment may name the very kubeconfig that
    # runs this plugin, which would recurse.
    proc = subprocess.run(
        [args.kubectl, "--kubeconfig", args.admin_kubeconfig, *cmd],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        print(
            f"e2e credential plugin: kubectl {cmd[0]} failed: {proc.stderr.strip()}",
            file=sys.stderr,
        )
        sys.exit(1)
    return proc.stdout.strip()


def mint(args: argparse.Namespace, n: int) -> tuple[str, str, str]:
    """A token bound to a fresh Secret: (token, Secret name, Secret uid)."""
    namespace, account = args.service_account.split("/", 1)
    secret = f"{args.secret_prefix}-{n}-{os.getpid()}"
    uid = _kubectl(
        args,
        "create",
        "secret",
        "generic",
        secret,
        "-n",
        namespace,
        "--from-literal=purpose=binds-an-e2e-token",
        "-o",
        "jsonpath={.metadata.uid}",
    )
    token = _kubectl(
        args,
        "create",
        "token",
        account,
        "-n",
        namespace,
        "--bound-object-kind=Secret",
        f"--bound-object-name={secret}",
        f"--bound-object-uid={uid}",
        "--duration=10m",
    )
    return token, secret, uid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, required=True, help="counter and record folder")
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--admin-kubeconfig", default="", help="who may create Secrets/tokens")
    parser.add_argument("--service-account", default="", help="NAMESPACE/NAME to mint for")
    parser.add_argument("--secret-prefix", default="e2e-exec")
    parser.add_argument("--ttl", type=float, default=10.0, help="advertised token lifetime")
    parser.add_argument("--fail", default="", help="print this on stderr and exit 1")
    parser.add_argument("--client-cert", type=Path, help="hand out this certificate (PEM file)")
    parser.add_argument("--client-key", type=Path, help="... and this key, instead of a token")
    parser.add_argument(
        "--api-version",
        default=DEFAULT_API_VERSION,
        help="answer in this version when the caller does not say (no KUBERNETES_EXEC_INFO)",
    )
    args = parser.parse_args(argv)

    n = _count(args.state)
    info: dict[str, Any] = json.loads(os.environ.get("KUBERNETES_EXEC_INFO") or "{}")
    api_version = str(info.get("apiVersion") or args.api_version)
    if args.fail:
        print(args.fail, file=sys.stderr)
        return 1
    now = time.time()
    expires = now + args.ttl
    stamp = datetime.datetime.fromtimestamp(expires, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if args.client_cert and args.client_key:
        # A client certificate instead of a token (kubectl and client-go accept either).
        status = {
            "clientCertificateData": args.client_cert.read_text(),
            "clientKeyData": args.client_key.read_text(),
            "expirationTimestamp": stamp,
        }
        with open(args.state / "minted.jsonl", "a") as out:
            out.write(json.dumps({"n": n, "minted": now, "expires": expires, "cert": True}) + "\n")
        print(json.dumps({"apiVersion": api_version, "kind": "ExecCredential", "status": status}))
        return 0
    token, secret, uid = mint(args, n)
    record = {
        "n": n,
        "minted": now,
        "expires": expires,
        "secret": secret,
        "uid": uid,
        "token": token,
        "apiVersion": api_version,
        "exec_info": bool(info),
    }
    with open(args.state / "minted.jsonl", "a") as out:
        out.write(json.dumps(record) + "\n")
    credential = {
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "status": {"token": token, "expirationTimestamp": stamp},
    }
    print(json.dumps(credential))
    return 0


if __name__ == "__main__":
    sys.exit(main())
