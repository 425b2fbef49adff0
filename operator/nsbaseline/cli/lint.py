"""``nsbaseline lint``: NetworkPolicy mistakes in files, templates or the cluster."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import click
import yaml

from nsbaseline import lint as lint_
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
from nsbaseline.lint_context import DEFAULT_POD_CIDR, DEFAULT_SERVICE_CIDR, Context, context_from
from nsbaseline.lint_findings import Finding
from nsbaseline.model import BaselinePolicy, Namespace
from nsbaseline.policy_render import render_policy
from nsbaseline.render import TEMPLATE_SUFFIX, TemplateSet, builtin_template_dir
from nsbaseline.schema import SpecError


@click.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@templates_dir_option("Lint these templates (and the built-ins), rendered for a sample namespace.")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="BaselinePolicy to render the templates with (default: every built-in piece on).",
)
@click.option("--cluster", is_flag=True, help="Lint the NetworkPolicies in the cluster.")
@click.option(
    "-n",
    "--namespace",
    "sample",
    default="sample",
    show_default=True,
    help="Namespace BaselinePolicies and templates are rendered for.",
)
@click.option("--pod-cidr", multiple=True, default=[DEFAULT_POD_CIDR], show_default=True)
@click.option("--service-cidr", multiple=True, default=[DEFAULT_SERVICE_CIDR], show_default=True)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--strict", is_flag=True, help="Exit non-zero on warnings too.")
@cluster_options
def lint(
    files: Sequence[Path],
    templates_dir: Path | None,
    policy_file: Path | None,
    cluster: bool,
    sample: str,
    pod_cidr: Sequence[str],
    service_cidr: Sequence[str],
    output: str,
    strict: bool,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Find NetworkPolicy mistakes in files, templates or the cluster; exit 1 on errors."""
    if not (files or templates_dir or cluster):
        raise CliError("give files to lint, --templates-dir or --cluster")
    now = datetime.datetime.now(datetime.UTC)  # the clock is read here, at the edge
    lint_context = Context(pod_cidrs=tuple(pod_cidr), service_cidrs=tuple(service_cidr), now=now)
    docs: list[lint_.Located] = []
    findings: list[Finding] = []
    namespace = Namespace(sample).with_name_label()
    templates = TemplateSet(templates_dir)
    for path in files:
        try:
            located = lint_.load_with_lines(path.read_text(), str(path))
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            findings.append(Finding("error", "invalid-yaml", str(exc), str(path)))
            continue
        for doc in located:
            if isinstance(doc.data, dict) and doc.data.get("kind") == names.KIND:
                line = doc.line(())
                try:
                    policy = BaselinePolicy.from_body(doc.data)
                except (SpecError, KeyError, TypeError):
                    continue  # not renderable: lint reports why (invalid-policy)
                rendered = render_policy(templates, namespace, policy, now)
                docs += [
                    lint_.rendered(o.body, str(path), line, origin=f"piece {o.piece}")
                    for o in rendered.objects
                ]
                findings += [
                    Finding("error", "render-error", str(e), str(path), line)
                    for e in rendered.errors
                ]
        docs += located
    if templates_dir is not None:
        policy = _lint_template_policy(policy_file, templates)
        rendered = render_policy(templates, namespace, policy, now)
        for obj in rendered.objects:
            source = templates_dir / f"{obj.piece}{TEMPLATE_SUFFIX}"
            if not source.is_file():
                source = builtin_template_dir() / f"{obj.piece}{TEMPLATE_SUFFIX}"
            docs.append(
                lint_.rendered(
                    obj.body, str(source), None, source.read_text(), f"piece {obj.piece}"
                )
            )
        findings += [
            Finding("error", "render-error", str(e), str(templates_dir / e.template))
            for e in rendered.errors
        ]
    if cluster:
        raw = with_cluster(kubeconfig, context, cluster_docs)
        for body in raw:
            meta = body.get("metadata") or {}
            where = f"{body['kind']} {meta.get('namespace', '')}/{meta.get('name', '')}"
            docs.append(lint_.Located(body, where))
    lint_context = context_from(docs, lint_context)
    findings += lint_.lint(docs, lint_context)
    if output == "json":
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        for finding in findings:
            click.echo(str(finding))
        errors = sum(f.severity == "error" for f in findings)
        click.echo(f"{errors} error(s), {len(findings) - errors} warning(s)", err=True)
    if any(f.severity == "error" or strict for f in findings):
        sys.exit(1)


def _lint_template_policy(policy_file: Path | None, templates: TemplateSet) -> BaselinePolicy:
    if policy_file is not None:
        return policies_from(load_yaml_docs(policy_file), policy_file)[0]
    extra = sorted(n for n in templates.sources if n not in names.BUILTIN_PIECES)
    return BaselinePolicy.from_body(
        {
            "metadata": {"name": "lint"},
            "spec": {
                "monitoring": {"enabled": True},
                "ingressController": {"enabled": True},
                "templates": [{"name": n} for n in extra],
            },
        }
    )


__all__ = ["lint"]
