"""Reservations go to profiles in batches (ADR 0016): a lone one at once, a burst in a few
messages, and a batch without an answer fails every reservation in it."""

from __future__ import annotations

import asyncio

import pytest

from atelier_contracts.errors import Unavailable
from atelier_contracts.profiles import (
    QuotaReserveBatch,
    QuotaReserveBatchReply,
    QuotaReserveReply,
    QuotaReserveRequest,
)
from atelier_gateway.backends import ReservationBatcher


def _request(n: int) -> QuotaReserveRequest:
    return QuotaReserveRequest(job_id=f"job-{n}", user_id="u", project="p", profile_id="x", count=1)


class Profiles:
    """Answers each batch after `release` is set, echoing the job ids in the message."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail = False
        self.short = False

    async def send(self, batch: QuotaReserveBatch) -> QuotaReserveBatchReply:
        self.batches.append([r.job_id for r in batch.requests])
        await self.release.wait()
        if self.fail:
            raise Unavailable("The profiles service is not answering; try again shortly.")
        replies = [QuotaReserveReply(outcome="reserved", message=r.job_id) for r in batch.requests]
        return QuotaReserveBatchReply(replies=replies[:-1] if self.short else replies)


async def test_a_lone_reservation_goes_at_once() -> None:
    profiles = Profiles()
    profiles.release.set()
    reply = await ReservationBatcher(profiles.send).reserve(_request(1))
    assert reply.message == "job-1" and profiles.batches == [["job-1"]]


async def test_a_burst_goes_in_few_batches_each_answer_to_its_caller() -> None:
    profiles = Profiles()
    batcher = ReservationBatcher(profiles.send, max_in_flight=2)
    waiting = [asyncio.create_task(batcher.reserve(_request(n))) for n in range(200)]
    await asyncio.sleep(0)
    profiles.release.set()
    replies = await asyncio.gather(*waiting)
    assert [r.message for r in replies] == [f"job-{n}" for n in range(200)]
    # Two go alone while nothing is in flight; the rest wait and go 64 at a time.
    assert [len(b) for b in profiles.batches] == [1, 1, 64, 64, 64, 6]


@pytest.mark.parametrize("problem", ["fail", "short"])
async def test_a_batch_without_an_answer_fails_each_reservation(problem: str) -> None:
    profiles = Profiles()
    setattr(profiles, problem, True)
    batcher = ReservationBatcher(profiles.send, max_in_flight=1)
    waiting = [asyncio.create_task(batcher.reserve(_request(n))) for n in range(3)]
    await asyncio.sleep(0)
    profiles.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    # The batcher carries on: the next reservation goes in a batch of its own.
    profiles.fail = profiles.short = False
    assert (await batcher.reserve(_request(9))).message == "job-9"


async def test_a_caller_that_went_away_does_not_break_its_batch() -> None:
    profiles = Profiles()
    batcher = ReservationBatcher(profiles.send, max_in_flight=1)
    first = asyncio.create_task(batcher.reserve(_request(1)))
    gone = asyncio.create_task(batcher.reserve(_request(2)))
    kept = asyncio.create_task(batcher.reserve(_request(3)))
    await asyncio.sleep(0)
    gone.cancel()
    profiles.release.set()
    assert (await first).message == "job-1" and (await kept).message == "job-3"
    assert profiles.batches == [["job-1"], ["job-2", "job-3"]]
