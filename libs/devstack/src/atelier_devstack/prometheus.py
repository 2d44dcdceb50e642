"""A real Prometheus that scrapes a running stack and evaluates Atelier's rules.

Used by the monitoring end-to-end test and `scripts/render_overview.py`. The binary is Debian's
`prometheus` package (`.ci/run` installs it; README): always started here on a free loopback port
with its own data directory, never the system's service on 9090.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from atelier_devstack.ports import free_port
from atelier_devstack.processes import DevstackError, ManagedProcess, Supervisor, wait_http_ok

LOOPBACK = "127.0.0.1"
# `worker-openai-2` is the second process of the job `worker-openai`, as in compose and Kubernetes.
_REPLICA = re.compile(r"-\d+$")


def scrape_jobs(ports: Mapping[str, int]) -> dict[str, list[str]]:
    """Scrape targets by job: one job per service, named like it (replicas share their job)."""
    jobs: dict[str, list[str]] = {}
    for name, port in sorted(ports.items()):
        jobs.setdefault(_REPLICA.sub("", name), []).append(f"{LOOPBACK}:{port}")
    return jobs


def write_config(
    path: Path, jobs: Mapping[str, list[str]], rule_files: list[Path], interval_s: float
) -> None:
    every = f"{round(interval_s * 1000)}ms"  # Prometheus takes whole units only
    config: dict[str, Any] = {
        "global": {"scrape_interval": every, "evaluation_interval": every},
        "rule_files": [str(p.resolve()) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in jobs.items()
        ],
    }
    # JSON is YAML: no YAML library needed here.
    path.write_text(json.dumps(config, indent=2))


@dataclass
class PrometheusInfo:
    url: str
    process: ManagedProcess

    def query(self, expr: str) -> dict[str, Any]:
        """`/api/v1/query` now: the answer's JSON (`status` is `success` or `error`)."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body: dict[str, Any] = answer.json()
        return body


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def start_prometheus(
    sup: Supervisor,
    data_dir: Path,
    targets: Mapping[str, int],
    rule_files: list[Path],
    *,
    interval_s: float = 1.0,
    name: str = "prometheus",
    timeout: float = 20.0,
) -> PrometheusInfo:
    """Start Prometheus under `sup` scraping `targets` (process name → port) every `interval_s`
    and evaluating `rule_files` as often; return once it is ready."""
    binary = prometheus_binary()
    if binary is None:
        raise DevstackError("prometheus is not installed: apt-get install prometheus (README)")
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "prometheus.yml"
    write_config(config, scrape_jobs(targets), rule_files, interval_s)
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    process = sup.start(
        name,
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data_dir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--storage.tsdb.retention.time=1d",
        ],
        ready=lambda p: wait_http_ok(f"{url}/-/ready", timeout, process=p),
    )
    return PrometheusInfo(url, process)
