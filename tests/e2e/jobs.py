"""What the end-to-end tests share about a job seen through the gateway's API."""

from __future__ import annotations

import time
from typing import Any

import httpx

FINAL = frozenset({"completed", "partial", "failed", "cancelled"})


def wait_final(client: httpx.Client, job_id: str, timeout_s: float = 90) -> dict[str, Any]:
    """The job once it ended (`GET /v1/generations/{id}` every 0.2 s), or an AssertionError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/generations/{job_id}").json()
        if job["status"] in FINAL:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s")
