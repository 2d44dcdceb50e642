"""A real Prometheus scrapes the embedded default while jobs run; every expression the dashboards
and rules use evaluates, and the overview's key series have data (docs/operations.md).

Set `ATELIER_RENDER_OVERVIEW=1` to also draw the overview's panels from this Prometheus into
docs/screenshots/overview-dashboard.png (needs matplotlib: `uv run --with matplotlib pytest ...`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import httpx
import pytest

from atelier_devstack.processes import Supervisor
from atelier_devstack.prometheus import PrometheusInfo, prometheus_binary, start_prometheus
from tests.e2e.jobs import wait_final

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "monitoring" / "rules" / "atelier.rules.yml"
# The overview panels that must show data after a few jobs (title → what it says).
KEY_PANELS = (
    "Jobs/min by outcome",
    "Images/min by provider",
    "Submit latency (POST /v1/generations)",
    "Landed latency (submit to final state)",
    "Queue depth and consumer lag per stream",
    "Provider calls in flight",
    "Provider failures/min by class",
    "Cost per provider (credits/hour)",
    "SLO burn rate (1 h; 1 = budget spent exactly over 30 days)",
    "Services ready",
)


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prometheus(
    running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusInfo]:
    if prometheus_binary() is None:
        pytest.skip("prometheus is not installed: apt-get install prometheus (README, .ci/run)")
    stack = running_stack.stack
    services = {name: stack.ports[name] for name in stack.instances}
    with Supervisor(log_dir=tmp_path_factory.mktemp("prometheus-logs")) as sup:
        info = start_prometheus(sup, tmp_path_factory.mktemp("prometheus"), services, [RULES])
        yield info


def run_jobs(stack: RunningStack, prompts: list[str]) -> None:
    with stack.user() as user:
        ids = []
        for prompt in prompts:
            answer = user.post(
                "/v1/generations",
                json={
                    "project": "demo-project",
                    "profile_id": stack.info.profile_id,
                    "prompt": prompt,
                    "count": 1,
                },
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
        for job_id in ids:
            wait_final(user, job_id, timeout_s=60)


def wait_scraped(prometheus: PrometheusInfo, expected_targets: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        result = prometheus.query("sum(up)")["data"]["result"]
        if result and float(result[0]["value"][1]) >= expected_targets:
            return
        time.sleep(0.5)
    raise AssertionError(f"Prometheus did not scrape {expected_targets} targets in 20 s")


def test_every_dashboard_and_rule_expression_evaluates_on_the_embedded_default(
    running_stack: RunningStack, prometheus: PrometheusInfo
) -> None:
    monitoring = load_script("gen_monitoring")
    wait_scraped(prometheus, len(running_stack.stack.instances))
    # Two rounds of jobs a few scrapes apart, so counters grow between samples: rates are real.
    run_jobs(running_stack, ["Watched lighthouse", "[fail:auth] watched"])
    time.sleep(1.5)
    run_jobs(running_stack, ["Watched harbour", "Watched tower", "Watched bridge"])
    time.sleep(2)  # a few scrapes and rule evaluations after the last job

    expressions = sorted(set(monitoring.expressions()))
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = dict(zip(expressions, pool.map(prometheus.query, expressions), strict=True))
    errors = {e: a.get("error") for e, a in answers.items() if a["status"] != "success"}
    assert not errors, errors

    overview = {p.title: p for p in monitoring.OVERVIEW}
    empty = [
        title
        for title in KEY_PANELS
        if not any(answers[expr]["data"]["result"] for expr, _ in overview[title].targets)
    ]
    assert not empty, f"overview panels without data: {empty}"

    # What the jobs did, as Prometheus saw it.
    finished = prometheus.query("sum by (outcome) (atelier_jobs_finished_total)")["data"]["result"]
    outcomes = {r["metric"]["outcome"]: float(r["value"][1]) for r in finished}
    assert outcomes.get("completed", 0) >= 3 and outcomes.get("failed", 0) >= 1, outcomes
    up = prometheus.query("min(atelier_ready)")["data"]["result"]
    assert float(up[0]["value"][1]) == 1.0  # every service ready, as /readyz says

    if os.environ.get("ATELIER_RENDER_OVERVIEW"):
        render = load_script("render_overview")
        target = REPO / "docs" / "screenshots" / "overview-dashboard.png"
        render.render(prometheus.url, target, minutes=2)
        assert target.stat().st_size > 10_000


def test_alerts_are_loaded_and_none_fires_on_a_healthy_stack(
    prometheus: PrometheusInfo,
) -> None:
    rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    names = {r["name"] for group in rules for r in group["rules"] if r["type"] == "alerting"}
    assert {"AtelierDeadLetters", "AtelierServiceDown", "AtelierSLOSubmitBudgetBurnFast"} <= names
    unhealthy = [
        (r["name"], r.get("lastError"))
        for group in rules
        for r in group["rules"]
        if r.get("health") == "err"
    ]
    assert not unhealthy, unhealthy
    firing = httpx.get(f"{prometheus.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    assert [a for a in firing if a["state"] == "firing"] == []
