"""``nsbaseline run``: the operator itself.

Before Kopf starts, everything a person can fix is checked once and reported as one line: the
credentials load, the API server answers, the CRD is installed, the operator may list what it
watches, and the metrics and health ports are free. After that the operator rides out outages
on its own (watches and writes retry forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import socket
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import click

from nsbaseline import kube
from nsbaseline.cli.common import CliError, cluster_options, templates_dir_option
from nsbaseline.render import TemplateSet


def _peering_priority(priority: int | None, standalone: bool) -> int | None:
    """A random priority per replica unless one is given.

    Kopf pauses *every* replica when live peers share the same priority, so replicas of one
    Deployment (identical arguments) need distinct ones: the highest is active, the others wait.
    """
    if priority is not None or standalone:
        return priority
    return random.randint(1, 2**31 - 1)


def _identity() -> str:
    """This replica's peering identity, as Kopf makes one: the pod's name when it is known."""
    pod = os.environ.get("POD_ID") or os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{pod}/{os.getpid()}/{random.randint(0, 2**32):08x}"


def _check_port_free(host: str, port: int, flag: str) -> None:
    """Refuse to start when a port we must listen on is taken, naming the flag that moves it.

    Kopf's health server would otherwise die inside its own task with a traceback.
    """
    if port == 0:
        return  # the kernel picks a free one
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(
                    f"port {port} ({flag}) is already in use: pass another {flag}"
                ) from exc
            raise CliError(f"cannot listen on {host}:{port} ({flag}): {exc.strerror}") from exc


def _health_address(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url)
    if not parsed.hostname or parsed.port is None:
        raise CliError(f"--health needs a URL with a host and a port, got {url!r}")
    return parsed.hostname, parsed.port


def _preflight(kubeconfig: str | None, context: str | None) -> kube.Credentials:
    """Log in and read the basics once; any failure becomes one actionable line."""
    try:
        credentials = kube.load(kubeconfig, context)
    except kube.ClusterError as exc:
        raise CliError(kube.explain(exc)) from exc

    async def check() -> None:
        client = kube.KubeClient(credentials, attempts=3)
        try:
            await client.check_access()
        finally:
            await client.close()

    try:
        asyncio.run(check())
    except kube.ClusterError as exc:
        raise CliError(kube.explain(exc, server=credentials.server, user=credentials.user)) from exc
    return credentials


@click.command()
@templates_dir_option("Extra templates, or overrides of the built-ins (a mounted ConfigMap).")
@cluster_options
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
    "--reports",
    type=click.Choice(["wgpolicyk8s", "openreports", "off"]),
    default="wgpolicyk8s",
    show_default=True,
    help="Compliance report per selected namespace, written while its CRD is installed: a "
    "PolicyReport (wgpolicyk8s.io/v1alpha2) or an OpenReports Report (openreports.io/v1alpha1).",
)
@click.option(
    "--log-format", type=click.Choice(["plain", "full", "json"]), default="full", show_default=True
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def run(
    templates_dir: Path | None,
    kubeconfig: str | None,
    context: str | None,
    standalone: bool,
    peering_name: str,
    priority: int | None,
    peering_lifetime: int,
    liveness: str,
    metrics_port: int,
    workers: int,
    sweep_interval: float,
    reports: str,
    log_format: str,
    verbose: bool,
) -> None:
    """Run the operator against the cluster kubectl would use (or in-cluster credentials)."""
    import kopf

    from nsbaseline import handlers, metrics
    from nsbaseline.reconcile.reconciler import Settings

    if liveness:
        _check_port_free(*_health_address(liveness), "--health")
    credentials = _preflight(kubeconfig, context)
    handlers.RUNTIME.kubeconfig = kubeconfig
    handlers.RUNTIME.context = context
    handlers.RUNTIME.credentials = credentials
    identity = _identity()
    chosen_priority = _peering_priority(priority, standalone)
    handlers.RUNTIME.peering = None if standalone else peering_name
    handlers.RUNTIME.identity = identity
    handlers.RUNTIME.priority = chosen_priority or 0
    handlers.RUNTIME.settings = Settings(
        workers=workers,
        sweep_interval=sweep_interval,
        templates_dir=templates_dir,
        reports=reports,
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
    try:
        metrics.serve(metrics_port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CliError(
                f"port {metrics_port} (--metrics-port) is already in use: pass another "
                "--metrics-port, or 0 to disable metrics"
            ) from exc
        raise CliError(f"cannot serve metrics on port {metrics_port}: {exc.strerror}") from exc
    settings = kopf.OperatorSettings()
    settings.peering.lifetime = peering_lifetime
    operator = kopf.operator(
        settings=settings,
        clusterwide=True,
        standalone=standalone,
        peering_name=None if standalone else peering_name,
        priority=chosen_priority,
        identity=identity,  # type: ignore[arg-type]  # Kopf's Identity is a NewType of str
        liveness_endpoint=liveness or None,
    )
    with (
        asyncio.Runner(loop_factory=_loop_factory()) as runner,
        contextlib.suppress(
            asyncio.CancelledError  # as kopf.run: a stop signal ends the operator this way
        ),
    ):
        runner.run(operator)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency on Linux), else asyncio's.

    The operator is one event loop doing TLS, watch streams and thousands of small tasks; uvloop
    took a measurable share of its CPU per managed object off (bench/README.md).
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


__all__ = ["run"]
