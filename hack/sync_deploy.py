"""Copy the CRDs from ``crds/`` into the install bundles that cannot reference them.

kustomize refuses files outside a kustomization's folder and Helm only packages files inside the
chart, so ``deploy/base/crds/`` and ``charts/nsbaseline/crds/`` hold byte-identical copies.
``make deploy-sync`` refreshes them; ``--check`` (run by ``make lint`` and a unit test) fails
when a copy has drifted from its source.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "crds"
TARGETS = (REPO / "deploy" / "base" / "crds", REPO / "charts" / "nsbaseline" / "crds")


def expected_copies() -> dict[Path, bytes]:
    """Every file each target folder must hold, with its exact content."""
    sources = sorted(SOURCE.glob("*.yaml"))
    return {target / src.name: src.read_bytes() for target in TARGETS for src in sources}


def stale_copies() -> list[str]:
    """Human-readable problems: missing, different or extra files in the target folders."""
    expected = expected_copies()
    problems = [
        f"{path.relative_to(REPO)} differs from crds/{path.name}"
        if path.exists()
        else f"{path.relative_to(REPO)} is missing"
        for path, content in expected.items()
        if not path.exists() or path.read_bytes() != content
    ]
    for target in TARGETS:
        for path in sorted(target.glob("*.yaml")):
            if path not in expected:
                problems.append(f"{path.relative_to(REPO)} has no source in crds/")
    return problems


def sync() -> None:
    for target in TARGETS:
        target.mkdir(parents=True, exist_ok=True)
        for path in target.glob("*.yaml"):
            path.unlink()
    for path, content in expected_copies().items():
        path.write_bytes(content)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a copy is out of date")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_copies()
        for problem in problems:
            print(f"error: {problem}; run `make deploy-sync`", file=sys.stderr)
        return 1 if problems else 0
    sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
