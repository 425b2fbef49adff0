"""``nsbaseline explain``: what NetworkPolicies allow, as a matrix or one flow and why."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path

import click

from nsbaseline import names
from nsbaseline.cli.common import (
    CliError,
    cluster_docs,
    cluster_options,
    load_yaml_docs,
    policies_from,
    templates_dir_option,
    with_cluster,
)
from nsbaseline.evaluator import NetworkPolicy
from nsbaseline.explain import (
    FORMATS,
    PORT_SYNTAX,
    ExplainError,
    Inputs,
    build_world,
    format_matrix,
    format_query,
    matrix,
    query,
)
from nsbaseline.model import Namespace
from nsbaseline.policy_render import render_policy
from nsbaseline.render import TemplateSet


def _inputs(
    files: Sequence[Path],
    policy_file: Path | None,
    namespaces: Sequence[str],
    templates_dir: Path | None,
    kubeconfig: str | None,
    context: str | None,
) -> Inputs:
    if files:
        inputs = Inputs.from_docs(d for f in files for d in load_yaml_docs(f))
    elif policy_file is not None:
        inputs = Inputs([], [], [])  # offline: only the baseline itself
    else:
        inputs = Inputs.from_docs(with_cluster(kubeconfig, context, cluster_docs))
    if policy_file is None:
        return inputs
    if not namespaces:
        raise CliError("--policy needs --namespace: the namespace(s) to render the baseline for")
    policy_docs = load_yaml_docs(policy_file)
    # Namespaces (and anything else) beside the policy describe the world it is explained in.
    inputs.extend(Inputs.from_docs(d for d in policy_docs if d.get("kind") != names.KIND))
    policies = policies_from([d for d in policy_docs if d.get("kind") == names.KIND], policy_file)
    templates = TemplateSet(templates_dir)
    now = datetime.datetime.now(datetime.UTC)  # the clock is read here, at the edge
    known = {n.name: n for n in inputs.namespaces}
    for ns_name in namespaces:
        ns = Namespace(ns_name, known[ns_name].labels if ns_name in known else {})
        ns = ns.with_name_label()
        for policy in policies:
            rendered = render_policy(templates, ns, policy, now)
            for error in rendered.errors:
                click.echo(f"error: {error}", err=True)
            inputs.network_policies.extend(
                NetworkPolicy.from_body(o.body) for o in rendered.objects
            )
    return inputs


@click.command()
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Manifests with NetworkPolicies, Namespaces and Pods (repeatable); default: the cluster.",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path),
    default=None,
    help="A BaselinePolicy file: add the baseline it renders for each --namespace.",
)
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Namespace(s) for the matrix.")
@click.option("--from", "source", default=None, help="ns/pod, ns, ip:ADDR, dns or external.")
@click.option("--to", "destination", default=None, help="ns/pod, ns, ip:ADDR, dns or external.")
@click.option("--port", default=None, help=f"{PORT_SYNTAX} for --from/--to (TCP default).")
@click.option("-o", "--output", type=click.Choice(FORMATS), default="table", show_default=True)
@templates_dir_option()
@cluster_options
def explain(
    files: Sequence[Path],
    policy_file: Path | None,
    namespaces: Sequence[str],
    source: str | None,
    destination: str | None,
    port: str | None,
    output: str,
    templates_dir: Path | None,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """What the NetworkPolicies allow: a namespace's connectivity matrix, or one flow and why."""
    inputs = _inputs(files, policy_file, namespaces, templates_dir, kubeconfig, context)
    world = build_world(inputs, namespaces)
    try:
        if source or destination or port:
            if not (source and destination and port):
                raise CliError("a single query needs --from, --to and --port")
            answer = query(world, source, destination, port)
            text = json.dumps(answer, indent=2) + "\n" if output == "json" else format_query(answer)
            click.echo(text, nl=False)
            return
        click.echo(format_matrix(matrix(world, namespaces), output), nl=False)
    except ExplainError as exc:
        raise CliError(str(exc)) from exc


__all__ = ["explain"]
