"""The pure core reads no clock: time is passed in (the layering itself is .importlinter's job).

A pure module that asked for the time itself would make the operator, the CLI and the tests
disagree about whether an exception is active, and make its output depend on when it runs.
"""

from __future__ import annotations

import ast
import configparser

import pytest

from tests.support.kube import REPO

PACKAGE = REPO / "operator" / "nsbaseline"
CLOCKS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}
CLOCK_FUNCTIONS = {"time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"}


def _pure_modules() -> list[str]:
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    sources = config["importlinter:contract:pure-core"]["source_modules"].split()
    return [m.removeprefix("nsbaseline.") for m in sources]


def _clock_reads(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        name = node.func.attr
        owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        if (owner_name, name) in CLOCKS or (owner_name == "time" and name in CLOCK_FUNCTIONS):
            found.append(f"line {node.lineno}: {owner_name}.{name}()")
    return found


@pytest.mark.parametrize("module", _pure_modules())
def test_a_pure_module_never_reads_the_clock(module: str) -> None:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    assert _clock_reads(tree) == []


def test_the_check_finds_a_clock_read() -> None:
    assert _clock_reads(ast.parse("import datetime\nx = datetime.datetime.now()\n"))
