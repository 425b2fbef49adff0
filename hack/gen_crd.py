"""Write crds/ from the typed BaselinePolicy API (nsbaseline.spec, nsbaseline.crd): ``make crds``.

``--check`` fails on drift."""

import sys
from pathlib import Path

import yaml

from nsbaseline import crd

TARGET = Path(__file__).resolve().parent.parent / "crds" / "baselinepolicies.nsbaseline.io.yaml"
HEADER = (
    "# Generated from operator/nsbaseline/spec.py and crd.py by `make crds`; do not edit by hand.\n"
)


def render() -> str:
    return HEADER + yaml.safe_dump(crd.crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if TARGET.read_text() != text:
            sys.exit(f"{TARGET} is out of date: run `make crds`")
    else:
        TARGET.write_text(text)
