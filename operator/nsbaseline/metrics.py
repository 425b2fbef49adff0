"""Prometheus metrics: what the operator did, how fast, and how much it manages."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter("nsbaseline_reconciles_total", "Namespace reconciles by result.", ["result"])
WRITES = Counter(
    "nsbaseline_writes_total", "Writes sent to the API server by verb and kind.", ["verb", "kind"]
)
DRIFT_REPAIRS = Counter(
    "nsbaseline_drift_repairs_total", "Managed NetworkPolicies restored after drift.", ["piece"]
)
TEMPLATE_ERRORS = Counter(
    "nsbaseline_template_errors_total", "Template render failures by template.", ["template"]
)
MANAGED_OBJECTS = Gauge("nsbaseline_managed_objects", "NetworkPolicies managed by nsbaseline.")
MATCHED = Gauge("nsbaseline_matched_namespaces", "Namespaces selected, by policy.", ["policy"])
COMPLIANT = Gauge(
    "nsbaseline_compliant_namespaces", "Namespaces with their full baseline, by policy.", ["policy"]
)
QUEUE_DEPTH = Gauge("nsbaseline_queue_depth", "Namespaces waiting to be reconciled.")
EVENTS_PENDING = Gauge(
    "nsbaseline_events_pending",
    "Events not yet posted: they wait, for a bounded time, for the work queue to be quiet.",
)
RECONCILE_SECONDS = Histogram(
    "nsbaseline_reconcile_duration_seconds",
    "Time to reconcile one namespace, writes included.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REPAIR_SECONDS = Histogram(
    "nsbaseline_repair_latency_seconds",
    "From noticing drift (the watch event) to the restoring write.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REPORTS_PENDING = Gauge(
    "nsbaseline_reports_pending",
    "Namespaces whose compliance report is yet to be compared or written (0 without its CRD).",
)
REPORTS_STORED = Gauge(
    "nsbaseline_reports_stored", "Compliance reports of ours known to exist in the cluster."
)


def serve(port: int) -> None:
    """Expose ``/metrics`` on ``port`` (0 disables)."""
    if port:
        start_http_server(port)
