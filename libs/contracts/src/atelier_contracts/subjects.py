"""Every NATS subject, stream and durable consumer name, defined once.

Handlers never type a subject string: they take it from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Subject(StrEnum):
    # Durable events (JetStream).
    JOBS_REQUESTED = "jobs.requested"
    JOBS_ENRICHED = "jobs.enriched"
    # Core NATS only (not stored): a worker began a provider call. An observation for
    # dashboards and benchmarks; dispatch shows "generating" from the moment it hands the task
    # to the provider's queue, so nothing durable waits for it.
    GEN_STARTED = "gen.started"
    GEN_COMPLETED = "gen.completed"
    GEN_FAILED = "gen.failed"
    GEN_PROGRESS = "gen.progress"  # provider progress of a running task, throttled by the worker
    MEDIA_LANDED = "media.landed"
    MEDIA_ASSIGNED = "media.assigned"
    PROFILES_CHANGED = "profiles.changed"
    WEBHOOKS_DELIVER = "webhooks.deliver"  # one event for one operator endpoint (ADR 0025)
    # Queries (core NATS request/reply).
    PROFILES_GET = "profiles.query.get"
    PROFILES_LIST = "profiles.query.list"
    PROFILES_CREDENTIALS = "profiles.query.credentials"
    QUOTA_RESERVE = "profiles.query.quota_reserve"
    QUOTA_RELEASE = "profiles.query.quota_release"
    # Admin commands and audit reads for the gateway's Inkweld-compatible routes (ADR 0008).
    PROFILES_CREATE = "profiles.command.create"
    PROFILES_REPLACE = "profiles.command.replace"
    PROFILES_DELETE = "profiles.command.delete"
    AUDITS_LIST = "profiles.query.audits"
    AUDITS_SUMMARY = "profiles.query.audit_summary"
    JOBS_GET = "jobs.query.get"
    JOBS_CANCEL = "jobs.command.cancel"
    JOBS_LIST = "jobs.query.list"
    MEDIA_GET = "media.query.get"
    MEDIA_LIST = "media.query.list"
    MEDIA_ASSIGNMENTS = "media.query.assignments"
    # Project files of the app's media sync and covers (docs/inkweld.md).
    MEDIA_UPLOAD_SLOT = "media.command.upload_slot"
    MEDIA_STORE_FILE = "media.command.store_file"
    MEDIA_MARK_DELIVERED = "media.command.mark_delivered"
    MEDIA_FILES = "media.query.files"
    MEDIA_FILE = "media.query.file"
    CONTEXT_PREVIEW = "context.query.preview"
    CONTEXT_INPUT_SLOTS = "context.command.input_slots"  # ADR 0017
    # A project's style, owned by context (ADR 0024).
    CONTEXT_STYLE_GET = "context.query.style"
    CONTEXT_STYLE_PUT = "context.command.style"
    QUOTA_ESTIMATE = "profiles.query.quota_estimate"  # ADR 0024: what a request would reserve


# Project ids become one subject token, so they are restricted to token-safe characters.
PROJECT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"
PROVIDER_PATTERN = r"^[a-z0-9-]{1,40}$"
_PROJECT_RE = re.compile(PROJECT_ID_PATTERN)


def gen_requested(provider: str) -> str:
    """The work queue of one provider's workers."""
    return f"gen.{provider}.requested"


def job_status(project: str, job_id: str) -> str:
    """Status events of one job; `job_status_of_project` subscribes to a whole project."""
    if not _PROJECT_RE.match(project):
        raise ValueError(f"project id {project!r} is not subject-safe")
    return f"jobs.status.{project}.{job_id}"


def job_status_of_project(project: str) -> str:
    return f"jobs.status.{project}.*"


def job_feed(project: str, job_id: str) -> str:
    """Everything a watcher of one job hears: its status updates and its outcome
    (`jobs.status.…` and `jobs.finished.…`, both in ATELIER_STATUS)."""
    if not _PROJECT_RE.match(project):
        raise ValueError(f"project id {project!r} is not subject-safe")
    return f"jobs.*.{project}.{job_id}"


def job_feed_by_id(job_id: str) -> str:
    """`job_feed` for a watcher that does not know the job's project yet: job ids are unique
    across projects. `job_id` must be one subject token (the caller checks)."""
    return f"jobs.*.*.{job_id}"


def project_feed(project: str) -> str:
    """`job_feed` of every job of a project."""
    if not _PROJECT_RE.match(project):
        raise ValueError(f"project id {project!r} is not subject-safe")
    return f"jobs.*.{project}.*"


JOB_STATUS_ALL = "jobs.status.>"


def job_finished(project: str, job_id: str) -> str:
    """The job's final `JobStatusChanged`, published once, on a subject of its own: services
    that only act on outcomes (quota settlement, clean-up) receive one event per job instead of
    every update, and watchers hear it through `job_feed`."""
    if not _PROJECT_RE.match(project):
        raise ValueError(f"project id {project!r} is not subject-safe")
    return f"jobs.finished.{project}.{job_id}"


