"""Crash any one process at any moment: no job is lost, none lands twice.

Small in CI (`ATELIER_CHAOS_JOBS`, default 30); `make chaos` runs 200 jobs. The figures are
printed at the end (run with `-s` to see them).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from atelier_devstack.stack import RunInfo, Stack, StackConfig

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

FINAL = {"completed", "partial", "failed", "cancelled"}
JOBS = int(os.environ.get("ATELIER_CHAOS_JOBS", "30"))
SERVICES = ["context", "dispatch", "media", "worker-offline", "profiles", "gateway"]


class Submitter:
    """Submits jobs like a writer whose app retries: same Idempotency-Key until it gets a 2xx."""

    def __init__(self, info: RunInfo) -> None:
        self.info = info
        self.jobs: dict[str, int] = {}  # job id → count
        self.retries = 0

    def submit(self, n: int) -> None:
        body = {
            "project": "demo-project",
            "profile_id": self.info.profile_id,
            "prompt": f"chaos job {n}",
            "count": [1, 2, 4][n % 3],
            "options": {"delay_s": 1.0, "seed": n},
        }
        headers = {
            "Authorization": f"Bearer {self.info.user_token}",
            "Idempotency-Key": f"chaos-{n}",
        }
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                response = httpx.post(
                    f"{self.info.gateway_url}/v1/generations",
                    json=body,
                    headers=headers,
                    timeout=15,
                )
                if response.status_code in (200, 202):
                    self.jobs[response.json()["id"]] = body["count"]  # type: ignore[assignment]
                    return
            except httpx.HTTPError:
                pass
            self.retries += 1
            time.sleep(0.5)
        raise AssertionError(f"job {n} could not be submitted in 120 s")


def _get(info: RunInfo, path: str, **params: Any) -> Any:
    deadline = time.monotonic() + 60
    while True:
        try:
            response = httpx.get(
                f"{info.gateway_url}{path}",
                params=params,
                timeout=15,
                headers={"Authorization": f"Bearer {info.user_token}"},
            )
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"GET {path} kept failing")
        time.sleep(0.5)


def _chaos(stack: Stack, kills: list[str], stop: threading.Event) -> None:
    rng = random.Random(7)
    for name in SERVICES:
        if stop.wait(rng.uniform(0.5, 2.0)):
            return
        stack.kill(name)  # SIGKILL: no clean shutdown, in-flight work is lost mid-way
        kills.append(name)
        time.sleep(1.0)
        stack.restart(name)
    # NATS itself restarts mid-load (its JetStream store is on disk).
    stack.supervisor.restart("nats")
    kills.append("nats")
    # Object storage stops answering for 10 s.
    seaweed = stack.supervisor.process("seaweed")
    os.killpg(seaweed.pid, signal.SIGSTOP)
    kills.append("seaweed (paused 10 s)")
    time.sleep(10)
    os.killpg(seaweed.pid, signal.SIGCONT)


def test_no_job_lost_or_duplicated_while_processes_crash(tmp_path: Path) -> None:
    stack = Stack(
        StackConfig(
            var_dir=tmp_path / "chaos",
            prefer_standard_ports=False,
            extra_env={
                "ATELIER_DISPATCH_RETRY_BASE_S": "0.5",
                "ATELIER_DISPATCH_SWEEP_INTERVAL_S": "1",
                "ATELIER_WORKERS_ACK_WAIT_S": "10",
            },
        )
    )
    info = stack.start()
    # One writer submits every job here: lift the per-user submission rate limit for the run.
    lifted = httpx.put(
        f"{info.admin_url}/admin/v1/quotas",
        json={"credits_per_period": None, "rate_limit_count": None},
        headers={"Authorization": f"Bearer {info.admin_token}"},
        timeout=10,
    )
    assert lifted.status_code == 200, lifted.text
    kills: list[str] = []
    stop = threading.Event()
    try:
        submitter = Submitter(info)
        chaos = threading.Thread(target=_chaos, args=(stack, kills, stop), daemon=True)
        chaos.start()
        started = time.monotonic()
        for n in range(JOBS):
            submitter.submit(n)
            time.sleep(max(0.0, 20.0 / JOBS))  # spread submissions over the chaos
        chaos.join(timeout=120)
        assert not chaos.is_alive()

        pending = dict(submitter.jobs)
        finals: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 300
        while pending and time.monotonic() < deadline:
            for job_id in list(pending):
                job = _get(info, f"/v1/generations/{job_id}")
                if job["status"] in FINAL:
                    finals[job_id] = job
                    del pending[job_id]
            time.sleep(1.0)
        elapsed = time.monotonic() - started

        media = _get(info, "/v1/projects/demo-project/media", limit=500)["items"]
        per_image = Counter((m["job_id"], m["index"]) for m in media)
        duplicated = sum(n - 1 for n in per_image.values() if n > 1)
        statuses = Counter(job["status"] for job in finals.values())
        wrong_counts = [
            job_id
            for job_id, job in finals.items()
            if job["status"] == "completed" and len(job["images"]) != submitter.jobs[job_id]
        ]
        print(
            f"\nchaos: jobs={JOBS} kills={kills} lost={len(pending)} duplicated={duplicated} "
            f"statuses={dict(statuses)} submit_retries={submitter.retries} "
            f"elapsed={elapsed:.1f}s"
        )
        assert pending == {}, f"jobs that never finished: {list(pending)}"
        assert duplicated == 0
        assert wrong_counts == []
        assert len(submitter.jobs) == JOBS
        # Every job whose images landed shows them in the library, exactly once each.
        for job_id, job in finals.items():
            assert {(job_id, i["index"]) for i in job["images"]} <= set(per_image)
    finally:
        stop.set()
        stack.stop()
