"""The dead-letter path: a message that ran out of deliveries ends its job with a reason.

JetStream publishes an advisory when a consumer gives up on a message after `max_deliver`
attempts. The message itself stays in its stream; we read it back, work out which job it
belongs to, and fail that task or job, so nothing is silently dropped.

A consumer that gave up never acks, so the work queue (ATELIER_TASKS) and the interest stream
(ATELIER_JOBS, ADR 0015) would keep the message forever: once its task or job is failed it is
deleted. A failed job needs none of its JOBS messages any more: the job is recorded before it
is failed, so a dispatch consumer that has not read the request yet has nothing left to do.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import GenerationCompleted, GenerationFailed, GenerationTask
from atelier_contracts.jobs import JobRequested
from atelier_contracts.subjects import JOBS_STREAM, TASKS_STREAM, Subject
from atelier_dispatch.service import DispatchService

log = logging.getLogger("atelier.dispatch.dead_letter")


class StoredMessages(Protocol):
    async def fetch(self, stream: str, seq: int) -> tuple[str, bytes] | None:
        """(subject, body) of a stored message, or None when it is gone."""

    async def delete(self, stream: str, seq: int) -> None:
        """Remove a message (gone already is fine)."""

    async def handled_by_others(self, stream: str, seq: int, subject: str, consumer: str) -> bool:
        """Every other durable consumer of `subject` has acked up to `seq`."""


# Streams that keep a message until it is acked: one nobody will ack is deleted once settled.
_KEPT_UNTIL_ACKED = {TASKS_STREAM.name, JOBS_STREAM.name}


class MaxDeliveriesAdvisory(BaseModel):
    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


def _parse(model: type[Any], body: bytes) -> Any:
    try:
        return model.model_validate_json(body)
    except ValidationError:
        return None


async def handle_max_deliveries(
    advisory: MaxDeliveriesAdvisory, messages: StoredMessages, service: DispatchService
) -> str:
    """Returns what was done, for the log."""
    stream, seq = advisory.stream, advisory.stream_seq
    if advisory.consumer.startswith("dispatch-"):
        # Our own consumers: the database is what keeps failing; the sweeper ends those jobs.
        return await _forget_given_up_by_dispatch(advisory, messages)
    stored = await messages.fetch(stream, seq)
    if stored is None:
        return "message already gone"
    outcome = await _settle(advisory, stored, service)
    if stream in _KEPT_UNTIL_ACKED:
        await messages.delete(stream, seq)
        outcome += "; message deleted"
    return outcome


async def _forget_given_up_by_dispatch(
    advisory: MaxDeliveriesAdvisory, messages: StoredMessages
) -> str:
    outcome = "own consumer: left to the deadline sweeper"
    if advisory.stream != JOBS_STREAM.name:
        return outcome
    stream, seq = advisory.stream, advisory.stream_seq
    stored = await messages.fetch(stream, seq)
    if stored is None:
        return outcome
    # Context may still need a request dispatch gave up on; if so the message is left to the
    # stream's max_age.
    if await messages.handled_by_others(stream, seq, stored[0], advisory.consumer):
        await messages.delete(stream, seq)
        return outcome + "; message deleted"
    return outcome + "; message kept for its other consumers"


async def _settle(
    advisory: MaxDeliveriesAdvisory, stored: tuple[str, bytes], service: DispatchService
) -> str:
    subject, body = stored
    tries = advisory.deliveries
    if subject.startswith("gen.") and subject.endswith(".requested"):
        task = _parse(GenerationTask, body)
        if task is None:
            return "unreadable task"
        error = ErrorInfo.of(
            ErrorClass.INTERNAL, f"a worker stopped {tries} times while working on this image"
        )
        await service.task_failed(GenerationFailed(task=task, error=error))
        return f"task {task.task_id} failed"
    if subject == "gen.completed":
        completed = _parse(GenerationCompleted, body)
        if completed is None:
            return "unreadable result"
        error = ErrorInfo(
            error_class=ErrorClass.INTERNAL,
            message="The image was generated but could not be stored.",
            detail=f"media gave up after {tries} deliveries",
        )
        await service.task_failed(GenerationFailed(task=completed.task, error=error))
        return f"task {completed.task.task_id} failed (not stored)"
    # Another service's consumer of jobs.requested (context) gave up: the job can never be made.
    if subject == Subject.JOBS_REQUESTED:
        request = _parse(JobRequested, body)
        if request is not None:
            job_id = request.job_id
            # Recorded first, so the job exists and ends failed even when dispatch's own
            # consumer has not read the request yet (the message is deleted next).
            await service.record_request(request)
            await service.fail_job(
                job_id,
                ErrorInfo.of(
                    ErrorClass.INTERNAL, f"{advisory.consumer} gave up after {tries} tries"
                ),
            )
            return f"job {job_id} failed"
    return f"nothing to do for {subject}"
