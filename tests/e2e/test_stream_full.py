"""A full job stream, on the real stack: the gateway answers 503 `stream_full` naming the stream,
its limit and setting, and the stream keeps every job it took (issue 15: bounded streams). It
holds only jobs not yet handled (interest retention, ADR 0015): they leave it once handled, so it
fills only while context is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest

from atelier_devstack.stack import Stack, StackConfig

pytestmark = pytest.mark.e2e

JOBS_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var_dir: Path = tmp_path_factory.mktemp("small-stack")
    stack = Stack(
        StackConfig(
            var_dir=var_dir,
            prefer_standard_ports=False,
            extra_env={"ATELIER_STREAM_JOBS_MAX_BYTES": str(JOBS_LIMIT)},
        )
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


async def jobs_stream_bytes(nats_url: str) -> tuple[int, int]:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info("ATELIER_JOBS")
        return info.state.bytes, info.state.messages
    finally:
        await nc.close()


async def test_a_full_job_stream_is_a_clear_503_and_loses_nothing(small_stack: Stack) -> None:
    run = small_stack.info
    assert run is not None
    headers = {"Authorization": f"Bearer {run.user_token}"}
    request = {
        "project": "demo-project",
        "profile_id": run.profile_id,
        "prompt": "A lighthouse in the fog, " * 150,  # about 4 KB a job
        "count": 1,
    }

    # Handled jobs leave the stream: while context is down its requests wait there, and once it
    # is back they are handled and gone.
    small_stack.kill("context")
    async with httpx.AsyncClient(base_url=run.gateway_url, headers=headers) as client:
        for _ in range(3):
            response = await client.post("/v1/generations", json=request, timeout=30)
            assert response.status_code == 202, response.text
    assert (await jobs_stream_bytes(run.nats_url))[1] >= 3
    small_stack.restart("context")
    deadline = time.monotonic() + 60
    while (await jobs_stream_bytes(run.nats_url))[1] > 0:
        assert time.monotonic() < deadline, "handled jobs stayed in the stream"
        await asyncio.sleep(0.5)

    # So it fills only with a backlog: context down again.
    small_stack.kill("context")
    accepted: list[str] = []
    refused: httpx.Response | None = None
    async with httpx.AsyncClient(base_url=run.gateway_url, headers=headers) as client:
        for _ in range(60):
            response = await client.post("/v1/generations", json=request, timeout=30)
            if response.status_code == 202:
                accepted.append(response.json()["id"])
                continue
            refused = response
            break

    assert refused is not None, "the stream never filled"
    assert accepted, "the stream filled before any job"
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "stream_full"
    assert "ATELIER_JOBS is full" in error["message"]
    assert "65,536 bytes" in error["message"]
    assert "ATELIER_STREAM_JOBS_MAX_BYTES" in error["message"]
    assert "temporary" in error["message"]

    stored, messages = await jobs_stream_bytes(run.nats_url)
    assert stored <= JOBS_LIMIT
    assert messages >= len(accepted)  # every accepted job's request is still there
