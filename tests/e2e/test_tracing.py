"""One trace per job: HTTP submit → context → dispatch → worker → media share one trace id."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e

EXPECTED = {
    "atelier-gateway",
    "atelier-context",
    "atelier-dispatch",
    "atelier-worker-offline",
    "atelier-media",
}


def test_one_job_is_one_trace_across_every_process(running_stack: RunningStack) -> None:
    with running_stack.user() as user:
        submitted = user.post(
            "/v1/generations",
            json={
                "project": "demo-project",
                "profile_id": running_stack.info.profile_id,
                "prompt": "Traced lighthouse",
                "count": 1,
            },
        )
        assert submitted.status_code == 202
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 60
        while user.get(f"/v1/generations/{job_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.2)

    # Spans are exported in batches; wait until one trace holds every hop.
    deadline = time.monotonic() + 20
    best: set[str] = set()
    while time.monotonic() < deadline:
        for services in running_stack.collector.services_by_trace().values():
            if len(services & EXPECTED) > len(best):
                best = services & EXPECTED
        if best == EXPECTED:
            break
        time.sleep(0.5)
    assert best == EXPECTED, f"one trace reached only {sorted(best)}"
