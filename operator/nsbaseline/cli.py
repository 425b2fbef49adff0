"""The ``nsbaseline`` command: run the operator, preview offline, report from the cluster."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml

from nsbaseline import __version__, exceptions, names
from nsbaseline import lint as lint_
from nsbaseline.evaluator import Policy as EvalPolicy
from nsbaseline.explain import (
    FORMATS,
    ExplainError,
    Inputs,
    build_world,
    cluster_docs,
    cluster_inputs,
    format_matrix,
    format_query,
    matrix,
    query,
)
from nsbaseline.model import NamespaceInfo, PolicyInfo
from nsbaseline.plan import build_plan, with_hash
from nsbaseline.render import (
    TEMPLATE_SUFFIX,
    RenderedObject,
    TemplateSet,
    builtin_template_dir,
    render_policy,
)
from nsbaseline.selection import policy_selects, selector_matches

EXIT_RENDER_ERROR = 1
EXIT_BAD_INPUT = 2


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nsbaseline")
def main() -> None:
    """nsbaseline keeps a secure NetworkPolicy baseline in every opted-in namespace."""


@main.command()
@click.option(
    "--templates-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Extra templates, or overrides of the built-ins (a mounted ConfigMap).",
)
@click.option(
    "--standalone/--peering",
    default=False,
    help="Run alone, or coordinate with other replicas so exactly one is active.",
)
@click.option(
    "--peering-name",
    default="nsbaseline",
    show_default=True,
    help="ClusterKopfPeering object shared by the replicas.",
)
@click.option(
    "--priority",
    type=int,
    default=None,
    help="Peering priority; the highest live replica is active (default: random per replica).",
)
@click.option(
    "--peering-lifetime",
    type=click.IntRange(min=5),
    default=60,
    show_default=True,
    help="Seconds a replica's peering record stays valid without a keep-alive: how long a "
    "standby waits before taking over from a replica that died without saying goodbye.",
)
@click.option(
    "--health",
    "liveness",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="Kopf's health endpoint for liveness/readiness probes ('' disables).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=9090,
    show_default=True,
    help="Port for Prometheus /metrics (0 disables).",
)
@click.option(
    "--workers", type=int, default=16, show_default=True, help="Namespaces reconciled concurrently."
)
@click.option(
    "--sweep-interval",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds between full re-checks of every namespace (a backstop to watches).",
)
@click.option(
    "--log-format", type=click.Choice(["plain", "full", "json"]), default="full", show_default=True
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def run(
    templates_dir: Path | None,
    standalone: bool,
    peering_name: str,
    priority: int | None,
    peering_lifetime: int,
    liveness: str,
    metrics_port: int,
    workers: int,
    sweep_interval: float,
    log_format: str,
    verbose: bool,
) -> None:
    """Run the operator against the cluster in KUBECONFIG (or in-cluster credentials)."""
    import kopf

    from nsbaseline import handlers, metrics
    from nsbaseline.reconciler import Settings

    if templates_dir is not None and not templates_dir.is_dir():
        _fail(f"templates directory {templates_dir} does not exist")
    handlers.RUNTIME.settings = Settings(
        workers=workers, sweep_interval=sweep_interval, templates_dir=templates_dir
    )
    # Unreadable template files fail here, at start. A template that does not compile does not:
    # refusing to start would stop every other baseline from being enforced and repaired, so
    # the operator starts, warns below, and reports it per render (Degraded, Event).
    broken = TemplateSet(templates_dir).syntax_errors()
    formats = {
        "plain": kopf.LogFormat.PLAIN,
        "full": kopf.LogFormat.FULL,
        "json": kopf.LogFormat.JSON,
    }
    kopf.configure(verbose=verbose, log_format=formats[log_format])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not verbose:
        # Kopf logs every event handler call at INFO; at thousands of objects that is noise.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    for name, problem in broken.items():
        logging.getLogger("nsbaseline").warning("template %r cannot be used: %s", name, problem)
    metrics.serve(metrics_port)
    settings = kopf.OperatorSettings()
    settings.peering.lifetime = peering_lifetime
    kopf.run(
        settings=settings,
        clusterwide=True,
        standalone=standalone,
        peering_name=None if standalone else peering_name,
        priority=_peering_priority(priority, standalone),
        liveness_endpoint=liveness or None,
    )


def _peering_priority(priority: int | None, standalone: bool) -> int | None:
    """A random priority per replica unless one is given.

    Kopf pauses *every* replica when live peers share the same priority, so replicas of one
    Deployment (identical arguments) need distinct ones: the highest is active, the others wait.
    """
    if priority is not None or standalone:
        return priority
    return random.randint(1, 2**31 - 1)


def _load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")
    except yaml.YAMLError as exc:
        _fail(f"{path} is not valid YAML: {exc}")
    for doc in docs:
        if not isinstance(doc, dict):
            _fail(f"{path}: every document must be a mapping")
    return docs


def _policies_from(docs: Sequence[dict[str, Any]], path: Path) -> list[PolicyInfo]:
    policies = []
    for doc in docs:
        if doc.get("kind") != names.KIND:
            # Manifests often mix kinds (a demo with its Namespaces): skip them, say so.
            click.echo(f"# skipping {doc.get('kind')} in {path}", err=True)
            continue
        if doc.get("apiVersion") != names.API_VERSION:
            _fail(f"{path}: expected apiVersion {names.API_VERSION}, got {doc.get('apiVersion')}")
        if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
            _fail(f"{path}: a {names.KIND} needs metadata.name")
        if not isinstance(doc.get("spec", {}), dict):
            _fail(f"{path}: spec must be a mapping")
        policies.append(PolicyInfo.from_body(doc))
    if not policies:
        _fail(f"{path}: no {names.KIND} found")
    return policies


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            _fail(f"--{what} takes key=value, got {value!r}")
        out[key] = val
    return out


@main.command()
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
@click.option("--templates-dir", type=click.Path(path_type=Path, file_okay=False), default=None)
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
    policies = _policies_from(_load_yaml_docs(policy_file), policy_file)
    if namespace_file is not None:
        ns_docs = _load_yaml_docs(namespace_file)
        if len(ns_docs) != 1 or ns_docs[0].get("kind") != "Namespace":
            _fail(f"{namespace_file}: expected exactly one Namespace")
        if not (ns_docs[0].get("metadata") or {}).get("name"):
            _fail(f"{namespace_file}: the Namespace needs metadata.name")
        namespace = NamespaceInfo.from_body(ns_docs[0])
    elif namespace_name:
        namespace = NamespaceInfo(
            namespace_name, _pairs(labels, "label"), _pairs(annotations, "annotation")
        )
    else:
        _fail("give --namespace NAME (with --label/--annotation) or --namespace-file")
    # The API server sets this immutable label on every namespace; selectors may rely on it.
    namespace = NamespaceInfo(
        namespace.name,
        {**namespace.labels, names.NAMESPACE_NAME_LABEL: namespace.name},
        namespace.annotations,
    )
    if templates_dir is not None and not templates_dir.is_dir():
        _fail(f"templates directory {templates_dir} does not exist")
    templates = TemplateSet(templates_dir)
    renders = []
    for policy in sorted(policies, key=lambda p: p.name):
        if not ignore_selector and not policy_selects(policy, namespace):
            click.echo(
                f"# BaselinePolicy {policy.name} does not select namespace {namespace.name}",
                err=True,
            )
            continue
        renders.append(render_policy(templates, namespace, policy))
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


@main.command()
@click.option(
    "-o", "--output", type=click.Choice(["table", "yaml"]), default="table", show_default=True
)
@click.option("--templates-dir", type=click.Path(path_type=Path, file_okay=False), default=None)
def status(output: str, templates_dir: Path | None) -> None:
    """Per policy and namespace: compliant, drifted, conflict, error or excluded."""
    rows = asyncio.run(_status_rows(templates_dir))
    if output == "yaml":
        click.echo(yaml.safe_dump(rows, sort_keys=False), nl=False)
        return
    if not rows:
        click.echo("No BaselinePolicies found.")
        return
    headers = ["POLICY", "NAMESPACE", "STATE", "DETAIL"]
    table = [[r["policy"], r["namespace"], r["state"], r["detail"]] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *table, strict=False)]
    for line in [headers, *table]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


async def _status_rows(templates_dir: Path | None) -> list[dict[str, str]]:
    from nsbaseline.kube import client_from_environment
    from nsbaseline.model import ManagedObject, is_candidate

    client = client_from_environment()
    if client is None:
        _fail("no kubeconfig found (set KUBECONFIG)")
    try:
        policies = {p.name: p for p in map(PolicyInfo.from_body, await client.list_policies())}
        namespaces = [NamespaceInfo.from_body(n) for n in await client.list_namespaces()]
        objects: dict[str, list[ManagedObject]] = {}
        for body in await client.list_network_policies():
            if is_candidate(body):
                obj = ManagedObject.from_body(body)
                objects.setdefault(obj.namespace, []).append(obj)
    finally:
        await client.close()
    templates = TemplateSet(templates_dir)
    rows: list[dict[str, str]] = []
    for ns in sorted(namespaces, key=lambda n: n.name):
        for policy in sorted(policies.values(), key=lambda p: p.name):
            if not policy_selects(policy, ns):
                if ns.name in policy.excluded_namespaces and selector_matches(
                    policy.namespace_selector, ns.labels
                ):
                    rows.append(
                        {
                            "policy": policy.name,
                            "namespace": ns.name,
                            "state": "excluded",
                            "detail": "listed in excludedNamespaces",
                        }
                    )
                continue
            rendered = render_policy(templates, ns, policy)
            plan = build_plan(ns, [rendered], objects.get(ns.name, []), policies)
            if rendered.errors:
                state, detail = "error", str(rendered.errors[0])
            elif plan.conflicts:
                state = "conflict"
                detail = ", ".join(c.name for c in plan.conflicts) + " not managed by nsbaseline"
            elif plan.writes or plan.audit:
                todo = plan.writes + plan.audit
                state = "audit-pending" if policy.audit else "drifted"
                detail = ", ".join(f"{a.verb.lower()} {a.name}" for a in todo)
            else:
                state, detail = "compliant", f"{len(rendered.objects)} NetworkPolicies in place"
            held = [
                f"{', '.join(e.pieces)} held back until {e.expires_at_text} ({e.reason})"
                for e in exceptions.parse(policy.spec)
                if e.namespace == ns.name and e.active(exceptions.now())
            ]
            if held:
                detail += "; exception: " + "; ".join(held)
            rows.append(
                {"policy": policy.name, "namespace": ns.name, "state": state, "detail": detail}
            )
    return rows


@main.command()
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
@click.option("--port", default=None, help="PORT[/TCP|UDP|SCTP] for --from/--to (TCP default).")
@click.option("-o", "--output", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--templates-dir", type=click.Path(path_type=Path, file_okay=False), default=None)
def explain(
    files: Sequence[Path],
    policy_file: Path | None,
    namespaces: Sequence[str],
    source: str | None,
    destination: str | None,
    port: str | None,
    output: str,
    templates_dir: Path | None,
) -> None:
    """What the NetworkPolicies allow: a namespace's connectivity matrix, or one flow and why."""
    inputs = _explain_inputs(files, policy_file, namespaces, templates_dir)
    world = build_world(inputs, namespaces)
    try:
        if source or destination or port:
            if not (source and destination and port):
                _fail("a single query needs --from, --to and --port")
            answer = query(world, source, destination, port)
            text = json.dumps(answer, indent=2) + "\n" if output == "json" else format_query(answer)
            click.echo(text, nl=False)
            return
        click.echo(format_matrix(matrix(world, namespaces), output), nl=False)
    except ExplainError as exc:
        _fail(str(exc))


