"""Audits: the app's filters as an audit query; records and statistics as the app shows them."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from atelier_contracts.errors import ErrorClass, InvalidInput
from atelier_contracts.profiles import (
    AuditListQuery,
    AuditPageReply,
    AuditRecord,
    AuditSummaryReply,
)
from atelier_contracts.receipts import JobReceipt
from atelier_gateway.inkweld.errors import validation_message
from atelier_gateway.inkweld.models import (
    AuditReceipt,
    AuditReceiptLine,
    ImageAuditStats,
    ImageGenerationAudit,
    PaginatedImageAudits,
    ProfileUsage,
    UserUsage,
)


def _date(name: str, value: str | None) -> datetime | None:
    if value is None or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name}: {value!r} is not an ISO 8601 date.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _text(name: str, value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise InvalidInput(f"{name}: must not contain NUL characters.")
    return value or None


def audit_query(
    *,
    user_id: str | None = None,
    profile_id: str | None = None,
    status: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    search: str | None = None,
    page: int = 1,
    limit: int = 50,
) -> AuditListQuery:
    """The app's filters: `success` is a job that completed, `moderated` one the provider
    refused (content blocked); `endDate` is inclusive to the second given."""
    end = _date("endDate", end_date)
    try:
        return AuditListQuery(
            user_id=_text("userId", user_id),
            profile_id=_text("profileId", profile_id),
            status="completed" if status == "success" else None,
            error_class=ErrorClass.CONTENT_BLOCKED.value if status == "moderated" else None,
            since=_date("startDate", start_date),
            until=end + timedelta(seconds=1) if end is not None else None,
            text=_text("search", search),
            limit=limit,
            offset=(page - 1) * limit,
        )
    except ValidationError as exc:
        raise InvalidInput(validation_message(exc)) from exc


def audit_receipt(receipt: JobReceipt) -> AuditReceipt:
    return AuditReceipt(
        images=[
            AuditReceiptLine.model_validate(
                {**line.model_dump(), "mediaId": line.media_id, "errorClass": line.error_class}
            )
            for line in receipt.images
        ],
        chargedImages=receipt.charged_images,
        notChargedImages=receipt.not_charged_images,
        creditsReserved=receipt.credits_reserved,
        creditsCharged=receipt.credits_charged,
        creditsRefunded=receipt.credits_refunded,
    )


def _not_charged(receipt: JobReceipt | None) -> list[str]:
    """`image 2 not charged: the provider refused it at the output stage.`, one an image."""
    if receipt is None:
        return []
    return [
        f"image {line.index + 1} not charged: "
        + line.reason.removeprefix("Not charged: ").rstrip(".")
        for line in receipt.images
        if not line.charged
    ]


def inkweld_audit(record: AuditRecord) -> ImageGenerationAudit:
    """`moderated` when the provider refused; otherwise `success`, with what really happened in
    `message` when the job did not simply complete (the app knows no other outcome), which
    images a fallback profile made and which were not charged, and why (the app's audit has no
    field for either). The whole receipt rides along as `receipt`, Atelier's addition."""
    error = record.error.message if record.error is not None else None
    if record.moderated or record.status == "completed":
        message = error
    else:
        message = f"{record.status}: {record.landed} of {record.requested} images landed" + (
            f"; {error}" if error else ""
        )
    fell_back = [
        f"image {item.index + 1} made by {item.profile_name or item.profile_id or 'a fallback'!r}"
        + (f" ({item.reason})" if item.reason else "")
        for item in record.fallbacks
    ]
    noted = [*fell_back, *_not_charged(record.receipt)]
    if noted:
        message = "; ".join([*([message] if message else []), *noted])
    return ImageGenerationAudit(
        id=record.job_id,
        userId=record.user_id,
        username=None,  # Atelier knows users by token subject only
        profileId=record.profile_id,
        profileName=record.profile_name,
        prompt=record.prompt,
        referenceImageUrls=None,
        outputImageUrls=None,
        creditCost=record.cost,
        status="moderated" if record.moderated else "success",
        message=message,
        createdAt=record.finished_at,
        receipt=audit_receipt(record.receipt) if record.receipt is not None else None,
    )


def audit_page(reply: AuditPageReply, *, page: int, limit: int) -> PaginatedImageAudits:
    return PaginatedImageAudits(
        audits=[inkweld_audit(record) for record in reply.items],
        total=reply.total,
        page=page,
        limit=limit,
        totalPages=math.ceil(reply.total / limit),
    )


def audit_stats(summary: AuditSummaryReply) -> ImageAuditStats:
    return ImageAuditStats(
        totalRequests=summary.total.jobs,
        totalCredits=summary.total.cost,
        successCount=summary.by_status.get("completed", 0),
        moderatedCount=summary.by_error_class.get(ErrorClass.CONTENT_BLOCKED.value, 0),
        byProfile=[
            ProfileUsage(profileName=t.profile_name, count=t.jobs, credits=t.cost)
            for t in summary.by_profile
        ],
        byUser=[
            UserUsage(userId=t.user_id, username=None, count=t.jobs, credits=t.cost)
            for t in summary.by_user
        ],
    )
