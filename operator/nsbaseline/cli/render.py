"""``nsbaseline render``: the NetworkPolicies the operator would apply, offline.

The same selection, render and plan as the operator, on files: deterministic, for GitOps CI.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Sequence
from pathlib import Path

import click
import yaml

from nsbaseline.cli.common import (
    EXIT_RENDER_ERROR,
    CliError,
    load_yaml_docs,
    pairs,
    policies_from,
    templates_dir_option,
)
from nsbaseline.model import Namespace
from nsbaseline.plan import build_plan, with_hash
from nsbaseline.policy_render import render_policy
from nsbaseline.render import RenderedObject, TemplateSet
from nsbaseline.selection import policy_selects


def namespace_from_options(
    name: str | None,
    namespace_file: Path | None,
    labels: Sequence[str],
    annotations: Sequence[str],
) -> Namespace:
    """The namespace to render for, with the immutable name label the API server always sets."""
    if namespace_file is not None:
        docs = load_yaml_docs(namespace_file)
        if len(docs) != 1 or docs[0].get("kind") != "Namespace":
            raise CliError(f"{namespace_file}: expected exactly one Namespace")
        if not (docs[0].get("metadata") or {}).get("name"):
            raise CliError(f"{namespace_file}: the Namespace needs metadata.name")
        namespace = Namespace.from_body(docs[0])
    elif name:
        namespace = Namespace(name, pairs(labels, "label"), pairs(annotations, "annotation"))
    else:
        raise CliError("give --namespace NAME (with --label/--annotation) or --namespace-file")
    return Namespace(namespace.name, namespace.effective_labels, namespace.annotations)


@click.command()
@click.option(
    "-f",
    "--filename",
    "policy_file",
    type=click.Path(path_type=Path),
    required=True,
    help="File with one or more BaselinePolicies ('-' for stdin).",
)
@click.option("-n", "--namespace", "namespace_name", default=None, help="Namespace name.")
@click.option(
    "--namespace-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A Namespace manifest instead of --namespace/--label/--annotation.",
)
@click.option("-l", "--label", "labels", multiple=True, help="Namespace label key=value.")
@click.option(
    "-a", "--annotation", "annotations", multiple=True, help="Namespace annotation key=value."
)
@templates_dir_option()
@click.option(
    "--ignore-selector",
    is_flag=True,
    help="Render even when the policy does not select the namespace.",
)
def render(
    policy_file: Path,
    namespace_name: str | None,
    namespace_file: Path | None,
    labels: Sequence[str],
    annotations: Sequence[str],
    templates_dir: Path | None,
    ignore_selector: bool,
) -> None:
    """Print the NetworkPolicies the operator would apply, offline (same code path)."""
    policies = policies_from(load_yaml_docs(policy_file), policy_file)
    namespace = namespace_from_options(namespace_name, namespace_file, labels, annotations)
    templates = TemplateSet(templates_dir)
    now = datetime.datetime.now(datetime.UTC)  # the clock is read here, at the edge
    renders = []
    for policy in sorted(policies, key=lambda p: p.name):
        if not ignore_selector and not policy_selects(policy, namespace):
            click.echo(
                f"# BaselinePolicy {policy.name} does not select namespace {namespace.name}",
                err=True,
            )
            continue
        renders.append(render_policy(templates, namespace, policy, now))
    plan = build_plan(namespace, renders, [], {p.name: p for p in policies})
    errors = [e for r in renders for e in r.errors]
    for error in errors:
        click.echo(f"error: {error}", err=True)
    ordered: list[RenderedObject] = []
    for phase in [*plan.phases, plan.audit]:
        for action in phase:
            for r in renders:
                ordered.extend(o for o in r.objects if o.name == action.name)
    docs = [with_hash(o.body) for o in ordered]
    if docs:
        click.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)
    if errors:
        sys.exit(EXIT_RENDER_ERROR)


__all__ = ["namespace_from_options", "render"]
