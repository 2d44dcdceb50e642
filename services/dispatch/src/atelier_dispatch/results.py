"""What the workers and media report back about a task: its images landed, or it failed (then
a retry, a fallback, or the task's end)."""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from atelier_contracts.clock import as_utc, utcnow
from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.generation import GenerationFailed
from atelier_contracts.jobs import FINAL_STATUSES, JobStatus
from atelier_contracts.media import MediaLanded
from atelier_contracts.profiles import ProfileSnapshot
from atelier_dispatch.fallback import Step, next_step
from atelier_dispatch.handover import freed, hand_over
from atelier_dispatch.outbox import Rules, Txn
from atelier_dispatch.repository import ImageRecord, JobRecord, TaskRecord
from atelier_dispatch.settlement import DONE_TASK_STATUSES, settle
from atelier_dispatch.views import announce_outcome_again

log = logging.getLogger("atelier.dispatch")


def retry_delay_s(attempt: int, base_s: float, hint_s: float | None) -> float:
    """Exponential backoff with jitter, never sooner than the provider asked."""
    backoff: float = min(60.0, base_s * 2 ** (attempt - 1)) * random.uniform(0.75, 1.25)
    return max(backoff, hint_s or 0.0)


def find_task(tasks: list[TaskRecord], task_id: str) -> TaskRecord | None:
    return next((t for t in tasks if t.id == task_id), None)


def images_landed(event: MediaLanded, txn: Txn) -> None:
    repo = txn.repo
    job = repo.get_job(event.job_id, for_update=True)
    if job is None:
        return
    # Read once, kept current below, and counted by `settle`: no re-reading.
    tasks = repo.tasks_of(job.id)
    task = find_task(tasks, event.task_id)
    if task is None:
        return
    images = repo.images_of(job.id)
    # Media ids are derived from the task (and so the job): a redelivery repeats them.
    known = {image.media_id for image in images}
    new: list[ImageRecord] = []
    for item in event.media:
        if item.id not in known:
            known.add(item.id)
            new.append(
                ImageRecord(
                    media_id=item.id,
                    job_id=job.id,
                    task_id=task.id,
                    index=item.index,
                    width=item.width,
                    height=item.height,
                    content_type=item.content_type,
                )
            )
    repo.insert_images(new)
    was_running = [task] if task.status == "pending" else []
    if task.status != "landed":
        task.status = "landed"
        repo.save_tasks([task])
    if JobStatus(job.status) not in FINAL_STATUSES:
        if new:
            images = sorted(images + new, key=_by_index)  # as `images_of` orders them
        settle(txn, job, tasks, images)
    else:
        announce_outcome_again(txn, job)
    freed(txn, was_running)


def task_failed(event: GenerationFailed, txn: Txn) -> None:
    repo = txn.repo
    job = repo.get_job(event.task.job_id, for_update=True)
    if job is None:
        return
    if JobStatus(job.status) in FINAL_STATUSES:
        announce_outcome_again(txn, job)
        return
    # All of them: settling the job below counts them.
    tasks = repo.tasks_of(job.id)
    task = find_task(tasks, event.task.task_id)
    if task is None:
        return
    if task.status in DONE_TASK_STATUSES or event.task.attempt < task.attempt:
        return  # already settled, or a stale report of an attempt we moved past
    was_running = [task] if task.status == "pending" else []
    task.error = event.error.model_dump(mode="json")
    retry_at = _retry_time(txn.rules, job, task, event.error)
    if retry_at is not None:
        task.status = "retry_wait"
        task.attempt += 1
        task.next_attempt_at = retry_at
        repo.save_tasks([task])
        freed(txn, was_running)
        log.info(
            "task will be retried",
            extra={
                "job_id": job.id,
                "task_id": task.id,
                "attempt": task.attempt,
                "class": event.error.error_class,
                "at": retry_at.isoformat(),
            },
        )
        return
    if _fall_back(txn, job, task, event.error):
        freed(txn, was_running)
        return
    task.status = "failed"
    repo.save_tasks([task])
    settle(txn, job, tasks, repo.images_of(job.id))
    freed(txn, was_running)


def resend_task(job_id: str, task_id: str, txn: Txn) -> None:
    """A task whose backoff ran out goes back to its provider."""
    job = txn.repo.get_job(job_id, for_update=True)
    task = txn.repo.get_task(task_id)
    if job is None or task is None or task.status != "retry_wait":
        return
    if JobStatus(job.status) in FINAL_STATUSES:
        return
    task.next_attempt_at = None
    hand_over(txn, job, [task])


def _retry_time(
    rules: Rules, job: JobRecord, task: TaskRecord, error: ErrorInfo
) -> datetime | None:
    """When to try a failed task again, or None when it must not be retried (on the profile
    it runs on: the limit counts the attempts since it moved there)."""
    step = Step.of(task.profile)
    profile = step.plan.profile.model_dump() if step else job.profile
    config = profile.get("provider_config") or {}
    limit = int(config.get("max_attempts", rules.max_attempts))
    if error.error_class == ErrorClass.NO_IMAGE_RETURNED:
        limit = min(limit, 2)  # at most once more: an empty answer tends to repeat
    tries = task.attempt - (step.first_attempt if step else 1) + 1
    if not error.retryable or tries >= limit:
        return None
    at = utcnow() + timedelta(
        seconds=retry_delay_s(task.attempt, rules.retry_base_s, error.retry_after_s)
    )
    if job.deadline_at is not None and at >= as_utc(job.deadline_at):
        return None
    return at


def _fall_back(txn: Txn, job: JobRecord, task: TaskRecord, error: ErrorInfo) -> bool:
    """Move a task that will not be retried to the next profile of its job's fallback chain,
    when the failure is the provider's (`fallback.FALLS_BACK`); False when it must fail."""
    current = Step.of(task.profile)
    running_on = current.plan.profile if current else ProfileSnapshot.model_validate(job.profile)
    references = len((job.assembled or {}).get("reference_images") or [])
    step = next_step(job.fallbacks, current, running_on, task.attempt, error, references=references)
    if step is None:
        return False
    task.profile = step.stored()
    task.provider = step.plan.profile.provider
    task.fallback_reason = step.reason
    task.attempt = step.first_attempt  # a new task event id; the limit counts from here
    task.next_attempt_at = None
    if job.deadline_at is not None:
        # The fallback gets its own profile's time, as the job's profile had.
        slack_s = txn.rules.deadline_slack_s
        own = utcnow() + timedelta(seconds=step.plan.profile.timeout_s * 3 + slack_s)
        job.deadline_at = max(as_utc(job.deadline_at), own)
        txn.repo.save_job(job)
    hand_over(txn, job, [task])
    log.warning(
        "task falls back to the next profile of its chain",
        extra={
            "job_id": job.id,
            "task_id": task.id,
            "from_profile": running_on.id,
            "to_profile": step.plan.profile.id,
            "class": error.error_class,
        },
    )
    return True


def _by_index(image: ImageRecord) -> int:
    return image.index
