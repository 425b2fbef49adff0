"""Jinja's sandbox with limits, so a hostile or careless template cannot exhaust the operator.

Templates run in Jinja's immutable sandbox with ``StrictUndefined``; on top of it every
``{% for %}`` counts against a per-render step budget, and ``*``, ``**``, ``%``, ``str.format``,
string methods and filters refuse arguments that would build huge values. :mod:`nsbaseline.render`
adds the bound on output size and uses :data:`LOOP_BUDGET` for the render in progress.
"""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Bounds that keep a hostile or careless template from exhausting the operator.
MAX_OUTPUT_CHARS = 256 * 1024
MAX_LOOP_STEPS = 100_000
MAX_INT_ARGUMENT = 10_000


class Budget:
    """Counts loop steps across one render; raising ends a runaway template."""

    def __init__(self, limit: int, what: str = "range() sizes add up") -> None:
        self.left = limit
        self.what = what

    def take(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise jinja2.exceptions.SecurityError(
                f"template exceeded {MAX_LOOP_STEPS} loop steps ({self.what})"
            )


#: Iterations left to the render in progress. Rendering is synchronous, one template at a time.
LOOP_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "nsbaseline_loop_budget", default=None
)
_PERCENT_FIELD = re.compile(r"%[-#0 +]*(\d*|\*)(?:\.(\d*|\*))?")
_BRACE_FIELD = re.compile(r"\{[^{}]*\}")


def _check_int(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARGUMENT:
        raise jinja2.exceptions.SecurityError(f"{what} {value} is above {MAX_INT_ARGUMENT}")


def _check_format_widths(fmt: str, fields: re.Pattern[str]) -> None:
    """Refuse widths and precisions that would allocate huge strings (``%0999999999d``)."""
    if fields is _BRACE_FIELD and re.search(r"\{[^{}]*\{", fmt):
        raise jinja2.exceptions.SecurityError("nested format fields are not allowed")
    for field in fields.finditer(fmt):
        for digits in re.findall(r"\d+", field.group(0)):
            _check_int(int(digits), "format width")


class _BoundedLoops(CodeGenerator):
    """Compiles every ``{% for %}`` to iterate through the render's step counter.

    ``range()`` sizes alone do not bound work: nested loops over lists or strings multiply.
    """

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if node.recursive:
            self.fail("recursive for loops are not allowed", node.lineno)
        node.iter = nodes.Call(
            nodes.EnvironmentAttribute("bounded_iter"), [node.iter], [], None, None
        ).set_lineno(node.lineno)
        super().visit_For(node, frame)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox plus limits on loops, ``*``/``**``/``%`` and huge numeric arguments.

    Immutable: templates cannot grow lists or dicts in place, so no loop can double a value.
    """

    code_generator_class = _BoundedLoops
    intercepted_binops = frozenset({"*", "**", "%"})

    def bounded_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        budget = LOOP_BUDGET.get()
        for item in iterable:
            if budget is not None:
                budget.take(1)
            yield item

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_widths(value.__self__, _BRACE_FIELD)
        return wrapped

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        bound_to = getattr(obj, "__self__", None)
        if isinstance(bound_to, str):  # str.center(10**9), str.zfill(...), str.replace(...)
            for value in (*args, *kwargs.values()):
                _check_int(value, "numeric method argument")
            if getattr(obj, "__name__", "") == "replace" and len(args) >= 2:
                old, new = str(args[0]), str(args[1])
                growth = bound_to.count(old) * (len(new) - len(old)) if old else len(new)
                if len(bound_to) + growth > MAX_OUTPUT_CHARS:
                    raise jinja2.exceptions.SecurityError("str.replace result too large")
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "**" and isinstance(right, int) and abs(right) > 64:
            raise jinja2.exceptions.SecurityError("exponent too large")
        if op == "%" and isinstance(left, str):
            _check_format_widths(left, _PERCENT_FIELD)
            if "*" in left:
                for value in right if isinstance(right, tuple) else (right,):
                    _check_int(value, "format width")
        if op == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(count, int)
                    and len(seq) * count > MAX_OUTPUT_CHARS
                ):
                    raise jinja2.exceptions.SecurityError("sequence repetition too large")
        return super().call_binop(context, op, left, right)


def bounded_filter(func: Callable[..., Any]) -> Callable[..., Any]:
    # The filtered value itself (after any context argument Jinja passes first) is data, such
    # as a port number; only the further arguments are sizes (center(10**9), indent(...)).
    skip = 2 if getattr(func, "jinja_pass_arg", None) is not None else 1

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[skip:], *kwargs.values()):
            _check_int(value, "numeric filter argument")
        return func(*args, **kwargs)

    return wrapper


__all__ = [
    "LOOP_BUDGET",
    "MAX_INT_ARGUMENT",
    "MAX_LOOP_STEPS",
    "MAX_OUTPUT_CHARS",
    "BoundedSandbox",
    "Budget",
    "bounded_filter",
]
