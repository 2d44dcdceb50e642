"""Every NATS subject Atelier uses, declared once (ADR 0019): its payload (and reply), how it
travels (a JetStream event, a core-NATS notice, a request/reply), its stream, who publishes it and
who receives it, with which durable consumer or queue group.

`subjects.py` keeps the typed names code uses (`Subject`, `Durable`, the subject builders); a
test holds the two to each other (every `Subject` and every `Durable` is declared here exactly
once). The JSON Schema export (`export.py`), the services' AsyncAPI documents (their declared
publishers, and the subscriptions FastStream cannot see) and the subject table of
`docs/api/README.md` are derived from `CHANNELS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from atelier_contracts import generation, jobs, media, profiles, staging, style, webhooks
from atelier_contracts.subjects import (
    JOBS_STREAM,
    MEDIA_STREAM,
    PROFILES_STREAM,
    RESULTS_STREAM,
    STATUS_STREAM,
    TASKS_STREAM,
    WEBHOOKS_STREAM,
    Durable,
    StreamSpec,
    Subject,
)

Service = Literal["gateway", "profiles", "context", "dispatch", "media", "workers"]
Kind = Literal["event", "notice", "request"]


@dataclass(frozen=True)
class Receiver:
    """One service's way of receiving a subject."""

    service: Service
    durable: str | None = None  # a JetStream durable pull consumer, shared by the replicas
    queue: str | None = None  # a core-NATS queue group: one replica answers
    # Received outside FastStream (nats-py directly), so absent from its generated document:
    # the gateway's per-watcher status subscriptions.
    direct: bool = False
    note: str = ""


@dataclass(frozen=True)
class Channel:
    address: str  # the subject, `{name}` for a token that varies (a project, a job, a provider)
    payload: type[BaseModel]
    kind: Kind
    publishers: tuple[Service, ...]
    receivers: tuple[Receiver, ...]
    summary: str
    stream: StreamSpec | None = None
    reply: type[BaseModel] | None = None

    @property
    def subject_pattern(self) -> str:
        """The address as a NATS subscription pattern (`{…}` tokens as `*`)."""
        return ".".join("*" if t.startswith("{") else t for t in self.address.split("."))


def _event(
    address: str,
    payload: type[BaseModel],
    stream: StreamSpec,
    publishers: tuple[Service, ...],
    receivers: tuple[Receiver, ...],
    summary: str,
) -> Channel:
    return Channel(address, payload, "event", publishers, receivers, summary, stream=stream)


def _request(
    address: str,
    payload: type[BaseModel],
    reply: type[BaseModel],
    publishers: tuple[Service, ...],
    answerer: Service,
    summary: str,
) -> Channel:
    return Channel(
        address,
        payload,
        "request",
        publishers,
        (Receiver(answerer, queue=answerer),),
        summary,
        reply=reply,
    )


