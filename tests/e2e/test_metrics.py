"""Every service serves Prometheus metrics; the generation metrics move when jobs run."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e


def _metrics(stack: RunningStack, name: str) -> str:
    return httpx.get(f"{stack.stack.url(name)}/metrics", timeout=10).text


def test_generation_metrics(running_stack: RunningStack) -> None:
    with running_stack.user() as user:
        done = user.post(
            "/v1/generations",
            json={
                "project": "demo-project",
                "profile_id": running_stack.info.profile_id,
                "prompt": "Measured harbour",
                "count": 1,
            },
        )
        failed = user.post(
            "/v1/generations",
            json={
                "project": "demo-project",
                "profile_id": running_stack.info.profile_id,
                "prompt": "[fail:auth] measured",
                "count": 1,
            },
        )
        for job_id in (done.json()["id"], failed.json()["id"]):
            deadline = time.monotonic() + 60
            while user.get(f"/v1/generations/{job_id}").json()["status"] not in (
                "completed",
                "failed",
            ):
                assert time.monotonic() < deadline
                time.sleep(0.2)
    time.sleep(1.5)  # one sweeper round reports queue depth
    dispatch = _metrics(running_stack, "dispatch")
    assert "atelier_job_stage_seconds_count" in dispatch
    assert "atelier_generation_cost_credits" in dispatch
    assert 'atelier_queue_depth{consumer="worker-offline"' in dispatch
    worker = _metrics(running_stack, "worker-offline")
    assert 'atelier_provider_calls_in_flight{provider="offline"}' in worker
    assert 'atelier_generation_failures_total{error_class="auth",provider="offline"}' in worker
    assert "atelier_http_request_duration_seconds" in _metrics(running_stack, "gateway")
    for name in ("profiles", "context", "media"):
        assert "atelier_messages_handled" in _metrics(running_stack, name)
