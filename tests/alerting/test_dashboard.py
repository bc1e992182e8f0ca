"""The Grafana dashboard loads as it is: structure, datasource variable, real metric names, valid PromQL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.alerting.promql import exported_metric_names, referenced_metrics
from tests.fixtures.prometheus import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "sentiwire-dashboard.json"
PANEL_TYPES = {"timeseries", "table", "stat", "bargauge", "row", "gauge", "text"}
REQUIRED_TITLES = {
    "Messages in / out",
    "Consumer lag",
    "Batch size",
    "Latency percentiles",
    "Dead-letter rate",
    "Sentiment mix",
    "Negative share per topic",
    "Active spikes",
    "Most negative entities",
    "Open incidents",
    "Alert labels dropped",
    "Alert engine event-time lag",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def exprs(d: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(d) for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    """What Grafana sends: variables replaced by concrete values."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$__interval", "15s")
        .replace("$namespace", ".*")
    )


def test_top_level_schema(dashboard: dict[str, Any]) -> None:
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"]
    assert len(dashboard["uid"]) <= 40
    assert dashboard["title"]
    assert dashboard["id"] is None  # importable into any Grafana
    assert {"from", "to"} <= dashboard["time"].keys()
    assert isinstance(dashboard["templating"]["list"], list)


def test_datasource_is_a_variable_everywhere(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    text = DASHBOARD.read_text()
    assert "${DS_" not in text  # no import-time placeholders
    for p in panels(dashboard):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    assert variables["namespace"]["datasource"]["uid"] == "${datasource}"
    # Every variable a query uses is defined (or built in).
    used = {m for e in exprs(dashboard) for m in re.findall(r"\$(\w+)", e)}
    assert used <= set(variables) | {"__rate_interval", "__range", "__interval"}


def test_panels_ids_layout_and_required_content(dashboard: dict[str, Any]) -> None:
    ps = list(panels(dashboard))
    ids = [p["id"] for p in ps]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in ps}
    assert titles >= REQUIRED_TITLES
    cells: set[tuple[int, int]] = set()
    for p in ps:
        assert p["type"] in PANEL_TYPES, p["type"]
        g = p["gridPos"]
        assert g["x"] >= 0
        assert g["w"] > 0
        assert g["h"] > 0
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))
        if p["type"] != "row":
            assert p["targets"], p["title"]
            ref_ids = [t["refId"] for t in p["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), p["title"]


def test_queries_use_metrics_the_code_exports(dashboard: dict[str, Any]) -> None:
    exported = exported_metric_names()
    for e in exprs(dashboard):
        used = referenced_metrics(e)
        assert used, e
        assert used <= exported, f"{sorted(used - exported)} in {e}"


@pytest.mark.prometheus
def test_every_query_is_valid_promql(dashboard: dict[str, Any], prometheus_server: PrometheusServer) -> None:
    """A real Prometheus parses and evaluates each query (errors come back as HTTP 400)."""
    for e in exprs(dashboard):
        prometheus_server.query(substitute(e))
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+), (\w+)\)", v["query"]["query"])
            assert m, v["query"]
            prometheus_server.api("series", **{"match[]": m.group(1)})


@pytest.mark.prometheus
def test_invalid_promql_is_rejected(prometheus_server: PrometheusServer) -> None:
    """The check above can fail."""
    with pytest.raises(AssertionError, match="parse error"):
        prometheus_server.query("sum by (le (rate(x[1m]))")