def _explain_inputs(
    files: Sequence[Path],
    policy_file: Path | None,
    namespaces: Sequence[str],
    templates_dir: Path | None,
) -> Inputs:
    if files:
        inputs = Inputs.from_docs(d for f in files for d in _load_yaml_docs(f))
    elif policy_file is not None:
        inputs = Inputs([], [], [])  # offline: only the baseline itself
    else:
        try:
            inputs = asyncio.run(cluster_inputs())
        except ExplainError as exc:
            _fail(str(exc))
    if policy_file is None:
        return inputs
    if not namespaces:
        _fail("--policy needs --namespace: the namespace(s) to render the baseline for")
    policy_docs = _load_yaml_docs(policy_file)
    # Namespaces (and anything else) beside the policy describe the world it is explained in.
    inputs.extend(Inputs.from_docs(d for d in policy_docs if d.get("kind") != names.KIND))
    policies = _policies_from([d for d in policy_docs if d.get("kind") == names.KIND], policy_file)
    templates = TemplateSet(templates_dir)
    known = {n.name: n for n in inputs.namespaces}
    for ns_name in namespaces:
        labels = dict(known[ns_name].labels) if ns_name in known else {}
        labels[names.NAMESPACE_NAME_LABEL] = ns_name
        ns = NamespaceInfo(ns_name, labels)
        for policy in policies:
            rendered = render_policy(templates, ns, policy)
            for error in rendered.errors:
                click.echo(f"error: {error}", err=True)
            inputs.policies.extend(EvalPolicy.from_body(o.body) for o in rendered.objects)
    return inputs


