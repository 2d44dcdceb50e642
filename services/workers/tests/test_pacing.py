"""The worker's own rate limit and its progress throttle, and how a task uses both."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from atelier_contracts.errors import ErrorClass
from atelier_contracts.generation import GenerationFailed, GenerationTask
from atelier_contracts.testing import generation_task, profile_snapshot
from atelier_workers.adapters.base import GenerationOutput, ImageRequest
from atelier_workers.pacing import ProgressThrottle, TokenBucket
from atelier_workers.service import WorkerService


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_spaces_requests_after_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(per_minute=60, burst=2, clock=clock)
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]
    assert bucket.reserve() == pytest.approx(1.0)  # booked: one a second
    assert bucket.reserve() == pytest.approx(2.0)
    bucket.release()  # the last one was not used after all
    clock.now = 1.0
    assert bucket.reserve() == pytest.approx(1.0)
    clock.now = 60.0  # a long pause refills up to the burst, no further
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]
    assert bucket.reserve() > 0
    with pytest.raises(ValueError):
        TokenBucket(per_minute=0)


async def test_progress_is_throttled_and_the_newest_report_is_kept() -> None:
    sent: list[tuple[float | None, str | None]] = []

    async def sink(fraction: float | None, detail: str | None) -> None:
        sent.append((fraction, detail))

    throttle = ProgressThrottle(sink, min_interval_s=0.2)
    await throttle.report(None, "queued at position 3")
    await asyncio.sleep(0.05)
    assert sent == [(None, "queued at position 3")]  # the first goes out at once
    for step in range(1, 6):
        await throttle.report(step / 5, f"step {step}/5")
    await asyncio.sleep(0.05)
    assert len(sent) == 1  # held back...
    await asyncio.sleep(0.25)
    assert sent[-1] == (1.0, "step 5/5")  # ...and only the newest sent once the interval passed
    assert len(sent) == 2
    await throttle.report(1.0, "step 5/5")  # the same again: nothing new to say
    await asyncio.sleep(0.3)
    assert len(sent) == 2
    await throttle.report(1.0, "saving")
    await throttle.close()
    await throttle.report(1.0, "after the end")
    await asyncio.sleep(0.3)
    assert (1.0, "after the end") not in sent


async def test_a_failing_sink_never_fails_the_reporter() -> None:
    async def sink(fraction: float | None, detail: str | None) -> None:
        raise RuntimeError("NATS is down")

    throttle = ProgressThrottle(sink, min_interval_s=0.01)
    await throttle.report(0.5, "half")
    await asyncio.sleep(0.05)
    await throttle.close()


class ProgressingAdapter:
    """Reports progress the way a queue provider does, then makes nothing."""

    name = "progressing"

    def max_images_per_call(self, model: str) -> int:
        return 1

    async def generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        await request.report_progress(None, "queued at position 2")
        await request.report_progress(0.5, "running")
        return GenerationOutput(images=[])


def _task(deadline_s: float = 60.0) -> GenerationTask:
    queue = profile_snapshot(name="Queue", provider="falai", model="fal-ai/flux/dev")
    return generation_task(
        profile=queue,
        prompt="An owl",
        deadline_at=datetime.now(UTC) + timedelta(seconds=deadline_s),
    )


async def test_a_task_hands_its_progress_listener_to_the_adapter() -> None:
    seen: list[tuple[float | None, str | None]] = []

    async def listen(fraction: float | None, detail: str | None) -> None:
        seen.append((fraction, detail))

    async with httpx.AsyncClient() as client:
        service = WorkerService(
            ProgressingAdapter(),
            None,  # type: ignore[arg-type]  # no image comes back, nothing is stored
            "staging",
            client,
            media_bucket="media",
        )
        result = await service.run_task(_task(), on_progress=listen)
    assert isinstance(result, GenerationFailed)  # no image came back
    assert seen == [(None, "queued at position 2"), (0.5, "running")]


async def test_the_rate_limit_holds_calls_back_and_refuses_what_would_miss_the_deadline() -> None:
    async with httpx.AsyncClient() as client:
        service = WorkerService(
            ProgressingAdapter(),
            None,  # type: ignore[arg-type]  # nothing is stored
            "staging",
            client,
            media_bucket="media",
            limiter=TokenBucket(per_minute=600, burst=1),  # one call every 0.1 s
        )
        assert await service.wait_for_rate_limit(10.0) == 0.0
        assert await service.wait_for_rate_limit(10.0) == pytest.approx(0.1, abs=0.05)
        result = await service.run_task(_task(deadline_s=0.05))
    assert isinstance(result, GenerationFailed)
    assert result.error.error_class is ErrorClass.RATE_LIMITED
    assert result.error.retry_after_s is not None and result.error.retry_after_s > 0
