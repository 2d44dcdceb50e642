"""The dead-letter path: a message that ran out of deliveries ends its job with a reason.

JetStream publishes an advisory when a consumer gives up on a message after `max_deliver`
attempts. The message itself stays in its stream; we read it back, work out which job it
belongs to, and fail that task or job, so nothing is silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import GenerationCompleted, GenerationFailed, GenerationTask
from atelier_contracts.jobs import JobEnriched, JobRequested
from atelier_dispatch.service import DispatchService

log = logging.getLogger("atelier.dispatch.dead_letter")

# (subject, body) of a stored message, or None when it is gone.
FetchMessage = Callable[[str, int], Awaitable[tuple[str, bytes] | None]]


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
    advisory: MaxDeliveriesAdvisory, fetch: FetchMessage, service: DispatchService
) -> str:
    """Returns what was done, for the log."""
    if advisory.consumer.startswith("dispatch-"):
        # Our own consumers: the database is what keeps failing; the sweeper ends those jobs.
        return "own consumer: left to the deadline sweeper"
    stored = await fetch(advisory.stream, advisory.stream_seq)
    if stored is None:
        return "message already gone"
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
    for model in (JobRequested, JobEnriched):
        event = _parse(model, body)
        if event is not None:
            job_id = event.job_id if isinstance(event, JobRequested) else event.request.job_id
            await service.fail_job(
                job_id,
                ErrorInfo.of(
                    ErrorClass.INTERNAL, f"{advisory.consumer} gave up after {tries} tries"
                ),
            )
            return f"job {job_id} failed"
    return f"nothing to do for {subject}"