CHANNELS: tuple[Channel, ...] = (
    # -- a job's path (ADR 0018) ----------------------------------------------------------------
    _event(
        Subject.JOBS_REQUESTED,
        jobs.JobRequested,
        JOBS_STREAM,
        ("gateway",),
        (
            Receiver("context", Durable.CONTEXT_JOBS, note="assembles the prompt"),
            Receiver("dispatch", Durable.DISPATCH_JOBS_REQUESTED, note="records the job"),
        ),
        "A request that passed validation; the 202 means it is stored.",
    ),
    _event(
        Subject.JOBS_ENRICHED,
        jobs.JobEnriched,
        JOBS_STREAM,
        ("context",),
        (Receiver("dispatch", Durable.DISPATCH_JOBS_ENRICHED, note="splits into tasks"),),
        "The assembled prompt and staged reference images of a job.",
    ),
    _event(
        "gen.{provider}.requested",
        generation.GenerationTask,
        TASKS_STREAM,
        ("dispatch",),
        (Receiver("workers", "worker-{provider}", note="one durable per provider"),),
        "One provider call: the work queue of that provider's workers.",
    ),
    Channel(
        Subject.GEN_STARTED,
        generation.GenerationStarted,
        "notice",
        ("workers",),
        (),
        "A worker began a provider call; not stored, nothing waits for it (benchmarks listen).",
    ),
    _event(
        Subject.GEN_PROGRESS,
        generation.GenerationProgress,
        RESULTS_STREAM,
        ("workers",),
        (Receiver("dispatch", Durable.DISPATCH_GEN_PROGRESS, note="becomes a status event"),),
        "A provider's own progress of a running task, at most about one a second.",
    ),
    _event(
        Subject.GEN_COMPLETED,
        generation.GenerationCompleted,
        RESULTS_STREAM,
        ("workers",),
        (Receiver("media", Durable.MEDIA_GEN_COMPLETED, note="lands the images"),),
        "A task's images, written where they stay in the media bucket.",
    ),
    _event(
        Subject.GEN_FAILED,
        generation.GenerationFailed,
        RESULTS_STREAM,
        ("workers",),
        (Receiver("dispatch", Durable.DISPATCH_GEN_FAILED, note="retries or settles"),),
        "A task that failed, with a normalized error class.",
    ),
    _event(
        Subject.MEDIA_LANDED,
        media.MediaLanded,
        MEDIA_STREAM,
        ("media",),
        (Receiver("dispatch", Durable.DISPATCH_MEDIA_LANDED, note="records the images"),),
        "Images checked, thumbnailed and recorded in the project's library.",
    ),
    _event(
        "jobs.status.{project}.{job_id}",
        jobs.JobStatusChanged,
        STATUS_STREAM,
        ("dispatch",),
        (
            Receiver(
                "gateway",
                direct=True,
                note="one subscription per watcher (SSE): jobs.*.*.{job_id} live, "
                "jobs.*.{project}.{job_id} replayed, jobs.*.{project}.* for a project",
            ),
        ),
        "A change of a job a person sees: being made, an image landed, progress.",
    ),
    _event(
        "jobs.finished.{project}.{job_id}",
        jobs.JobStatusChanged,
        STATUS_STREAM,
        ("dispatch",),
        (
            Receiver(
                "profiles",
                Durable.PROFILES_JOB_OUTCOMES,
                note="settles credits, audits, fans out webhooks",
            ),
            Receiver("context", Durable.CONTEXT_JOBS_FINISHED, note="deletes staged images"),
            Receiver("gateway", direct=True, note="watchers hear the outcome here"),
        ),
        "A job's outcome, once.",
    ),
    # -- beside the path --------------------------------------------------------------------------
    _event(
        Subject.MEDIA_ASSIGNED,
        media.MediaAssigned,
        MEDIA_STREAM,
        ("gateway",),
        (
            Receiver("media", Durable.MEDIA_ASSIGNED, note="records the cover or element image"),
            Receiver(
                "profiles", Durable.WEBHOOKS_MEDIA_ASSIGNED, note="webhooks: one per endpoint"
            ),
        ),
        "A writer chose a landed image as the cover or an element's image.",
    ),
    _event(
        Subject.WEBHOOKS_DELIVER,
        webhooks.WebhookDelivery,
        WEBHOOKS_STREAM,
        ("profiles",),
        (
            Receiver(
                "profiles",
                Durable.WEBHOOKS_DELIVERIES,
                note="POSTs it, signed, retrying with backoff for a day (ADR 0025)",
            ),
        ),
        "An event for one operator-registered webhook endpoint.",
    ),
    Channel(
        Subject.PROFILES_CHANGED,
        profiles.ProfilesChanged,
        "event",
        ("profiles",),
        (
            Receiver("gateway", note="drops its cached catalog"),
            Receiver("workers", note="forgets a changed provider key"),
        ),
        "An admin changed a profile, a key or the switch.",
        stream=PROFILES_STREAM,
    ),
    # -- request/reply ----------------------------------------------------------------------------
    _request(
        Subject.PROFILES_GET,
        profiles.ProfileQuery,
        profiles.ProfileReply,
        ("gateway",),
        "profiles",
        "One profile.",
    ),
    _request(
        Subject.PROFILES_LIST,
        profiles.ProfilesListQuery,
        profiles.ProfilesListReply,
        ("gateway",),
        "profiles",
        "The switch and every profile (the gateway caches it).",
    ),
    _request(
        Subject.PROFILES_CREDENTIALS,
        profiles.CredentialQuery,
        profiles.CredentialReply,
        ("workers",),
        "profiles",
        "A provider's key, sealed for the workers.",
    ),
    _request(
        Subject.QUOTA_RESERVE,
        profiles.QuotaReserveBatch,
        profiles.QuotaReserveBatchReply,
        ("gateway",),
        "profiles",
        "Hold jobs' credits and in-flight budgets before they are queued, in batches (ADR 0016).",
    ),
    _request(
        Subject.QUOTA_RELEASE,
        profiles.QuotaReleaseRequest,
        profiles.QuotaReleaseReply,
        ("gateway",),
        "profiles",
        "Give back a reservation whose job was never queued.",
    ),
    _request(
        Subject.PROFILES_CREATE,
        profiles.ProfileCreateCommand,
        profiles.ProfileCommandReply,
        ("gateway",),
        "profiles",
        "The app's admin pages: create a profile.",
    ),
    _request(
        Subject.PROFILES_REPLACE,
        profiles.ProfileReplaceCommand,
        profiles.ProfileCommandReply,
        ("gateway",),
        "profiles",
        "The app's admin pages: replace a profile.",
    ),
    _request(
        Subject.PROFILES_DELETE,
        profiles.ProfileDeleteCommand,
        profiles.ProfileCommandReply,
        ("gateway",),
        "profiles",
        "The app's admin pages: delete a profile.",
    ),
    _request(
        Subject.AUDITS_LIST,
        profiles.AuditListQuery,
        profiles.AuditPageReply,
        ("gateway",),
        "profiles",
        "A page of the generation audit.",
    ),
    _request(
        Subject.AUDITS_SUMMARY,
        profiles.AuditFilterQuery,
        profiles.AuditSummaryReply,
        ("gateway",),
        "profiles",
        "Totals of the generation audit.",
    ),
    _request(
        Subject.JOBS_GET,
        jobs.JobQuery,
        jobs.JobReply,
        ("gateway", "profiles"),
        "dispatch",
        "One job as the writer sees it, its texts whole (profiles: for the audit of an outcome "
        "whose texts were shortened).",
    ),
    _request(
        Subject.JOBS_LIST,
        jobs.JobListQuery,
        jobs.JobListReply,
        ("gateway",),
        "dispatch",
        "A project's jobs (the media tab's active ones).",
    ),
    _request(
        Subject.JOBS_CANCEL,
        jobs.CancelJobCommand,
        jobs.JobReply,
        ("gateway",),
        "dispatch",
        "Cancel a job; answered with the job after it.",
    ),
    _request(
        Subject.MEDIA_GET,
        media.MediaQuery,
        media.MediaReply,
        ("gateway", "context"),
        "media",
        "One library item with presigned URLs.",
    ),
    _request(
        Subject.MEDIA_LIST,
        media.MediaListQuery,
        media.MediaListReply,
        ("gateway",),
        "media",
        "A page of a project's library.",
    ),
    _request(
        Subject.MEDIA_ASSIGNMENTS,
        media.ProjectAssignmentsQuery,
        media.ProjectAssignmentsReply,
        ("gateway",),
        "media",
        "A project's cover and element images.",
    ),
    _request(
        Subject.MEDIA_UPLOAD_SLOT,
        media.UploadSlotRequest,
        media.UploadSlotReply,
        ("gateway",),
        "media",
        "A presigned PUT for a project file's bytes.",
    ),
    _request(
        Subject.MEDIA_STORE_FILE,
        media.StoreFileCommand,
        media.StoreFileReply,
        ("gateway",),
        "media",
        "Record an uploaded project file (or the cover).",
    ),
    _request(
        Subject.MEDIA_FILES,
        media.ProjectFilesQuery,
        media.ProjectFilesReply,
        ("gateway",),
        "media",
        "A page of a project's files.",
    ),
    _request(
        Subject.MEDIA_FILE,
        media.ProjectFileQuery,
        media.ProjectFileReply,
        ("gateway",),
        "media",
        "One project file with a presigned URL.",
    ),
    _request(
        Subject.MEDIA_MARK_DELIVERED,
        media.MarkDeliveredCommand,
        media.MarkDeliveredReply,
        ("gateway",),
        "media",
        "Images the app took and keeps its own copy of.",
    ),
    _request(
        Subject.CONTEXT_PREVIEW,
        jobs.ContextPreviewQuery,
        jobs.ContextPreviewReply,
        ("gateway",),
        "context",
        "What a request would send to the model, nothing staged.",
    ),
    _request(
        Subject.CONTEXT_INPUT_SLOTS,
        staging.InputSlotsRequest,
        staging.InputSlotsReply,
        ("gateway",),
        "context",
        "Presigned PUTs for the pictures (and a large context) a request carries (ADR 0017).",
    ),
    _request(
        Subject.CONTEXT_STYLE_GET,
        style.StyleQuery,
        style.StyleReply,
        ("gateway",),
        "context",
        "A project's style, its latest version (ADR 0024).",
    ),
    _request(
        Subject.CONTEXT_STYLE_PUT,
        style.StylePutCommand,
        style.StylePutReply,
        ("gateway",),
        "context",
        "Write a project's style as a new version; a stale version is refused (ADR 0024).",
    ),
    _request(
        Subject.QUOTA_ESTIMATE,
        profiles.QuotaEstimateRequest,
        profiles.QuotaEstimateReply,
        ("gateway",),
        "profiles",
        "What a request would reserve, in credits and money, reserving nothing (ADR 0024).",
    ),
)


def channel(address: str) -> Channel:
    found = [c for c in CHANNELS if c.address == address]
    if len(found) != 1:
        raise KeyError(f"{address!r} is declared {len(found)} times in atelier_contracts.registry")
    return found[0]


def published_by(service: Service) -> tuple[Channel, ...]:
    return tuple(c for c in CHANNELS if service in c.publishers)


def received_by(service: Service) -> tuple[tuple[Channel, Receiver], ...]:
    return tuple((c, r) for c in CHANNELS for r in c.receivers if r.service == service)


def event_models() -> dict[str, type[BaseModel]]:
    """The payload of every event and notice, by its `type` (one JSON Schema each)."""
    models: dict[str, type[BaseModel]] = {}
    for c in CHANNELS:
        if c.kind != "request":
            models[str(c.payload.model_fields["type"].default)] = c.payload
    return models
