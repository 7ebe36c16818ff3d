"""The monitoring files under deploy/ use only series the service really exports.

Every PromQL expression of the Grafana dashboard and of the Prometheus alert rules
is reduced to the metric names it selects, and each must be a series name of
`consumer.adapters.metrics.Metrics` as prometheus_client exposes it (counters with `_total`
and `_created`, histograms with `_bucket`, `_sum`, `_count`, `_created`), or one
of the few series Prometheus and the blackbox exporter add themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Counter, Gauge, Histogram, Summary
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from consumer.adapters.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "followup-consumer.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"

# Not the service's: Prometheus's scrape health and the blackbox probe of /health.
FOREIGN = frozenset({"up", "probe_success"})

_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w$.:])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:]|\s*\()")
_JOB = re.compile(r'\bjob\s*=~?\s*"([^"]*)"')


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels,
    label values, durations and Grafana variables are not)."""
    bare = _STRING.sub('""', expr)
    bare = _MATCHERS.sub(" ", bare)
    bare = _RANGE.sub(" ", bare)
    bare = _GROUPING.sub(" ", bare)
    return {m for m in _IDENTIFIER.findall(bare) if m.lower() not in _KEYWORDS}


def exported_series() -> set[str]:
    """Every series name the service's registry exposes once each metric has a sample."""
    metrics = Metrics()
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        # Labelled metrics expose nothing until a child exists.
        labels = metric._labelnames
        child = metric.labels(*("x" for _ in labels)) if labels else metric
        if isinstance(child, Histogram | Summary):
            child.observe(1)
        elif isinstance(child, Counter | Gauge):
            child.inc()
        else:
            raise AssertionError(f"a metric kind this test does not know: {metric!r}")
    text = metrics.exposition().decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def metric_families() -> set[str]:
    return {f.name for f in Metrics().registry.collect()}


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expression) for every panel target and query variable."""
    found = [
        (panel.get("title", "?"), target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if variable.get("type") == "query" and text:
            inner = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", text)
            found.append((f"variable {variable['name']}", inner.group(1) if inner else text))
    return found


def alert_exprs(text: str) -> dict[str, str]:
    """Alert name -> expression of a Prometheus rule file (plain, `>-` or `|` values);
    no YAML library needed."""
    rules: dict[str, str] = {}
    lines = text.splitlines()
    name: str | None = None
    for i, line in enumerate(lines):
        if m := re.match(r"\s*-\s*alert:\s*(\S+)", line):
            name = m.group(1)
        elif (m := re.match(r"(\s*)expr:\s*(.*?)\s*$", line)) and name is not None:
            indent, value = len(m.group(1)), m.group(2)
            if value in {"", "|", "|-", "|+", ">", ">-", ">+"}:
                block = []
                for following in lines[i + 1 :]:
                    if following.strip() and len(following) - len(following.lstrip()) <= indent:
                        break
                    block.append(following.strip())
                value = " ".join(part for part in block if part)
            elif value[:1] in {"'", '"'}:
                value = value[1:-1]
            rules[name] = value
            name = None
    return rules


def unknown(exprs: list[tuple[str, str]], known: set[str]) -> list[str]:
    return sorted(
        f"{where}: {name}" for where, expr in exprs for name in metric_names(expr) - known
    )


# --- the extraction itself -------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (le) (rate(a_bucket{job="x", le=~"1|2"}[$__rate_interval])) > 3',
            {"a_bucket"},
        ),
        ("histogram_quantile(0.95, sum(rate(b_bucket[1h])) by (le))", {"b_bucket"}),
        ("sum(c) > 0 unless sum(c offset 15m) or vector(0)", {"c"}),
        ("d_total / on(instance) group_left(topic) e * 60 + 1e3", {"d_total", "e"}),
        ('up{job="followup-consumer"} == 0 and bool f:recorded', {"up", "f:recorded"}),
        ('g{instance=~"$instance"}[5m:1m]', {"g"}),
    ],
)
def test_metric_names_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_alert_exprs_reads_plain_and_block_values() -> None:
    text = (
        "groups:\n  - name: g\n    rules:\n"
        "      - alert: A\n        expr: up == 0\n        for: 1m\n"
        "      - alert: B\n        expr: >-\n          sum(x)\n            > 1\n"
        "        labels:\n          severity: warning\n"
        "      - alert: C\n        expr: 'y > 2'\n"
    )
    assert alert_exprs(text) == {"A": "up == 0", "B": "sum(x) > 1", "C": "y > 2"}


def test_exported_series_follow_prometheus_client_naming() -> None:
    exported = exported_series()
    assert {
        "followups_executed_total",
        "followups_executed_created",
        "followup_firing_latency_seconds_bucket",
        "followup_firing_latency_seconds_sum",
        "followup_firing_latency_seconds_count",
        "followup_consumer_lag",
    } <= exported
    assert "followups_executed" not in exported  # a counter's bare name is no series


# --- the dashboard ---------------------------------------------------------------------


def test_dashboard_uses_only_exported_metrics() -> None:
    exprs = dashboard_exprs(_dashboard())
    assert len(exprs) > 20
    assert unknown(exprs, exported_series() | FOREIGN) == []


def test_a_typo_in_the_dashboard_is_caught() -> None:
    broken = json.loads(
        DASHBOARD.read_text().replace("followups_executed_total", "followups_execute_total")
    )
    problems = unknown(dashboard_exprs(broken), exported_series() | FOREIGN)
    assert problems
    assert all(p.endswith(": followups_execute_total") for p in problems)


def test_dashboard_shows_every_metric_of_the_service() -> None:
    used = {n for _, expr in dashboard_exprs(_dashboard()) for n in metric_names(expr)}
    missing = {
        family
        for family in metric_families()
        if not any(n == family or n.startswith(family + "_") for n in used)
    }
    assert missing == set(), f"metrics without a dashboard panel: {sorted(missing)}"


def test_dashboard_has_the_requested_views() -> None:
    exprs = [expr for _, expr in dashboard_exprs(_dashboard())]

    def some(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in exprs)

    assert some(r"by \(topic\) \(rate\(followup_events_consumed_total")
    assert some(r"by \(topic, error_type\) \(\w+\(followup_events_dead_lettered_total")
    for counter in ("scheduled", "cancelled", "executed", "failed", "expired", "refused"):
        assert some(rf"by \(trigger_type\) \(rate\(followups_{counter}_total"), counter
    assert some(r"by \(template\) \(rate\(followups_executed_total")
    assert some(r"histogram_quantile\(0\.95, sum by \(le\) \(rate\(followup_firing_latency_")
    assert some(r"by \(topic, partition\) \(followup_consumer_lag")
    assert some(r"histogram_quantile\(.*followup_ingest_batch_seconds_bucket")


def test_dashboard_is_wired_to_the_provisioned_datasource() -> None:
    dashboard = _dashboard()
    uid = re.search(r"^\s*uid:\s*(\S+)", DATASOURCES.read_text(), re.M)
    assert uid is not None
    panels = list(_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": uid.group(1)}
    assert dashboard["uid"] == "followup-consumer"


# --- the alert rules and the scrape configuration -------------------------------------


def test_alert_rules_use_only_exported_metrics() -> None:
    rules = alert_exprs(ALERTS.read_text())
    assert set(rules) == {
        "FollowupConsumerDown",
        "FollowupConsumerUnhealthy",
        "FollowupHighFailureRate",
        "FollowupExecutionDelay",
        "FollowupConsumerLagHigh",
        "FollowupIngestStalled",
        "FollowupDeadLetters",
    }
    assert ALERTS.read_text().count("- alert:") == len(rules)
    assert unknown(list(rules.items()), exported_series() | FOREIGN) == []


def test_a_typo_in_the_alert_rules_is_caught() -> None:
    rules = alert_exprs(
        ALERTS.read_text().replace("followups_failed_total", "followup_failed_total")
    )
    assert unknown(list(rules.items()), exported_series() | FOREIGN) == [
        "FollowupHighFailureRate: followup_failed_total"
    ]


def test_job_labels_are_scrape_jobs() -> None:
    jobs = set(re.findall(r"job_name:\s*(\S+)", PROMETHEUS.read_text()))
    assert jobs == {"followup-consumer", "followup-consumer-health"}
    assert re.search(r'targets:\s*\["consumer:8080"\]', PROMETHEUS.read_text())
    exprs = [e for _, e in dashboard_exprs(_dashboard())] + list(
        alert_exprs(ALERTS.read_text()).values()
    )
    used = {job for e in exprs for job in _JOB.findall(e)}
    assert used
    assert used <= jobs
