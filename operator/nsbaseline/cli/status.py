"""``nsbaseline status``: how every namespace stands with every BaselinePolicy, from the cluster.

Reads (paginated LISTs, no writes) and asks :func:`nsbaseline.assessment.assess_namespace` — the
same function the operator's status uses — with a plan over the whole namespace, so several
policies on one namespace are judged each on its own objects. Below the table: which admission
protections are installed and what they protect (:mod:`nsbaseline.protections`).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from nsbaseline import kube, names
from nsbaseline.assessment import Assessment, assess_namespace
from nsbaseline.cli.common import (
    CliError,
    cluster_options,
    table,
    templates_dir_option,
    with_cluster,
)
from nsbaseline.model import BaselinePolicy, ManagedObject, Namespace, is_candidate
from nsbaseline.plan import build_plan
from nsbaseline.policy_render import render_policy
from nsbaseline.protections import protections
from nsbaseline.render import TemplateSet
from nsbaseline.schema import SpecError
from nsbaseline.selection import policies_for


@dataclass
class Snapshot:
    """What ``status`` reads from the cluster: paginated LISTs, nothing written."""

    policy_bodies: list[dict[str, Any]]
    policies: list[BaselinePolicy]
    namespaces: list[dict[str, Any]]
    objects: list[dict[str, Any]]
    #: ValidatingAdmissionPolicies and bindings, or why they could not be read.
    admission: tuple[list[dict[str, Any]], list[dict[str, Any]]] | str


async def _read(client: kube.KubeClient) -> Snapshot:
    bodies = await client.list_policies()
    try:
        policies = [BaselinePolicy.from_body(b) for b in bodies]
    except SpecError as exc:  # only if the installed CRD is not the one this version expects
        raise CliError(f"a {names.KIND} in the cluster cannot be read: {exc}") from exc
    namespaces = await client.list_namespaces()
    objects, _ = await client.list_network_policies()
    admission: tuple[list[dict[str, Any]], list[dict[str, Any]]] | str
    try:
        admission = await client.list_admission()
    except kube.ApiError as exc:  # reading admission is a bonus: say why it is missing
        reason = "forbidden" if exc.status == 403 else f"{exc.status} {exc.reason}".strip()
        admission = f"cannot list validatingadmissionpolicies: {reason}"
    return Snapshot(bodies, policies, namespaces, objects, admission)


def assessments(
    policies: list[BaselinePolicy],
    namespace_bodies: list[Any],
    object_bodies: list[Any],
    templates: TemplateSet,
    now: datetime.datetime,
) -> list[Assessment]:
    """Every (policy, namespace) worth a row, from raw cluster listings. Pure."""
    by_namespace: dict[str, list[ManagedObject]] = {}
    for body in object_bodies:
        if is_candidate(body):
            obj = ManagedObject.from_body(body)
            by_namespace.setdefault(obj.namespace, []).append(obj)
    index = {p.name: p for p in policies}
    rows: list[Assessment] = []
    for ns in sorted((Namespace.from_body(b) for b in namespace_bodies), key=lambda n: n.name):
        selecting = policies_for(policies, ns)
        renders = [render_policy(templates, ns, p, now) for p in selecting]
        plan = build_plan(ns, renders, by_namespace.get(ns.name, []), index)
        rows.extend(assess_namespace(ns, policies, plan, now))
    return sorted(rows, key=lambda r: (r.policy_name, r.namespace))


@click.command()
@click.option(
    "-o", "--output", type=click.Choice(["table", "yaml"]), default="table", show_default=True
)
@templates_dir_option("The operator's extra templates, to judge what it would render.")
@cluster_options
def status(
    output: str, templates_dir: Path | None, kubeconfig: str | None, context: str | None
) -> None:
    """Per policy and namespace: compliant, exception, drifted, conflict, error, audit-pending
    or excluded."""
    snapshot = with_cluster(kubeconfig, context, _read)
    now = datetime.datetime.now(datetime.UTC)
    rows = assessments(
        snapshot.policies, snapshot.namespaces, snapshot.objects, TemplateSet(templates_dir), now
    )
    data = [
        {"policy": r.policy_name, "namespace": r.namespace, "state": r.state, "detail": r.detail}
        for r in rows
    ]
    if output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
        return
    if not snapshot.policies:
        click.echo("No BaselinePolicies found.")
    else:
        headers = ["POLICY", "NAMESPACE", "STATE", "DETAIL"]
        click.echo(table(headers, [list(d.values()) for d in data]), nl=False)
    click.echo()
    if isinstance(snapshot.admission, str):
        click.echo(f"protections: unknown ({snapshot.admission})")
        return
    vaps, bindings = snapshot.admission
    found = protections(vaps, bindings, snapshot.policy_bodies)
    click.echo(table(["PROTECTION", "STATE", "DETAIL"], [p.row for p in found]), nl=False)


__all__ = ["assessments", "status"]
