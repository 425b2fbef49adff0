"""What every command shares: options declared once, input loading, and one-line errors.

Errors reach the user as ``error: <one line>`` on stderr with exit code 2, never a traceback:
commands raise :class:`CliError` (or let a :class:`~nsbaseline.kube.ClusterError` escape from
:func:`with_cluster`, which words it for a person).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import yaml

from nsbaseline import kube, names
from nsbaseline.model import BaselinePolicy
from nsbaseline.schema import SpecError

EXIT_RENDER_ERROR = 1
EXIT_BAD_INPUT = 2

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class CliError(click.ClickException):
    """A problem the user can fix; shown as one ``error:`` line, exit code 2."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def _existing_dir(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None and not value.is_dir():
        raise CliError(f"templates directory {value} does not exist")
    return value


def templates_dir_option(
    help_text: str = "Extra templates, or overrides of the built-ins.",
) -> Callable[[F], F]:
    """``--templates-dir``: the same option, the same checks, on every command that renders."""
    return click.option(
        "--templates-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        callback=_existing_dir,
        help=help_text,
    )


def cluster_options(fn: F) -> F:
    """``--kubeconfig`` and ``--context`` as kubectl has them, on commands that read the cluster."""
    fn = click.option(
        "--context",
        default=None,
        help="The kubeconfig context to use (default: its current-context).",
    )(fn)
    fn = click.option(
        "--kubeconfig",
        default=None,
        metavar="PATH",
        help="Kubeconfig file(s), ':'-separated (default: $KUBECONFIG, ~/.kube/config, or "
        "the pod's ServiceAccount).",
    )(fn)
    return fn


def with_cluster(
    kubeconfig: str | None,
    context: str | None,
    work: Callable[[kube.KubeClient], Awaitable[T]],
) -> T:
    """Run ``work`` with a client for the chosen cluster; cluster errors become one line."""

    async def main() -> T:
        client = kube.connect(kubeconfig, context)
        try:
            return await work(client)
        except kube.ClusterError as exc:
            raise CliError(
                kube.explain(exc, server=client.server, user=client.credentials.user)
            ) from exc
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except kube.ClusterError as exc:  # failed before a client existed: logging in
        raise CliError(kube.explain(exc)) from exc


async def cluster_docs(client: kube.KubeClient) -> list[dict[str, Any]]:
    """Namespaces, running Pods and NetworkPolicies from the cluster, with their kinds set."""
    namespaces = await client.list_namespaces()
    pods = await client.list_pods()
    policies, _ = await client.list_network_policies()
    running = [
        p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    return [
        *({**n, "kind": "Namespace"} for n in namespaces),
        *({**p, "kind": "Pod"} for p in running),
        *({**p, "kind": "NetworkPolicy"} for p in policies),
    ]


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of a file ('-' for stdin), each a mapping."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not valid YAML: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict):
            raise CliError(f"{path}: every document must be a mapping")
    return docs


def policies_from(docs: Sequence[dict[str, Any]], path: Path) -> list[BaselinePolicy]:
    """The BaselinePolicies among ``docs`` (other kinds are skipped, and said so)."""
    policies = []
    for doc in docs:
        if doc.get("kind") != names.KIND:
            # Manifests often mix kinds (a demo with its Namespaces): skip them, say so.
            click.echo(f"# skipping {doc.get('kind')} in {path}", err=True)
            continue
        if doc.get("apiVersion") != names.API_VERSION:
            raise CliError(
                f"{path}: expected apiVersion {names.API_VERSION}, got {doc.get('apiVersion')}"
            )
        if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
            raise CliError(f"{path}: a {names.KIND} needs metadata.name")
        if not isinstance(doc.get("spec", {}), dict):
            raise CliError(f"{path}: spec must be a mapping")
        try:
            policies.append(BaselinePolicy.from_body(doc))
        except SpecError as exc:
            raise CliError(f"{path}: {names.KIND} {doc['metadata']['name']}: {exc}") from exc
    if not policies:
        raise CliError(f"{path}: no {names.KIND} found")
    return policies


def pairs(values: Sequence[str], what: str) -> dict[str, str]:
    """``key=value`` options into a mapping."""
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise CliError(f"--{what} takes key=value, got {value!r}")
        out[key] = val
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """kubectl-style columns: left-aligned, two spaces apart."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    ]
    return "\n".join(lines) + "\n"


__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_RENDER_ERROR",
    "CliError",
    "cluster_docs",
    "cluster_options",
    "load_yaml_docs",
    "pairs",
    "policies_from",
    "table",
    "templates_dir_option",
    "with_cluster",
]
