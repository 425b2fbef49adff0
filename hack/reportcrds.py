"""The report CRDs nsbaseline writes to, taken from their projects' Go modules (never retyped).

- ``wgpolicyk8s``: the PolicyReport CRD (``wgpolicyk8s.io/v1alpha2``). Its home module,
  ``sigs.k8s.io/wg-policy-prototypes``, is not served by the Go module proxy; Kyverno, the main
  producer of PolicyReports, ships the same generated CRD in its module.
- ``openreports``: the OpenReports ``Report`` CRD (``openreports.io/v1alpha1``) from
  ``github.com/openreports/reports-api``.

``go mod download -json module@version`` fetches the pinned module into Go's module cache (once;
later runs read the cache) and this script prints the CRD file's path in that cache::

    kubectl apply --server-side -f "$(python3 hack/reportcrds.py wgpolicyk8s)"

Nothing is copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple


class Source(NamedTuple):
    module: str
    version: str
    path: str


#: --reports value -> where its CRD comes from (versions pinned).
SOURCES = {
    "wgpolicyk8s": Source(
        "github.com/kyverno/kyverno",
        "v1.15.2",
        "config/crds/policyreport/wgpolicyk8s.io_policyreports.yaml",
    ),
    "openreports": Source(
        "github.com/openreports/reports-api", "v0.2.1", "config/crd/openreports.io_reports.yaml"
    ),
}


class FetchError(Exception):
    """The module could not be downloaded (no Go toolchain, no module proxy)."""


def crd_path(flag: str) -> Path:
    """The CRD file for ``flag`` in Go's module cache, downloading the module if needed."""
    source = SOURCES[flag]
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    try:
        proc = subprocess.run(
            ["go", "mod", "download", "-json", f"{source.module}@{source.version}"],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
            cwd=Path(__file__).resolve().parent,  # outside any module of ours
        )
    except FileNotFoundError as exc:
        raise FetchError("no Go toolchain on PATH: install Go to fetch the report CRDs") from exc
    info = json.loads(proc.stdout or "{}")
    if proc.returncode != 0 or "Dir" not in info:
        problem = info.get("Error") or proc.stderr.strip() or f"exit status {proc.returncode}"
        raise FetchError(f"go mod download {source.module}@{source.version}: {problem}")
    path = Path(info["Dir"]) / source.path
    if not path.is_file():
        raise FetchError(f"{source.module}@{source.version} has no {source.path}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=sorted(SOURCES), help="the --reports value")
    args = parser.parse_args(argv)
    try:
        print(crd_path(args.format))
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