@main.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--templates-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Lint these templates (and the built-ins), rendered for a sample namespace.",
)
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
@click.option("--pod-cidr", multiple=True, default=[lint_.DEFAULT_POD_CIDR], show_default=True)
@click.option(
    "--service-cidr", multiple=True, default=[lint_.DEFAULT_SERVICE_CIDR], show_default=True
)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--strict", is_flag=True, help="Exit non-zero on warnings too.")
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
) -> None:
    """Find NetworkPolicy mistakes in files, templates or the cluster; exit 1 on errors."""
    if not (files or templates_dir or cluster):
        _fail("give files to lint, --templates-dir or --cluster")
    context = lint_.Context(pod_cidrs=tuple(pod_cidr), service_cidrs=tuple(service_cidr))
    docs: list[lint_.Located] = []
    findings: list[lint_.Finding] = []
    namespace = NamespaceInfo(sample, {names.NAMESPACE_NAME_LABEL: sample})
    templates = TemplateSet(templates_dir)
    for path in files:
        try:
            located = lint_.load_with_lines(path.read_text(), str(path))
        except OSError as exc:
            _fail(f"cannot read {path}: {exc.strerror}")
        except yaml.YAMLError as exc:
            findings.append(lint_.Finding("error", "invalid-yaml", str(exc), str(path)))
            continue
        for doc in located:
            if isinstance(doc.data, dict) and doc.data.get("kind") == names.KIND:
                line = doc.line(())
                rendered = render_policy(templates, namespace, PolicyInfo.from_body(doc.data))
                docs += [
                    lint_.rendered(o.body, str(path), line, origin=f"piece {o.piece}")
                    for o in rendered.objects
                ]
                findings += [
                    lint_.Finding("error", "render-error", str(e), str(path), line)
                    for e in rendered.errors
                ]
        docs += located
    if templates_dir is not None:
        policy = _lint_template_policy(policy_file, templates)
        rendered = render_policy(templates, namespace, policy)
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
            lint_.Finding("error", "render-error", str(e), str(templates_dir / e.template))
            for e in rendered.errors
        ]
    if cluster:
        try:
            raw = asyncio.run(cluster_docs())
        except ExplainError as exc:
            _fail(str(exc))
        for body in raw:
            meta = body.get("metadata") or {}
            where = f"{body['kind']} {meta.get('namespace', '')}/{meta.get('name', '')}"
            docs.append(lint_.Located(body, where))
    context = lint_.context_from(docs, context)
    findings += lint_.lint(docs, context)
    if output == "json":
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        for finding in findings:
            click.echo(str(finding))
        errors = sum(f.severity == "error" for f in findings)
        click.echo(f"{errors} error(s), {len(findings) - errors} warning(s)", err=True)
    if any(f.severity == "error" or strict for f in findings):
        sys.exit(1)


def _lint_template_policy(policy_file: Path | None, templates: TemplateSet) -> PolicyInfo:
    if policy_file is not None:
        return _policies_from(_load_yaml_docs(policy_file), policy_file)[0]
    extra = sorted(n for n in templates.sources if n not in names.BUILTIN_PIECES)
    return PolicyInfo.from_body(
        {
            "metadata": {"name": "lint"},
            "spec": {
                "monitoring": {"enabled": True},
                "ingressController": {"enabled": True},
                "templates": [{"name": n} for n in extra],
            },
        }
    )


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"nsbaseline {__version__}")


if __name__ == "__main__":  # pragma: no cover
    main()
