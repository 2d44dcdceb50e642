"""The job as clients see it, and the status events that tell them it changed (ADR 0018)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from atelier_contracts.clock import as_utc, utcnow
from atelier_contracts.envelope import derived_event_id
from atelier_contracts.errors import ErrorInfo
from atelier_contracts.jobs import (
    FINAL_STATUSES,
    AssembledPrompt,
    JobCore,
    JobImage,
    JobProgress,
    JobStatus,
    JobStatusChanged,
    JobView,
    QueuePosition,
    SentReferenceImage,
    Target,
)
from atelier_contracts.subjects import job_finished, job_status
from atelier_dispatch.admission import line_positions
from atelier_dispatch.fallback import Step
from atelier_dispatch.outbox import Txn
from atelier_dispatch.receipt import TaskOutcome, build_receipt
from atelier_dispatch.repository import ImageRecord, JobRecord, JobRepository, TaskRecord

# Each provider's places in line (`admission.line_positions`), by job id.
Lines = dict[str, dict[str, tuple[int, int]]]

# The job's columns a view shows as they are stored.
_SHOWN_AS_STORED = (*JobCore.model_fields, "size", "count", "options", "request_digest")


def set_status(
    txn: Txn,
    job: JobRecord,
    status: JobStatus,
    images: list[ImageRecord] | None = None,
    tasks: list[TaskRecord] | None = None,
) -> JobView:
    """Move the job (in memory: the caller writes it) and announce it."""
    job.status = status.value
    job.updated_at = utcnow()
    return announce(txn, job, images, tasks)


def announce_outcome_again(txn: Txn, job: JobRecord) -> None:
    """A message about a job that is already final may be the redelivery of the one that ended
    it, after its transaction committed and the outcome's publish failed (a NATS node went away
    in between): without this, the outcome would never go out and the job never be settled. The
    event's id is derived from what it says, so JetStream keeps one copy within its duplicate
    window, and settlement is idempotent past it."""
    announce(txn, job)


def announce(
    txn: Txn,
    job: JobRecord,
    images: list[ImageRecord] | None = None,
    tasks: list[TaskRecord] | None = None,
    lines: Lines | None = None,
) -> JobView:
    view = job_view(txn.repo, job, images, tasks)
    queue = queue_of(txn.budgets, txn.repo, job, lines)
    if queue is not None:
        view.progress.queue = queue
    if lines is not None:
        # A new place in line changes no column of the job; stamped now, as progress is,
        # so watchers (which keep only newer states) take it.
        view.updated_at = max(utcnow(), view.updated_at)
    key = f"status:{view.status}:{view.progress.landed}:{view.progress.failed}"
    if queue is not None:
        key += f":queue:{queue.provider}:{queue.position}"
    event_id = derived_event_id(job_uuid(job), key)
    # The outcome on its own subject, once: settlement and clean-up consume only those, and
    # watchers follow both subjects (`job_feed`).
    final = view.status in FINAL_STATUSES
    subject = (job_finished if final else job_status)(job.project, job.id)
    # Updates and the outcome carry the start of long texts; whoever needs them whole (the
    # audit, a job's own stream) reads the job by id (ADR 0018 addendum).
    txn.outbox.add(JobStatusChanged(event_id=event_id, job=view.with_short_texts()), subject)
    return view


def job_view(
    repo: JobRepository,
    job: JobRecord,
    images: list[ImageRecord] | None = None,
    tasks: list[TaskRecord] | None = None,
) -> JobView:
    """The job as clients see it, from its columns; `images` and `tasks`, when the caller
    already holds the job's rows, save reading them."""
    assembled = AssembledPrompt.model_validate(job.assembled) if job.assembled else None
    final = JobStatus(job.status) in FINAL_STATUSES
    if images is None:
        # `landed` is recounted from the image rows whenever rows are added (`settle`).
        images = repo.images_of(job.id) if job.landed else []
    # The tasks are read for a final job's receipt, and for which profile made each image
    # of a job with a fallback chain.
    if tasks is None:
        tasks = repo.tasks_of(job.id) if final or (job.fallbacks and images) else []
    steps: dict[str, Step | None] = (
        {t.id: Step.of(t.profile) for t in tasks} if job.fallbacks and images else {}
    )
    job_images = [
        JobImage.model_validate({**asdict(i), **_made_by(job, steps.get(i.task_id))})
        for i in images
    ]
    error = ErrorInfo.model_validate(job.error) if job.error else None
    receipt = (
        build_receipt(
            status=JobStatus(job.status),
            count=job.count,
            credit_cost=job.credit_cost,
            images=job_images,
            tasks=[TaskOutcome(t.first_index, t.n, t.status, t.error) for t in tasks],
            job_error=error,
        )
        if final
        else None
    )
    return JobView(
        **{column: getattr(job, column) for column in _SHOWN_AS_STORED},
        assembled_prompt=assembled.prompt if assembled else None,
        assembly_notes=assembled.notes if assembled else [],
        reference_images=[
            SentReferenceImage.model_validate(ref, from_attributes=True)
            for ref in (assembled.reference_images if assembled else [])
        ],
        excluded_images=assembled.excluded_images if assembled else [],
        target=Target.model_validate(
            {"kind": job.target_kind, "element_id": job.target_element_id}
        ),
        progress=JobProgress(
            total=job.count,
            landed=job.landed,
            failed=job.failed,
            # The provider's last stored figure, while images are being made.
            fraction=None if final else job.progress_fraction,
            detail=None if final else job.progress_detail,
        ),
        images=job_images,
        error=error,
        created_at=as_utc(job.created_at),
        updated_at=as_utc(job.updated_at),
        style=assembled.style if assembled else None,
        receipt=receipt,
    )


def queue_of(
    budgets: Mapping[str, int],
    repo: JobRepository,
    job: JobRecord,
    lines: Lines | None = None,
) -> QueuePosition | None:
    """Where the job's next waiting image stands in its provider's line (issue 21); None
    when nothing of it waits. Only providers with a budget have a line in dispatch (ADR
    0020). `lines` caches each provider's positions across the jobs of one transaction."""
    if not budgets or JobStatus(job.status) != JobStatus.GENERATING:
        return None
    providers = sorted(
        {t.provider for t in repo.tasks_of(job.id) if t.status == "queued"} & set(budgets)
    )
    best: QueuePosition | None = None
    for provider in providers:
        if lines is None or provider not in lines:
            positions = line_positions(repo.line(provider), repo.turns(provider))
            if lines is not None:
                lines[provider] = positions
        else:
            positions = lines[provider]
        if job.id in positions:
            position, own = positions[job.id]
            if best is None or position < best.position:
                best = QueuePosition(provider=provider, position=position, user_position=own)
    return best


def _made_by(job: JobRecord, step: Step | None) -> dict[str, Any]:
    """A job image's profile, price and, when a fallback made it, why."""
    if step is None:
        return {
            "profile_id": job.profile_id,
            "profile_name": job.profile_name,
            "credit_cost": job.credit_cost,
        }
    profile = step.plan.profile
    return {
        "profile_id": profile.id,
        "profile_name": profile.name,
        "credit_cost": profile.credit_cost,
        "fallback_reason": step.reason,
    }


def job_uuid(job: JobRecord) -> str:
    """Job ids are UUIDs made by the gateway; other ids still get a stable namespace."""
    try:
        return str(UUID(job.id))
    except ValueError:
        return str(uuid5(NAMESPACE_URL, f"atelier:job:{job.id}"))
