"""An outcome carries the start of long texts (ADR 0018 addendum); the audit keeps them whole,
read from dispatch by id, and settles for the start only when dispatch keeps not answering."""

from __future__ import annotations

import pytest
from faststream.nats import NatsBroker, TestNatsBroker

from atelier_contracts.jobs import JobQuery, JobReply, JobStatusChanged
from atelier_contracts.subjects import Subject
from atelier_contracts.testing import job_view
from atelier_profiles.handlers import _with_whole_texts

PROMPT = "A lighthouse in a storm, " * 100  # 2,500 characters
ASSEMBLED = PROMPT.strip() + "\n\nContext:\n- Mara: a keeper"


def outcome() -> tuple[JobStatusChanged, JobStatusChanged]:
    whole = job_view(status="completed", prompt=PROMPT, assembled_prompt=ASSEMBLED)
    short = JobStatusChanged(job=whole.with_short_texts())
    assert short.job.texts_shortened
    return short, JobStatusChanged(event_id=short.event_id, job=whole)


async def test_the_whole_texts_are_read_from_dispatch() -> None:
    short, whole = outcome()
    broker = NatsBroker()
    asked: list[str] = []

    @broker.subscriber(Subject.JOBS_GET)
    async def dispatch_get(query: JobQuery) -> JobReply:
        asked.append(query.job_id)
        reply = JobReply.compact(whole.job)
        assert reply.assembled_after_prompt is not None  # sent as what follows the prompt
        return reply

    async with TestNatsBroker(broker):
        read = await _with_whole_texts(broker, short, insist=True)
    assert asked == [short.job.id]
    assert read.job.prompt == PROMPT and read.job.assembled_prompt == ASSEMBLED
    assert not read.job.texts_shortened
    assert read.event_id == short.event_id and read.job.status == short.job.status


async def test_short_texts_need_no_question() -> None:
    event = JobStatusChanged(job=job_view(status="completed", prompt="Short"))
    assert await _with_whole_texts(NatsBroker(), event, insist=True) is event


async def test_dispatch_silent_fails_the_delivery_then_the_start_is_kept() -> None:
    short, _ = outcome()
    broker = NatsBroker()  # nobody answers `jobs.query.get`
    async with TestNatsBroker(broker):
        with pytest.raises(Exception):  # noqa: B017 - whatever the broker raises: not answered
            await _with_whole_texts(broker, short, insist=True)
        kept = await _with_whole_texts(broker, short, insist=False)
    assert kept is short
