"""Metric names referenced by PromQL expressions, and the names the code really exports."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "rate",
    "increase",
    "irate",
    "histogram_quantile",
    "clamp_min",
    "clamp_max",
    "topk",
    "bottomk",
    "bool",
    "offset",
    "le",
    "label_values",
    "abs",
    "absent",
    "time",
    "vector",
}
# Metrics from outside sentiwire that rules may join with (kube-state-metrics).
EXTERNAL = {"kube_pod_container_resource_requests"}


def referenced_metrics(expr: str) -> set[str]:
    """Identifiers used as metric selectors (not label names, functions or keywords)."""
    cleaned = re.sub(r"\{[^}]*\}", "{}", expr)  # drop label matchers
    cleaned = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", cleaned)
    cleaned = re.sub(r'"[^"]*"', " ", cleaned)
    cleaned = re.sub(r"\[[^\]]*\]", " ", cleaned)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", cleaned))
    return {n for n in names if n not in PROMQL_WORDS and not n.startswith("__") and "_" in n}


def exported_metric_names() -> set[str]:
    """Sample names the daemon and the alert engine register (counters with _total, histograms with _bucket...)."""
    from streamer.alerting.metrics import AlertMetrics
    from streamer.metrics import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    AlertMetrics(registry)
    names: set[str] = set()
    for metric in registry.collect():
        if metric.type == "counter":
            names |= {f"{metric.name}_total", f"{metric.name}_created"}
        elif metric.type == "histogram":
            names |= {f"{metric.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(metric.name)
    return names
