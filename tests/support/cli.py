"""Run the ``nsbaseline`` command as a user would, and read its errors.

The contract for errors (issue 10): exactly one non-empty line on stderr starting with
``error: ``, no traceback anywhere in the output, exit code 2. :func:`one_line_error` checks
that shape and hands back the line, so a test only asserts on what the message must name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

EXIT_ERROR = 2
#: Stands for the exit code of a command the test had to kill.
TIMED_OUT = -1000

#: The commands that talk to a cluster, in the arguments that make each do so (explain in
#: cluster mode: no -f/--policy; lint on the cluster, as JSON so stdout is checkable).
CLUSTER_COMMANDS: dict[str, tuple[str, ...]] = {
    "status": ("status",),
    "explain": ("explain", "-n", "default"),
    "lint": ("lint", "--cluster", "-o", "json"),
}
#: ``run`` as the error tests start it: no ports of its own unless the test gives them.
RUN: tuple[str, ...] = ("run", "--standalone", "--metrics-port", "0", "--health", "")
#: The cluster commands and ``run``, for errors that every one of them must report the same way.
WITH_RUN: dict[str, tuple[str, ...]] = {**CLUSTER_COMMANDS, "run": RUN}


def nsbaseline(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """``nsbaseline ARGS`` as a child process. ``env`` entries override the test's environment;
    a ``None`` value removes the variable (KUBECONFIG is removed unless given)."""
    full = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    command = [sys.executable, "-m", "nsbaseline.cli", *args]
    try:
        return subprocess.run(
            command, env=full, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        # A command that should have failed fast but hangs (retrying forever) is a finding,
        # reported like any other outcome rather than as a crash of the test.
        def text(data: bytes | str | None) -> str:
            return data.decode(errors="replace") if isinstance(data, bytes) else data or ""

        return subprocess.CompletedProcess(
            command,
            TIMED_OUT,
            text(exc.stdout),
            text(exc.stderr) + f"\n[still running after {timeout:.0f}s; killed by the test]",
        )


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    """The whole outcome of a run, for assertion messages."""
    return f"exit {proc.returncode}\n--- stderr:\n{proc.stderr}\n--- stdout:\n{proc.stdout[-3000:]}"


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The error line, after checking the contract's shape (one line, no traceback, exit 2)."""
    assert "Traceback" not in proc.stderr + proc.stdout, describe(proc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == EXIT_ERROR, describe(proc)
    assert len(lines) == 1, describe(proc)
    assert lines[0].startswith("error: "), describe(proc)
    return lines[0]


def assert_mentions(line: str, *fragments: str) -> None:
    """Every fragment appears in the error line (the contract names fragments, not sentences)."""
    missing = [f for f in fragments if f not in line]
    assert not missing, f"error line lacks {missing}: {line!r}"


def assert_works(command: str, proc: subprocess.CompletedProcess[str]) -> None:
    """The command ran against the cluster: no error line, no traceback, its normal output."""
    assert "Traceback" not in proc.stderr + proc.stdout, describe(proc)
    assert not any(line.startswith("error:") for line in proc.stderr.splitlines()), describe(proc)
    if command == "lint":
        import json

        # lint exits 1 when the cluster holds NetworkPolicies with errors; that is its answer.
        assert proc.returncode in (0, 1), describe(proc)
        assert isinstance(json.loads(proc.stdout), list), describe(proc)
    else:
        assert proc.returncode == 0, describe(proc)
    if command == "status":
        first = proc.stdout.splitlines()[0] if proc.stdout else ""
        assert first.split() == ["POLICY", "NAMESPACE", "STATE", "DETAIL"] or first.startswith(
            "No BaselinePolicies"
        ), describe(proc)


def status_rows(proc: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], str]:
    """``nsbaseline status`` table as {(policy, namespace): state}."""
    assert proc.returncode == 0, describe(proc)
    table = proc.stdout.split("\n\n", 1)[0]  # the protections follow after a blank line
    rows = [line.split(None, 3) for line in table.splitlines()[1:] if line.strip()]
    return {(r[0], r[1]): r[2] for r in rows}


def kube_args(kubeconfig: Path | None = None, context: str | None = None) -> Sequence[str]:
    """``--kubeconfig``/``--context`` flags, as kubectl takes them."""
    out: list[str] = []
    if kubeconfig is not None:
        out += ["--kubeconfig", str(kubeconfig)]
    if context is not None:
        out += ["--context", context]
    return out
