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
    GEN_STARTED = "gen.started"
    GEN_COMPLETED = "gen.completed"
    GEN_FAILED = "gen.failed"
    GEN_PROGRESS = "gen.progress"  # provider progress of a running task, throttled by the worker
    MEDIA_LANDED = "media.landed"
    MEDIA_ASSIGNED = "media.assigned"
    PROFILES_CHANGED = "profiles.changed"
    # Queries (core NATS request/reply).
    PROFILES_GET = "profiles.query.get"
    PROFILES_LIST = "profiles.query.list"
    SETTINGS_GET = "profiles.query.settings"
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


JOB_STATUS_ALL = "jobs.status.>"


def job_finished(project: str, job_id: str) -> str:
    """The job's final `JobStatusChanged` once more, on a subject of its own: services that only
    act on outcomes (quota settlement, clean-up) receive one event per job instead of every
    transition."""
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
    "ATELIER_RESULTS",
    (Subject.GEN_STARTED, Subject.GEN_COMPLETED, Subject.GEN_FAILED, Subject.GEN_PROGRESS),
)
MEDIA_STREAM = StreamSpec("ATELIER_MEDIA", (Subject.MEDIA_LANDED, Subject.MEDIA_ASSIGNED))
STATUS_STREAM = StreamSpec("ATELIER_STATUS", (JOB_STATUS_ALL,), max_age_s=24 * 3600)
PROFILES_STREAM = StreamSpec("ATELIER_PROFILES", (Subject.PROFILES_CHANGED,))
# Outcomes settle credits: kept as long as the job events, not the one day of the status feed.
FINISHED_STREAM = StreamSpec("ATELIER_FINISHED", (JOB_FINISHED_ALL,))

ALL_STREAMS: tuple[StreamSpec, ...] = (
    JOBS_STREAM,
    TASKS_STREAM,
    RESULTS_STREAM,
    MEDIA_STREAM,
    STATUS_STREAM,
    PROFILES_STREAM,
    FINISHED_STREAM,
)


class Durable(StrEnum):
    """Durable consumer names: processes sharing one durable split its messages."""

    CONTEXT_JOBS = "context-jobs-requested"
    CONTEXT_JOBS_FINISHED = "context-finished-jobs"  # deletes a final job's staged references
    DISPATCH_JOBS_REQUESTED = "dispatch-jobs-requested"
    DISPATCH_JOBS_ENRICHED = "dispatch-jobs-enriched"
    DISPATCH_RESULTS = "dispatch-gen-results"
    DISPATCH_MEDIA_LANDED = "dispatch-media-landed"
    MEDIA_GEN_COMPLETED = "media-gen-completed"
    MEDIA_ASSIGNED = "media-assigned"  # records covers and element images
    PROFILES_JOB_OUTCOMES = "profiles-finished-jobs"  # settles quotas, writes the audit


# JetStream key-value buckets.
CANCELLED_JOBS_BUCKET = "ATELIER_CANCELLED_JOBS"  # written by dispatch, read by workers and media
PROVIDER_HANDLES_BUCKET = "ATELIER_PROVIDER_HANDLES"  # a worker's provider job ids, per task

# JetStream tells us when a message ran out of deliveries; dispatch turns that into a failure.
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"


def worker_durable(provider: str) -> str:
    return f"worker-{provider}"
