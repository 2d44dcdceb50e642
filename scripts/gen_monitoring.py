"""Monitoring as code: the objectives, recording and alerting rules and Grafana dashboards.

    uv run python scripts/gen_monitoring.py          # write deploy/monitoring/ and the component
    uv run python scripts/gen_monitoring.py --check  # exit 1 when a written file is stale

One definition here, written to what each place reads (docs/adr/0023-monitoring-as-code.md):
- `deploy/monitoring/rules/atelier.rules.yml`: Prometheus rule file (compose, `promtool`);
- `deploy/components/monitoring/prometheusrule.yaml`: the same groups as a PrometheusRule;
- `deploy/monitoring/grafana/dashboards/*.json`: provisioned dashboards, an overview and one per
  service.
The objectives, alerts and runbooks are described in docs/operations.md ("Objectives", "Alerts");
`tests/deploy/test_monitoring.py` checks the files are fresh, every alert names a runbook section
that exists, and `promtool` accepts and unit-tests the rules.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RULES_FILE = REPO / "deploy" / "monitoring" / "rules" / "atelier.rules.yml"
PROMETHEUS_RULE = REPO / "deploy" / "components" / "monitoring" / "prometheusrule.yaml"
DASHBOARDS = REPO / "deploy" / "monitoring" / "grafana" / "dashboards"
RUNBOOKS = "docs/operations.md"
DATASOURCE = {"type": "prometheus", "uid": "atelier-prometheus"}

# Every scrape job is named after its service (compose, the PodMonitor's jobLabel, the e2e test).
SERVICES = ("gateway", "profiles", "context", "dispatch", "media")
ATELIER_JOBS = 'job=~"gateway|profiles|context|dispatch|media|worker-.+"'
SUBMIT_ROUTE = 'method="POST",route="/v1/generations"'
# Atelier's own steps of a job (dispatch and media observe them in atelier_job_stage_seconds).
OWN_STEPS = 'stage=~"submitted_to_dispatched|completed_to_landed"'
# Failure classes that say something about the provider (not the writer's prompt or a cancel).
PROVIDER_CLASSES = 'error_class!~"content_blocked|invalid_request|cancelled"'


# --- objectives ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    name: str  # used in record names: atelier:slo_<name>:error_ratio_rate<window>
    title: str
    target: float  # share of good events over 30 days
    bad_rate: str  # PromQL of bad events per second over [{w}]
    all_rate: str  # PromQL of all events per second over [{w}]

    @property
    def budget(self) -> float:
        return round(1 - self.target, 6)

    def record(self, window: str) -> str:
        return f"atelier:slo_{self.name}:error_ratio_rate{window}"


OBJECTIVES = (
    Objective(
        "submit",
        "Submissions answered within 100 ms",
        0.99,
        # Slow or 5xx: everything not in the 0.1 s bucket with a status below 500.
        f"sum(rate(atelier_http_request_duration_seconds_count{{{SUBMIT_ROUTE}}}[{{w}}]))"
        f" - sum(rate(atelier_http_request_duration_seconds_bucket"
        f'{{{SUBMIT_ROUTE},status!~"5..",le="0.1"}}[{{w}}]))',
        f"sum(rate(atelier_http_request_duration_seconds_count{{{SUBMIT_ROUTE}}}[{{w}}]))",
    ),
    Objective(
        "landing",
        "Jobs land within their provider's time plus 5 s",
        0.99,
        f"sum(rate(atelier_job_stage_seconds_count{{{OWN_STEPS}}}[{{w}}]))"
        f' - sum(rate(atelier_job_stage_seconds_bucket{{{OWN_STEPS},le="2.5"}}[{{w}}]))',
        f"sum(rate(atelier_job_stage_seconds_count{{{OWN_STEPS}}}[{{w}}]))",
    ),
    Objective(
        "own_failures",
        "Jobs that do not fail for Atelier's own reasons",
        0.999,
        'sum(rate(atelier_jobs_finished_total{error_class="internal"}[{w}]))',
        "sum(rate(atelier_jobs_finished_total[{w}]))",
    ),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# The multi-window, multi-burn-rate pairs (Google SRE workbook, ch. 5): a long window that shows
# the budget really burns and a short one that shows it still does.
BURNS = (
    ("page", "1h", "5m", 14.4),  # 2 % of 30 days' budget in one hour
    ("page", "6h", "30m", 6.0),  # 5 % in six hours
    ("ticket", "1d", "2h", 3.0),  # 10 % in a day
    ("ticket", "3d", "6h", 1.0),  # 10 % in three days
)


def recording_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for objective in OBJECTIVES:
        for window in WINDOWS:
            bad = objective.bad_rate.replace("{w}", window)
            total = objective.all_rate.replace("{w}", window)
            rules.append(
                {
                    "record": objective.record(window),
                    # clamp_min: rates of buckets and counts scraped a moment apart can differ
                    # by a hair; a ratio below zero means none were bad.
                    # `or vector(0)`: no bad series yet (no internal failure ever) is zero bad.
                    "expr": f"clamp_min(({bad} or vector(0)) / ({total}), 0)",
                    "labels": {"slo": objective.name},
                }
            )
    return rules


def slug(title: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def runbook(alert: str) -> str:
    return f"{RUNBOOKS}#{slug(alert)}"


def alert(
    name: str, expr: str, summary: str, severity: str, for_: str | None = None
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "runbook_url": runbook(name)}
    return rule


def burn_rate_alerts() -> list[dict[str, Any]]:
    alerts = []
    for objective in OBJECTIVES:
        camel = "".join(part.capitalize() for part in objective.name.split("_"))
        for severity in ("page", "ticket"):
            pairs = [b for b in BURNS if b[0] == severity]
            expr = "\nor\n".join(
                f"({objective.record(long)} > ({factor} * {objective.budget})"
                f" and {objective.record(short)} > ({factor} * {objective.budget}))"
                for _, long, short, factor in pairs
            )
            speed = "fast" if severity == "page" else "slowly"
            alerts.append(
                alert(
                    f"AtelierSLO{camel}BudgetBurn{'Fast' if severity == 'page' else 'Slow'}",
                    expr,
                    f"{objective.title} ({objective.target:.1%}): the error budget burns {speed}",
                    severity,
                    "2m" if severity == "page" else "15m",
                )
            )
    return alerts


def operational_alerts() -> list[dict[str, Any]]:
    return [
        alert(
            "AtelierQueueDepthGrowing",
            "max by (stream, consumer) (atelier_queue_depth) > 20"
            "\nand\nmax by (stream, consumer) (delta(atelier_queue_depth[10m])) > 0",
            "{{ $labels.consumer }} on {{ $labels.stream }} has {{ $value }} messages waiting "
            "and the backlog keeps growing",
            "ticket",
            "10m",
        ),
        alert(
            "AtelierDeadLetters",
            "sum by (stream, consumer) (increase(atelier_dead_letters_total[15m])) > 0",
            "Messages of {{ $labels.consumer }} on {{ $labels.stream }} ran out of deliveries",
            "ticket",
        ),
        alert(
            "AtelierProviderFailureRatioHigh",
            "sum by (provider) "
            f"(rate(atelier_generation_failures_total{{{PROVIDER_CLASSES}}}[15m]))"
            "\n/\n(sum by (provider) (rate(atelier_generation_failures_total[15m]))"
            # A provider that never succeeded has no success series: count it as zero.
            "\n + (sum by (provider) (rate(atelier_generation_succeeded_total[15m]))"
            "\n    or 0 * sum by (provider) (rate(atelier_generation_failures_total[15m]))))"
            "\n> 0.25",
            "{{ $labels.provider }}: {{ $value | humanizePercentage }} of provider calls fail",
            "ticket",
            "10m",
        ),
        alert(
            "AtelierStreamNearLimit",
            "max by (stream) (atelier_stream_bytes / atelier_stream_limit_bytes) > 0.8"
            "\nor\nmax by (stream) (atelier_stream_messages / atelier_stream_limit_messages) > 0.8",
            "Stream or bucket {{ $labels.stream }} is {{ $value | humanizePercentage }} full",
            "ticket",
            "5m",
        ),
        alert(
            "AtelierServiceNotReady",
            f"max by (job, instance) (atelier_ready{{{ATELIER_JOBS}}}) == 0",
            "{{ $labels.job }} ({{ $labels.instance }}) answers but its dependencies do not",
            "page",
            "3m",
        ),
        alert(
            "AtelierServiceDown",
            f"up{{{ATELIER_JOBS}}} == 0",
            "{{ $labels.job }} ({{ $labels.instance }}) cannot be scraped",
            "page",
            "3m",
        ),
    ]


def rule_groups() -> dict[str, Any]:
    return {
        "groups": [
            {"name": "atelier-slo-recording", "rules": recording_rules()},
            {"name": "atelier-slo-burn", "rules": burn_rate_alerts()},
            {"name": "atelier-operations", "rules": operational_alerts()},
        ]
    }


def prometheus_rule() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "atelier", "labels": {"app.kubernetes.io/name": "atelier-rules"}},
        "spec": rule_groups(),
    }


# --- dashboards ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[tuple[str, str], ...]  # (expr, legend)
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""


def quantiles(metric: str, selector: str, by: str = "") -> tuple[tuple[str, str], ...]:
    group = f"le{', ' + by if by else ''}"
    suffix = f" {{{{{by}}}}}" if by else ""
    return tuple(
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[5m])))",
            f"p{int(q * 100)}{suffix}",
        )
        for q in (0.5, 0.95, 0.99)
    )


def burn_panel() -> Panel:
    return Panel(
        "SLO burn rate (1 h; 1 = budget spent exactly over 30 days)",
        tuple((f"{o.record('1h')} / {o.budget}", o.name) for o in OBJECTIVES),
        description="Error ratio over the last hour divided by the objective's error budget. "
        "Above 14.4 for an hour pages (docs/operations.md, Objectives).",
    )


OVERVIEW = (
    Panel(
        "Jobs/min by outcome",
        (("sum by (outcome) (rate(atelier_jobs_finished_total[5m])) * 60", "{{outcome}}"),),
    ),
    Panel(
        "Images/min by provider",
        (("sum by (provider) (rate(atelier_images_landed_total[5m])) * 60", "{{provider}}"),),
    ),
    Panel(
        "Submit latency (POST /v1/generations)",
        quantiles("atelier_http_request_duration_seconds", SUBMIT_ROUTE),
        unit="s",
    ),
    Panel(
        "Landed latency (submit to final state)",
        quantiles("atelier_job_stage_seconds", 'stage="submitted_to_final"'),
        unit="s",
    ),
    Panel(
        "Atelier's own steps of a job (p95)",
        (
            (
                "histogram_quantile(0.95, sum by (le, stage) "
                f"(rate(atelier_job_stage_seconds_bucket{{{OWN_STEPS}}}[5m])))",
                "{{stage}}",
            ),
        ),
        unit="s",
    ),
    Panel(
        "Queue depth and consumer lag per stream",
        (("max by (stream, consumer) (atelier_queue_depth)", "{{stream}} / {{consumer}}"),),
    ),
    Panel(
        "Provider calls in flight",
        (("sum by (provider) (atelier_provider_calls_in_flight)", "{{provider}}"),),
    ),
    Panel(
        "Provider failures/min by class",
        (
            (
                "sum by (provider, error_class) (rate(atelier_generation_failures_total[5m])) * 60",
                "{{provider}} {{error_class}}",
            ),
        ),
    ),
    Panel(
        "Cost per provider (credits/hour)",
        (
            (
                "sum by (provider) (rate(atelier_generation_cost_credits_total[5m])) * 3600",
                "{{provider}}",
            ),
        ),
    ),
    burn_panel(),
    Panel(
        "Services ready",
        ((f"min by (job) (atelier_ready{{{ATELIER_JOBS}}})", "{{job}}"),),
        unit="bool",
    ),
    Panel(
        "Stream and bucket use (share of limit)",
        (
            ("max by (stream) (atelier_stream_bytes / atelier_stream_limit_bytes)", "{{stream}}"),
            (
                "max by (stream) (atelier_stream_messages / atelier_stream_limit_messages)",
                "{{stream}} (messages)",
            ),
        ),
        unit="percentunit",
    ),
)


def common_panels(job: str) -> tuple[Panel, ...]:
    sel = f'job=~"{job}"'
    return (
        Panel(
            "Ready (1) / scraped (up)",
            (
                (f"min by (instance) (atelier_ready{{{sel}}})", "ready {{instance}}"),
                (f"min by (instance) (up{{{sel}}})", "up {{instance}}"),
            ),
            unit="bool",
        ),
        Panel(
            "HTTP requests/s by route and status",
            (
                (
                    "sum by (route, status) "
                    f'(rate(atelier_http_request_duration_seconds_count{{{sel},route!="/metrics"}}[5m]))',
                    "{{route}} {{status}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "HTTP p95 by route",
            (
                (
                    "histogram_quantile(0.95, sum by (le, route) "
                    f"(rate(atelier_http_request_duration_seconds_bucket{{{sel}}}[5m])))",
                    "{{route}}",
                ),
            ),
            unit="s",
        ),
        Panel(
            "Messages handled/s by subject and outcome",
            (
                (
                    "sum by (subject, outcome) "
                    f"(rate(atelier_messages_handled_total{{{sel}}}[5m]))",
                    "{{subject}} {{outcome}}",
                ),
            ),
        ),
        Panel(
            "Handler p95 by subject",
            (
                (
                    "histogram_quantile(0.95, sum by (le, subject) "
                    f"(rate(atelier_message_handler_seconds_bucket{{{sel}}}[5m])))",
                    "{{subject}}",
                ),
            ),
            unit="s",
        ),
        Panel(
            "Messages published/s by subject",
            (
                (
                    f"sum by (subject, kind) (rate(atelier_messages_published_total{{{sel}}}[5m]))",
                    "{{subject}} ({{kind}})",
                ),
            ),
        ),
        Panel(
            "CPU (cores) and resident memory",
            (
                (f"sum by (instance) (rate(process_cpu_seconds_total{{{sel}}}[5m]))", "cpu"),
                (f"sum by (instance) (process_resident_memory_bytes{{{sel}}}) / 1e9", "GB"),
            ),
        ),
    )


def s3_panel(job: str) -> Panel:
    return Panel(
        "Object storage requests/s by kind",
        ((f'sum by (kind) (rate(atelier_s3_requests_total{{job=~"{job}"}}[5m]))', "{{kind}}"),),
    )


def db_panel(job: str) -> Panel:
    return Panel(
        "Database write transactions/s",
        ((f'sum(rate(atelier_db_write_transactions_total{{job=~"{job}"}}[5m]))', "writes"),),
    )


SERVICE_PANELS: dict[str, tuple[Panel, ...]] = {
    "gateway": (
        Panel(
            "Submit latency (POST /v1/generations)",
            quantiles("atelier_http_request_duration_seconds", SUBMIT_ROUTE),
            unit="s",
        ),
        Panel(
            "Status subscriptions open (SSE streams)",
            (('sum(atelier_status_subscriptions_open{job="gateway"})', "open"),),
        ),
        s3_panel("gateway"),
    ),
    "profiles": (db_panel("profiles"),),
    "context": (s3_panel("context"),),
    "dispatch": (
        OVERVIEW[0],
        Panel(
            "Job stage latency p95",
            (
                (
                    "histogram_quantile(0.95, sum by (le, stage) "
                    "(rate(atelier_job_stage_seconds_bucket[5m])))",
                    "{{stage}}",
                ),
            ),
            unit="s",
        ),
        OVERVIEW[5],
        Panel(
            "Dead letters (15 min)",
            (
                (
                    "sum by (stream, consumer) (increase(atelier_dead_letters_total[15m]))",
                    "{{stream}} / {{consumer}}",
                ),
            ),
        ),
        OVERVIEW[11],
        db_panel("dispatch"),
    ),
    "media": (
        Panel(
            "Provider answer to landed (p50/p95/p99)",
            quantiles("atelier_job_stage_seconds", 'stage="completed_to_landed"'),
            unit="s",
        ),
        s3_panel("media"),
        db_panel("media"),
    ),
    "workers": (
        OVERVIEW[6],
        OVERVIEW[7],
        Panel(
            "Provider calls completed/min",
            (
                (
                    "sum by (provider) (rate(atelier_generation_succeeded_total[5m])) * 60",
                    "{{provider}}",
                ),
            ),
        ),
        s3_panel("worker-.+"),
    ),
}


def dashboard(uid: str, title: str, panels: tuple[Panel, ...]) -> dict[str, Any]:
    rendered = []
    for index, panel in enumerate(panels):
        rendered.append(
            {
                "id": index + 1,
                "type": panel.kind,
                "title": panel.title,
                "description": panel.description,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(panel.targets)
                ],
            }
        )
    return {
        "uid": uid,
        "title": title,
        "tags": ["atelier"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [
            {"type": "dashboards", "tags": ["atelier"], "title": "Atelier", "asDropdown": True}
        ],
        "panels": rendered,
    }


def dashboards() -> dict[str, dict[str, Any]]:
    boards = {"overview": dashboard("atelier-overview", "Atelier overview", OVERVIEW)}
    for name, extra in SERVICE_PANELS.items():
        job = "worker-.+" if name == "workers" else name
        boards[name] = dashboard(
            f"atelier-{name}", f"Atelier {name}", (*common_panels(job), *extra)
        )
    return boards


def expressions() -> list[str]:
    """Every PromQL expression the rules and dashboards evaluate (the e2e test runs them all)."""
    found = [r["expr"] for group in rule_groups()["groups"] for r in group["rules"]]
    for board in dashboards().values():
        found += [t["expr"] for p in board["panels"] for t in p["targets"]]
    return found


# --- files ---------------------------------------------------------------------------------------

HEADER = "# Generated by scripts/gen_monitoring.py: edit that script, then run it.\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line expressions as literal blocks, as a person would write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def rendered_files() -> dict[Path, str]:
    def dump(data: Any) -> str:
        return HEADER + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100)

    files = {RULES_FILE: dump(rule_groups()), PROMETHEUS_RULE: dump(prometheus_rule())}
    for name, board in dashboards().items():
        files[DASHBOARDS / f"{name}.json"] = json.dumps(board, indent=2) + "\n"
    return files


def main(argv: list[str]) -> int:
    stale = []
    for path, content in rendered_files().items():
        if "--check" in argv:
            if not path.is_file() or path.read_text() != content:
                stale.append(str(path.relative_to(REPO)))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    if stale:
        print("stale (run scripts/gen_monitoring.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
