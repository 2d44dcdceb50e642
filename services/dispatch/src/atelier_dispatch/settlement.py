"""How a job ends: recounted from its rows once every task is done, or ended at once (a cancel,
a deadline, a message that ran out of deliveries)."""

from __future__ import annotations

from typing import Any

from atelier_contracts.clock import as_utc, utcnow
from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.jobs import FINAL_STATUSES, JobStatus, JobView
from atelier_dispatch.handover import freed
from atelier_dispatch.outbox import Txn
from atelier_dispatch.repository import ImageRecord, JobRecord, TaskRecord
from atelier_dispatch.views import announce, announce_outcome_again, job_view, set_status
from atelier_telemetry import observe_stage_latency, record_generation_cost, record_job_finished

DONE_TASK_STATUSES = ("landed", "failed", "cancelled")


def settle(
    txn: Txn,
    job: JobRecord,
    tasks: list[TaskRecord],
    images: list[ImageRecord],
    *,
    force_final: bool = False,
) -> None:
    """Recount from the rows (never increments: redeliveries can't double count) and end the
    job once every task is landed or failed. `tasks` and `images` are all of the job's rows
    as this transaction left them (read in it, and changed and written since)."""
    landed_per_task: dict[str, int] = {}
    for image in images:
        landed_per_task[image.task_id] = landed_per_task.get(image.task_id, 0) + 1
    landed = len(images)
    failed = 0
    first_error: dict[str, Any] | None = None
    for task in tasks:
        if task.status in ("failed", "cancelled"):
            failed += task.n - landed_per_task.get(task.id, 0)
            first_error = first_error or task.error
        elif task.status == "landed":
            failed += max(0, task.n - landed_per_task.get(task.id, 0))
    if failed and first_error is None:
        first_error = ErrorInfo.of(ErrorClass.NO_IMAGE_RETURNED).model_dump(mode="json")
    job.landed, job.failed = landed, failed
    done = bool(tasks) and all(t.status in DONE_TASK_STATUSES for t in tasks)
    if not (done or force_final):
        if JobStatus(job.status) not in FINAL_STATUSES:
            job.updated_at = utcnow()
            announce(txn, job, images)
        txn.repo.save_job(job)
        return
    if landed >= job.count:
        final = JobStatus.COMPLETED
    elif landed > 0:
        final = JobStatus.PARTIAL
    else:
        final = JobStatus.FAILED
    if final != JobStatus.COMPLETED:
        job.error = job.error or first_error
    job.deadline_at = None
    record_generation_cost(job.provider, job.model, landed * job.credit_cost)
    observe_stage_latency("submitted_to_final", (utcnow() - as_utc(job.created_at)).total_seconds())
    record_job_finished(
        job.provider,
        final.value,
        None if final == JobStatus.COMPLETED else (job.error or {}).get("error_class"),
        landed,
    )
    set_status(txn, job, final, images, tasks)
    txn.repo.save_job(job)


def cancel_job(job_id: str, txn: Txn) -> JobView | None:
    """The writer cancelled: the job ends now, whatever landed stays."""
    repo = txn.repo
    job = repo.get_job(job_id, for_update=True)
    if job is None:
        return None
    if JobStatus(job.status) in FINAL_STATUSES:
        announce_outcome_again(txn, job)
        return job_view(repo, job)
    unfinished = [t for t in repo.tasks_of(job_id) if t.status not in DONE_TASK_STATUSES]
    was_running = [t for t in unfinished if t.status == "pending"]
    for task in unfinished:
        task.status = "cancelled"
        task.next_attempt_at = None
    repo.save_tasks(unfinished)
    job.error = ErrorInfo.of(ErrorClass.CANCELLED).model_dump(mode="json")
    job.deadline_at = None
    view = set_status(txn, job, JobStatus.CANCELLED)
    repo.save_job(job)
    record_job_finished(job.provider, JobStatus.CANCELLED.value, ErrorClass.CANCELLED, 0)
    freed(txn, was_running)
    return view


def fail_job(job_id: str, error: ErrorInfo, txn: Txn) -> None:
    """End a job now: images that landed stay; everything unfinished fails with `error`."""
    repo = txn.repo
    job = repo.get_job(job_id, for_update=True)
    if job is None:
        return
    if JobStatus(job.status) in FINAL_STATUSES:
        announce_outcome_again(txn, job)
        return
    tasks = repo.tasks_of(job_id)
    unfinished = [t for t in tasks if t.status not in DONE_TASK_STATUSES]
    was_running = [t for t in unfinished if t.status == "pending"]
    for task in unfinished:
        task.status = "failed"
        task.error = error.model_dump(mode="json")
    repo.save_tasks(unfinished)
    if not tasks:
        job.error = error.model_dump(mode="json")
    images = repo.images_of(job_id)
    settle(txn, job, tasks, images, force_final=True)
    freed(txn, was_running)
