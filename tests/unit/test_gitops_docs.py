"""docs/gitops.md shows only what was run.

Every code block on the page names its source in a comment just above it: ``file:`` blocks must
be byte for byte the shipped file the e2e tests use (docs/examples/gitops/), ``run:`` blocks hold
commands a test runs exactly so, ``from:`` blocks come from the named test. The kubectl commands
must be the ones tests.support.gitops.DOC_COMMANDS gives the e2e tests, and the ``nsbaseline``
commands of "Previewing in CI" are run here, verbatim, on the documented example files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nsbaseline import crd
from tests.support.gitops import DOC_COMMANDS, EXAMPLES, HEALTH_KEY

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "gitops.md"
MARKER = re.compile(r"^<!-- (file|run|from): (\S+) -->$")
FENCE = re.compile(r"^```(\w*)$")


def _blocks() -> list[tuple[str, str, str, str]]:
    """(marker kind, marker target, language, text) for every fenced block on the page."""
    lines = PAGE.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = lines.index("```", i + 1)
        previous = next((line for line in reversed(lines[:i]) if line.strip()), "")
        marker = MARKER.match(previous)
        kind, target = marker.groups() if marker else ("", "")
        blocks.append((kind, target, fence.group(1), "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return blocks


def _commands(text: str) -> list[str]:
    """The ``$ ...`` commands of a console block, continuation lines joined."""
    commands, current = [], ""
    for line in text.splitlines():
        if line.startswith("$ "):
            current = line[2:]
        elif current:
            current += " " + line.strip()
        else:
            continue
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        commands.append(re.sub(r"\s+#.*$", "", current).strip())
        current = ""
    return commands


def test_no_unverified_marks_are_left() -> None:
    assert "<!-- verify" not in PAGE.read_text()


def test_every_block_names_an_existing_source() -> None:
    blocks = _blocks()
    assert len(blocks) >= 10
    for kind, target, _, text in blocks:
        assert kind, f"block without a source marker:\n{text}"
        base = REPO / "docs" if kind == "file" else REPO
        assert (base / target).is_file(), f"{kind}: {target} does not exist"


def test_file_blocks_are_the_shipped_files_byte_for_byte() -> None:
    files = [(t, text) for kind, t, _, text in _blocks() if kind == "file"]
    assert {t for t, _ in files} == {
        f"examples/gitops/{p.relative_to(EXAMPLES)}" for p in EXAMPLES.rglob("*") if p.is_file()
    }, "every shipped GitOps file is shown, and nothing else is"
    for target, text in files:
        assert text == (REPO / "docs" / target).read_text(), f"docs/gitops.md differs from {target}"


def test_kubectl_commands_are_exactly_the_ones_the_e2e_tests_run() -> None:
    shown = {
        c
        for kind, _, lang, text in _blocks()
        if lang == "console"
        for c in _commands(text)
        if c.startswith("kubectl ")
    }
    assert shown == {"kubectl " + " ".join(args) for args in DOC_COMMANDS.values()}
    for kind, target, _, text in _blocks():
        if any(c.startswith("kubectl ") for c in _commands(text)):
            assert (kind, target) == ("run", "tests/e2e/test_gitops.py"), text


def test_file_comments_show_the_documented_patch_commands() -> None:
    for name, key in [("argocd-cm.yaml", "patch-health-check"),
                      ("server-side-apply.yaml", "patch-server-side")]:  # fmt: skip
        command = "kubectl " + " ".join(DOC_COMMANDS[key])
        assert f"#   {command}\n" in (EXAMPLES / name).read_text()


def test_health_check_is_under_the_key_argo_cd_reads() -> None:
    doc = yaml.safe_load((EXAMPLES / "argocd-cm.yaml").read_text())
    assert (doc["kind"], doc["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert list(doc["data"]) == [HEALTH_KEY]
    assert "return" in doc["data"][HEALTH_KEY]


def _validation_messages(schema: dict[str, Any]) -> list[str]:
    found = [str(v.get("message", "")) for v in schema.get("x-kubernetes-validations") or []]
    for sub in (schema.get("properties") or {}).values():
        found += _validation_messages(sub)
    if isinstance(schema.get("items"), dict):
        found += _validation_messages(schema["items"])
    return found


def test_tracking_annotation_error_is_the_crds_message() -> None:
    (text,) = [t for _, target, _, t in _blocks() if target.endswith("test_invalid_policies.py")]
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    (message,) = [m for m in _validation_messages(schema) if "GitOps tracking" in m]
    assert text.strip().endswith(f"spec.annotations: Invalid value: {message}")


@pytest.fixture
def ci_repo(tmp_path: Path) -> Path:
    """A repository laid out as "Previewing in CI" assumes, from the documented examples."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "namespaces").mkdir()
    shutil.copy(EXAMPLES / "cluster-config/nsbaseline/baseline.yaml", tmp_path / "policies")
    shutil.copy(REPO / "docs/examples/team-b.yaml", tmp_path / "namespaces")
    shutil.copytree(REPO / "docs/examples/templates", tmp_path / "templates")
    shutil.copy(EXAMPLES / "preview.sh", tmp_path / "preview.sh")
    return tmp_path


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_preview_script_and_documented_commands_run_as_shown(ci_repo: Path) -> None:
    proc = _shell("bash preview.sh", ci_repo)
    assert proc.returncode == 0, proc.stderr
    rendered = [d for d in yaml.safe_load_all((ci_repo / "out/team-b.yaml").read_text()) if d]
    assert {d["kind"] for d in rendered} == {"NetworkPolicy"} and len(rendered) == 3
    (ci_repo / "netpols").mkdir()
    shutil.copy(ci_repo / "out/team-b.yaml", ci_repo / "netpols")
    blocks = [t for kind, target, _, t in _blocks() if target == "tests/unit/test_gitops_docs.py"]
    assert len(blocks) == 2
    for text in blocks:
        expected = [line for line in text.splitlines() if line and not line.startswith(("$", " "))]
        outputs = []
        for command in _commands(text):
            if "jq" in command and shutil.which("jq") is None:
                pytest.fail("jq is not installed (apt-get install jq)")
            proc = _shell(command, ci_repo)
            assert proc.returncode == 0, f"{command}: {proc.stderr}"
            outputs += proc.stdout.splitlines()
        if expected:
            assert outputs == expected