JOB_FINISHED_ALL = "jobs.finished.>"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    work_queue: bool = False
    max_age_s: float = 7 * 24 * 3600
    duplicate_window_s: float = 120.0
    # "interest": a message is removed once every durable consumer of its subject acked it
    # (ADR 0015); "limits": kept until max_age or the byte limit. A work queue is neither.
    retention: Literal["limits", "interest"] = "limits"

    def __post_init__(self) -> None:
        if self.work_queue and self.retention != "limits":
            raise ValueError(f"{self.name}: a work queue has work-queue retention")


# Interest retention: only the backlog context and dispatch have not handled yet, not a week of
# requests with their pictures.
JOBS_STREAM = StreamSpec(
    "ATELIER_JOBS", (Subject.JOBS_REQUESTED, Subject.JOBS_ENRICHED), retention="interest"
)
TASKS_STREAM = StreamSpec("ATELIER_TASKS", ("gen.*.requested",), work_queue=True)
RESULTS_STREAM = StreamSpec(
    "ATELIER_RESULTS", (Subject.GEN_COMPLETED, Subject.GEN_FAILED, Subject.GEN_PROGRESS)
)
MEDIA_STREAM = StreamSpec("ATELIER_MEDIA", (Subject.MEDIA_LANDED, Subject.MEDIA_ASSIGNED))
# Updates and outcomes in one stream, so a watcher replays a job's whole story from one place;
# outcomes settle credits, so it keeps them as long as the job events.
STATUS_STREAM = StreamSpec("ATELIER_STATUS", (JOB_STATUS_ALL, JOB_FINISHED_ALL))
PROFILES_STREAM = StreamSpec("ATELIER_PROFILES", (Subject.PROFILES_CHANGED,))
# Deliveries are retried for a day (ADR 0025); two days keep a late retry's message.
WEBHOOKS_STREAM = StreamSpec(
    "ATELIER_WEBHOOKS", (Subject.WEBHOOKS_DELIVER,), max_age_s=2 * 24 * 3600
)

ALL_STREAMS: tuple[StreamSpec, ...] = (
    JOBS_STREAM,
    TASKS_STREAM,
    RESULTS_STREAM,
    MEDIA_STREAM,
    STATUS_STREAM,
    PROFILES_STREAM,
    WEBHOOKS_STREAM,
)

# Streams of earlier versions whose subjects moved into another stream: `ensure_streams` deletes
# them before it declares the stream that now holds their subjects (ADR 0018).
RETIRED_STREAMS: tuple[str, ...] = ("ATELIER_FINISHED",)


class Durable(StrEnum):
    """Durable consumer names: processes sharing one durable split its messages."""

    CONTEXT_JOBS = "context-jobs-requested"
    CONTEXT_JOBS_FINISHED = "context-finished-jobs"  # deletes a final job's staged references
    DISPATCH_JOBS_REQUESTED = "dispatch-jobs-requested"
    DISPATCH_JOBS_ENRICHED = "dispatch-jobs-enriched"
    DISPATCH_GEN_FAILED = "dispatch-gen-results-failed"
    DISPATCH_GEN_PROGRESS = "dispatch-gen-results-progress"
    DISPATCH_MEDIA_LANDED = "dispatch-media-landed"
    MEDIA_GEN_COMPLETED = "media-gen-completed"
    MEDIA_ASSIGNED = "media-assigned"  # records covers and element images
    PROFILES_JOB_OUTCOMES = "profiles-finished-jobs"  # settles quotas, writes the audit
    # Webhooks (ADR 0025): assignments fanned out per endpoint (outcomes ride on
    # PROFILES_JOB_OUTCOMES), then each delivery POSTed.
    WEBHOOKS_MEDIA_ASSIGNED = "webhooks-media-assigned"
    WEBHOOKS_DELIVERIES = "webhooks-deliveries"


# JetStream key-value buckets.
CANCELLED_JOBS_BUCKET = "ATELIER_CANCELLED_JOBS"  # written by dispatch, read by workers and media
PROVIDER_HANDLES_BUCKET = "ATELIER_PROVIDER_HANDLES"  # a worker's provider job ids, per task
# Calls each provider may run at once across all workers: set by admins (profiles), followed by
# dispatch, which admits tasks within it (ADR 0020).
PROVIDER_BUDGETS_BUCKET = "ATELIER_PROVIDER_BUDGETS"
# Each project's style, one key a project, written and read by context (ADR 0024).
PROJECT_STYLES_BUCKET = "ATELIER_PROJECT_STYLES"

# JetStream tells us when a message ran out of deliveries; dispatch turns that into a failure.
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"


def worker_durable(provider: str) -> str:
    return f"worker-{provider}"
