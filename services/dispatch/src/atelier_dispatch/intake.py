"""A job comes in: recorded from `jobs.requested`, split into tasks on `jobs.enriched`."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from atelier_contracts.clock import as_utc, utcnow
from atelier_contracts.jobs import FINAL_STATUSES, JobEnriched, JobRequested, JobStatus
from atelier_contracts.providers import images_per_call
from atelier_contracts.subjects import gen_requested
from atelier_dispatch.handover import hand_over, task_event
from atelier_dispatch.outbox import Outbox, Txn
from atelier_dispatch.repository import JobRecord, TaskRecord
from atelier_dispatch.views import announce
from atelier_telemetry import observe_stage_latency

_BEFORE_DISPATCH = {JobStatus.QUEUED, JobStatus.ENRICHING}


class JobNotRecordedYet(Exception):
    """`jobs.enriched` of a job whose `jobs.requested` dispatch has not recorded yet."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} is not recorded yet; its enrichment will come again")


def split_into_tasks(count: int, per_call: int) -> list[tuple[int, int]]:
    """`(first_index, n)` for each provider call a job of `count` images needs."""
    return [(first, min(per_call, count - first)) for first in range(0, count, per_call)]


def record_request(request: JobRequested, txn: Txn) -> None:
    """jobs.requested: the job exists from now on; context is enriching it."""
    repo = txn.repo
    job = repo.get_job(request.job_id, for_update=True)
    if job is None:
        # Queued and handed to context in one step. No status event: nobody sees a
        # difference between "queued" (the gateway's 202) and "enriching".
        job = _new_job(request, txn.rules.deadline_slack_s)
        job.status = JobStatus.ENRICHING.value
        repo.insert_job(job)
    elif JobStatus(job.status) == JobStatus.QUEUED:
        job.status = JobStatus.ENRICHING.value
        job.updated_at = utcnow()
        repo.save_job(job)


def dispatch_enriched(event: JobEnriched, txn: Txn) -> None:
    """jobs.enriched: split into tasks and hand them to the provider's queue."""
    repo = txn.repo
    job = repo.get_job(event.job_id, for_update=True)
    if job is None:
        # Enriched overtook requested (two consumers of one stream): redelivered with
        # backoff until dispatch recorded the request.
        raise JobNotRecordedYet(event.job_id)
    status = JobStatus(job.status)
    if status in FINAL_STATUSES:
        return
    handed = Outbox()
    if status in _BEFORE_DISPATCH:
        job.assembled = event.assembled.model_dump(mode="json")
        per_call = images_per_call(job.provider, job.model)
        # A job before dispatch has no tasks yet: these are all of them, all pending.
        now = utcnow()
        tasks = [
            TaskRecord(
                id=f"{job.id}.{k}",
                job_id=job.id,
                first_index=first,
                n=n,
                status="queued",
                provider=job.provider,
                user_id=job.user_id,
                queued_at=now,
            )
            for k, (first, n) in enumerate(split_into_tasks(job.count, per_call))
        ]
        # Atelier's own time before the provider's turn (docs/operations.md, "landing").
        observe_stage_latency(
            "submitted_to_dispatched", (now - as_utc(job.created_at)).total_seconds()
        )
        # Handed to the provider's queue is "being made" to the writer: one status event
        # here instead of one per task started and one per task completed (ADR 0018).
        # Handed over first, so the event says where a waiting task stands in line.
        job.status = JobStatus.GENERATING.value
        job.updated_at = utcnow()
        repo.save_job(job)
        hand_over(replace(txn, outbox=handed), job, tasks, new=True)
        announce(txn, job)
    else:
        # A redelivery: re-send tasks handed over but not yet picked up (same ids:
        # deduplicated); waiting ones wait for their turn.
        pending = [t for t in repo.tasks_of(job.id) if t.status == "pending"]
        for task in pending:
            handed.add(task_event(job, task), gen_requested(task.provider))
    # Tasks go out before the status that announces them.
    txn.outbox.events[0:0] = handed.events


def _new_job(request: JobRequested, deadline_slack_s: float) -> JobRecord:
    now = utcnow()
    return JobRecord(
        id=request.job_id,
        project=request.project,
        user_id=request.user_id,
        status=JobStatus.QUEUED.value,
        profile_id=request.profile.id,
        profile_name=request.profile.name,
        provider=request.profile.provider,
        model=request.profile.model,
        credit_cost=request.profile.credit_cost,
        profile=request.profile.model_dump(mode="json"),
        prompt=request.prompt,
        size=request.size,
        count=request.count,
        options=request.options,
        target_kind=request.target.kind,
        target_element_id=request.target.element_id,
        request_digest=request.request_digest,
        fallbacks=[plan.model_dump(mode="json") for plan in request.fallbacks] or None,
        assembled=None,
        error=None,
        landed=0,
        failed=0,
        progress_fraction=None,
        progress_detail=None,
        created_at=now,
        updated_at=now,
        deadline_at=now + timedelta(seconds=request.profile.timeout_s * 3 + deadline_slack_s),
    )
