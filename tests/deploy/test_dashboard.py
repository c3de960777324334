"""deploy/grafana/switchboard-dashboard.json: valid Grafana dashboard JSON whose queries use only
metrics (and labels) the binary exports. The wiring check (test_wiring.py) also confirms that
the running nodes expose every metric queried here."""

from __future__ import annotations

import json
import re

import pytest

from chartlib import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "switchboard-dashboard.json"

# The metrics of the internal port: name -> (type, labels).
KNOWN = {
    "switchboard_connections": ("gauge", {"transport", "protocol"}),
    "switchboard_connects_total": ("counter", {"transport"}),
    "switchboard_disconnects_total": ("counter", {"reason"}),
    "switchboard_connect_failures_total": ("counter", {"reason"}),
    "switchboard_messages_in_total": ("counter", set()),
    "switchboard_messages_out_total": ("counter", {"route"}),
    "switchboard_bytes_in_total": ("counter", set()),
    "switchboard_bytes_out_total": ("counter", set()),
    "switchboard_queued_bytes": ("gauge", set()),
    "switchboard_slow_consumer_closes_total": ("counter", set()),
    "switchboard_rest_requests_total": ("counter", {"route", "status"}),
    "switchboard_rest_request_duration_seconds": ("histogram", {"route"}),
    "switchboard_upstream_calls_total": ("counter", {"status"}),
    "switchboard_upstream_call_duration_seconds": ("histogram", set()),
    "switchboard_fanout_batches_total": ("counter", set()),
    "switchboard_fanout_batch_duration_seconds": ("histogram", set()),
    "switchboard_raft_term": ("gauge", set()),
    "switchboard_raft_leader": ("gauge", set()),
    "switchboard_raft_commit_index": ("gauge", set()),
    "switchboard_raft_applied_index": ("gauge", set()),
    "switchboard_raft_proposal_duration_seconds": ("histogram", set()),
    "switchboard_ready": ("gauge", set()),
    "process_resident_memory_bytes": ("gauge", set()),
    "process_cpu_seconds_total": ("counter", set()),
    "process_open_fds": ("gauge", set()),
}
# Labels Prometheus adds when scraping through the ServiceMonitor.
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "container", "endpoint"}
METRIC_RE = re.compile(r"\b((?:switchboard|process)_[a-z_]+)\b")


def family(series: str) -> str:
    """The metric family of a series name (histograms: _bucket, _sum, _count)."""
    if series in KNOWN:
        return series
    for suffix in ("_bucket", "_sum", "_count"):
        base = series.removesuffix(suffix)
        if base != series and KNOWN.get(base, ("",))[0] == "histogram":
            return base
    raise KeyError(series)


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def expressions(dashboard: dict | None = None) -> list[tuple[str, str]]:
    dashboard = dashboard or load()
    return [(p["title"], t["expr"]) for p in panels(dashboard) for t in p.get("targets", [])]


def dashboard_metrics() -> set[str]:
    """Series names the dashboard queries (for the wiring check's /metrics comparison, as
    metric families: a histogram's _bucket is its family)."""
    return {family(m) for _, expr in expressions() for m in METRIC_RE.findall(expr)}


def test_is_a_grafana_dashboard():
    d = load()
    for key in ("title", "uid", "schemaVersion", "panels", "templating", "time"):
        assert key in d, key
    assert d["uid"] == "switchboard" and isinstance(d["schemaVersion"], int)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in panels(d):
        pos = p["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]
    # No two panels overlap.
    cells = set()
    for p in panels(d):
        pos = p["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


@pytest.mark.parametrize("title,expr", expressions())
def test_every_query_uses_known_metrics_and_labels(title, expr):
    names = METRIC_RE.findall(expr)
    assert names, f"{title}: no metric in {expr}"
    for name in names:
        try:
            base = family(name)
        except KeyError:
            pytest.fail(f"{title}: unknown metric {name}")
        kind, labels = KNOWN[base]
        if kind == "histogram":
            assert name != base, f"{title}: a histogram is queried as _bucket, _sum or _count"
        if name.endswith("_bucket"):
            labels = labels | {"le"}
        # Label matchers of this selector.
        selector = re.search(re.escape(name) + r"\{([^}]*)\}", expr)
        if selector:
            for label in re.findall(r"([a-zA-Z_]+)\s*(?:=~|!~|!=|=)", selector.group(1)):
                assert label in labels | TARGET_LABELS, f"{title}: {name} has no label {label}"
    # rate()/increase() only over counters and histogram series.
    for inner in re.findall(r"(?:rate|increase)\((" + METRIC_RE.pattern + r")", expr):
        base = family(inner[0])
        assert KNOWN[base][0] in ("counter", "histogram"), f"{title}: rate() of a {KNOWN[base][0]} ({inner[0]})"
    # histogram_quantile needs the buckets grouped by le.
    if "histogram_quantile" in expr:
        assert re.search(r"by \([^)]*\ble\b", expr) and "_bucket" in expr, f"{title}: {expr}"
    # Aggregation labels exist on the metrics aggregated.
    all_labels = set().union(*(KNOWN[family(n)][1] for n in names)) | TARGET_LABELS | {"le"}
    for group in re.findall(r"\bby \(([^)]*)\)", expr):
        for label in [g.strip() for g in group.split(",") if g.strip()]:
            assert label in all_labels, f"{title}: grouping by unknown label {label}"
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), f"{title}: unbalanced {expr}"
    # Every selector honours the dashboard's namespace and pod variables.
    for name, selector in re.findall(METRIC_RE.pattern + r"(\{[^}]*\})?", expr):
        assert 'pod=~"$pod"' in selector and 'namespace=~"$namespace"' in selector, f"{title}: {name} {expr}"


def test_the_dashboard_covers_the_main_signals():
    used = dashboard_metrics()
    for name in ("switchboard_connections", "switchboard_messages_out_total", "switchboard_rest_request_duration_seconds",
                 "switchboard_raft_leader", "switchboard_raft_applied_index", "switchboard_ready",
                 "process_resident_memory_bytes", "switchboard_fanout_batch_duration_seconds",
                 "switchboard_slow_consumer_closes_total"):
        assert name in used, name
    assert used == set(KNOWN), f"metrics with no panel: {sorted(set(KNOWN) - used)}"
