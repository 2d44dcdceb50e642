"""Handing tasks to their provider's queue: at once, or in turn under a budget (ADR 0020)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta

from atelier_contracts.clock import as_utc, utcnow
from atelier_contracts.envelope import derived_event_id
from atelier_contracts.generation import GenerationTask
from atelier_contracts.jobs import FINAL_STATUSES, AssembledPrompt, JobStatus
from atelier_contracts.profiles import ProfileSnapshot
from atelier_contracts.subjects import gen_requested
from atelier_dispatch.admission import UNLIMITED_BATCH, allot, line_positions, turn_order
from atelier_dispatch.fallback import Step
from atelier_dispatch.outbox import Txn
from atelier_dispatch.repository import JobRecord, TaskRecord
from atelier_dispatch.views import announce, job_uuid

# After an admission, the jobs this near the front of the line hear their new position in a
# status event; those behind see it when read by id, and hear it once they come this close.
QUEUE_EVENTS_WITHIN = 20


def task_seed(requested: object, task_id: str, first_index: int) -> int:
    """The writer's seed advanced per image, or one derived from the task id: every image of a
    job differs, and a redelivered or retried task draws the same image again."""
    if isinstance(requested, int) and not isinstance(requested, bool):
        return requested + first_index
    return int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:4], "big") % 2**31


def task_event(job: JobRecord, task: TaskRecord) -> GenerationTask:
    """The provider call of `task`: on the job's profile, or on the fallback it moved to
    (that profile's size, options, prompt length and reference images)."""
    assembled = AssembledPrompt.model_validate(job.assembled)
    step = Step.of(task.profile)
    seed = job.options.get("seed")
    if step is None:
        profile = ProfileSnapshot.model_validate(job.profile)
        size, source = job.size, job.options
        prompt, negative = assembled.prompt, assembled.negative_prompt
        references = assembled.reference_images
    else:
        profile = step.plan.profile
        size, source = step.plan.size, step.plan.options
        prompt = assembled.prompt[: profile.prompt_max_length]
        negative = assembled.negative_prompt if "negative_prompt" in source else None
        references = assembled.reference_images[: profile.max_reference_images]
    options = {k: v for k, v in source.items() if k not in ("seed", "negative_prompt")}
    return GenerationTask(
        event_id=derived_event_id(job_uuid(job), f"task:{task.id}:{task.attempt}"),
        task_id=task.id,
        job_id=job.id,
        user_id=job.user_id,
        project=job.project,
        profile=profile,
        prompt=prompt,
        negative_prompt=negative,
        size=size,
        n=task.n,
        first_index=task.first_index,
        options=options,
        seed=task_seed(seed, task.id, task.first_index),
        reference_images=references,
        deadline_at=as_utc(job.deadline_at or utcnow()),
        attempt=task.attempt,
    )


def hand_over(txn: Txn, job: JobRecord, tasks: list[TaskRecord], *, new: bool = False) -> None:
    """Tasks of the locked `job`, ready to run (`new` ones not yet written, or a retry
    that is due): straight to their provider's queue when it has no budget, else they wait
    their turn."""
    now = utcnow()
    waiting: set[str] = set()
    for task in tasks:
        if task.provider in txn.budgets:
            task.status = "queued"
            task.queued_at = now
            waiting.add(task.provider)
        else:
            task.status = "pending"
            txn.outbox.add(task_event(job, task), gen_requested(task.provider))
    if new:
        txn.repo.insert_tasks(tasks)
    else:
        txn.repo.save_tasks(tasks)
    for provider in sorted(waiting):
        if admit(txn, provider) == 0:
            # Newcomers may go before jobs already waiting (fair share): those near the
            # front hear their place again. The job itself is announced by its caller.
            _announce_line(txn, provider, {job.id})


def admit(txn: Txn, provider: str) -> int:
    """Hand `provider`'s waiting tasks to its queue while its budget has room, one user at
    a time (`admission`); returns how many went. Any job's tasks: their rows are locked
    (skipping those another transaction holds), their jobs only read."""
    repo, outbox = txn.repo, txn.outbox
    budget = txn.budgets.get(provider)
    if budget is None:
        free = UNLIMITED_BATCH
    else:
        repo.lock_provider(provider)
        free = budget - repo.in_flight(provider)
    if free <= 0:
        return 0
    waiting = repo.waiting_by_user(provider)
    if not waiting:
        return 0
    order = turn_order(waiting, repo.turns(provider))
    shares = allot(order, waiting, free)
    now = utcnow()
    served: dict[str, datetime] = {}
    jobs: dict[str, JobRecord | None] = {}
    handed: list[TaskRecord] = []
    for rank, user in enumerate(user for user in order if user in shares):
        for task in repo.waiting_of_user(provider, user, shares[user]):
            if task.job_id not in jobs:
                jobs[task.job_id] = repo.get_job(task.job_id)
            job = jobs[task.job_id]
            if job is None or JobStatus(job.status) in FINAL_STATUSES:
                task.status = "cancelled"  # its job ended while it waited
            else:
                task.status = "pending"
                outbox.add(task_event(job, task), gen_requested(provider))
                served[user] = now + timedelta(microseconds=rank)
            handed.append(task)
    repo.save_tasks(handed)
    repo.save_turns(provider, served)
    admitted = sum(1 for task in handed if task.status == "pending")
    if budget is not None and admitted:
        _announce_line(txn, provider, {t.job_id for t in handed})
    return admitted


def freed(txn: Txn, was_running: Iterable[TaskRecord]) -> None:
    """Tasks that left their provider's queue (done, failed, waiting to retry, cancelled):
    their calls are free for the next waiting tasks of a provider with a budget."""
    for provider in sorted({t.provider for t in was_running}):
        if provider in txn.budgets:
            admit(txn, provider)


def _announce_line(txn: Txn, provider: str, admitted: set[str]) -> None:
    """After tasks left `provider`'s line, the jobs near its front hear their new place
    (status events; the jobs just admitted already changed)."""
    repo = txn.repo
    positions = line_positions(repo.line(provider), repo.turns(provider))
    near = sorted(
        (place[0], job_id)
        for job_id, place in positions.items()
        if place[0] < QUEUE_EVENTS_WITHIN and job_id not in admitted
    )
    lines = {provider: positions}
    for _, job_id in near:
        job = repo.get_job(job_id)
        if job is not None and JobStatus(job.status) == JobStatus.GENERATING:
            announce(txn, job, lines=lines)
