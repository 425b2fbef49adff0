"""The container image, checked the honest way available without a container engine.

The Dockerfile's two stages are repeated step for step: ``pip wheel --no-deps .`` builds the
wheel, a clean virtualenv outside the checkout gets ``pip install <wheel>``, and the result runs
its entrypoint's help and a short operator run against the control plane from a working
directory far from the repository, with bytecode writing off and a private TMPDIR (the pod's
emptyDir). Nothing it needs may come from the checkout, and it must write nothing into its own
installation (the image's root filesystem is read-only).
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.kube import REPO, Cluster, baseline_policy, free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOCKERFILE = (REPO / "Dockerfile").read_text()


@dataclass
class Image:
    """A stand-in for the image: the wheel and the virtualenv it was installed into."""

    wheel: Path
    venv: Path
    workdir: Path
    tmpdir: Path

    @property
    def entrypoint(self) -> Path:
        return self.venv / "bin" / "nsbaseline"

    def env(self, **extra: str) -> dict[str, str]:
        """A minimal environment: nothing pointing back into the checkout."""
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.workdir),
            "TMPDIR": str(self.tmpdir),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
            **extra,
        }

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.entrypoint), *args],
            cwd=self.workdir,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=120,
        )


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    root = tmp_path_factory.mktemp("image")
    wheels = root / "wheels"
    # Stage 1: RUN pip wheel --no-deps --wheel-dir /wheels .
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(wheels),
            ".",
        ],
        cwd=REPO,
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("nsbaseline-*.whl")
    # Stage 2: RUN python -m venv /opt/nsbaseline && /opt/nsbaseline/bin/pip install /wheels/*.whl
    venv = root / "opt" / "nsbaseline"
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        cwd=root,
        check=True,
        timeout=900,
    )
    workdir = root / "workdir"
    tmpdir = root / "emptydir-tmp"
    workdir.mkdir()
    tmpdir.mkdir()
    yield Image(wheel, venv, workdir, tmpdir)


def test_dockerfile_builds_the_wheel_installs_it_and_runs_as_uid_65532() -> None:
    """The steps the fixture repeats are the Dockerfile's own (so the check stays honest)."""
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", DOCKERFILE, re.M)
    assert DOCKERFILE.count("FROM ${PYTHON_IMAGE}") == 2
    assert "RUN pip wheel --no-deps --wheel-dir /wheels ." in DOCKERFILE
    assert "python -m venv /opt/nsbaseline" in DOCKERFILE
    assert "/opt/nsbaseline/bin/pip install /wheels/*.whl" in DOCKERFILE
    assert re.search(r"^USER 65532:65532$", DOCKERFILE, re.M)
    assert "PYTHONDONTWRITEBYTECODE=1" in DOCKERFILE
    assert 'ENTRYPOINT ["nsbaseline"]' in DOCKERFILE
    assert 'CMD ["run", "--peering"]' in DOCKERFILE
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line for line in ignored if line and not line.startswith("#")]
    assert patterns[0] == "*", "the build context starts from nothing"
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        for item in copied.split():
            assert f"!{item}" in ignored, f"{item} is copied but excluded from the context"


def test_wheel_carries_the_builtin_templates_and_crds(image: Image) -> None:
    names = set(zipfile.ZipFile(image.wheel).namelist())
    for template in sorted((REPO / "templates").glob("*.yaml.j2")):
        assert f"nsbaseline/builtin_templates/{template.name}" in names
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        assert f"nsbaseline/crds/{crd.name}" in names


def test_entrypoint_help_runs_from_the_installed_wheel_only(image: Image) -> None:
    top = image.run("--help")
    assert top.returncode == 0, top.stderr
    for command in ("run", "render", "status", "version"):
        assert command in top.stdout
    run_help = image.run("run", "--help")
    assert run_help.returncode == 0, run_help.stderr
    for option in ("--peering", "--templates-dir", "--health", "--metrics-port", "--log-format"):
        assert option in run_help.stdout
    where = subprocess.run(
        [
            str(image.venv / "bin" / "python"),
            "-c",
            "import nsbaseline, nsbaseline.render as r; print(nsbaseline.__file__);"
            " print(r.builtin_template_dir())",
        ],
        cwd=image.workdir,
        env=image.env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for path in where:
        assert Path(path).is_relative_to(image.venv), f"{path} is not from the installed wheel"


def test_installed_operator_converges_a_namespace_and_writes_nothing_into_its_install(
    cluster: Cluster, image: Image, clean_policies: None
) -> None:
    ns = cluster.namespace("image", labels={"nsbaseline-test/image": "on"})
    cluster.apply(
        baseline_policy("image", namespaceSelector={"matchLabels": {"nsbaseline-test/image": "on"}})
    )
    before = _files(image.venv)
    health = free_port()
    log = image.workdir / "operator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(image.entrypoint),
                "run",
                "--standalone",
                f"--health=http://127.0.0.1:{health}/healthz",
                "--metrics-port=0",
                "--log-format=json",
            ],
            cwd=image.workdir,
            env=image.env(KUBECONFIG=str(cluster.kubeconfig)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: (
                {"nsbaseline-image-allow-dns", "nsbaseline-image-default-deny"}
                <= set(cluster.netpols(ns))
            ),
            120,
            what="the installed operator's baseline",
        )
        assert proc.poll() is None, log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert _files(image.venv) == before, "the operator wrote into its own installation"
    assert '"message"' in log.read_text(), "--log-format=json should log JSON lines"
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
