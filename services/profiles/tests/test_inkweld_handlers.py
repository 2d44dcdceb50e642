"""The admin commands and audit reads the gateway's Inkweld facade asks for over NATS: the same
service methods as the admin API, refusals answered (not dropped)."""

from __future__ import annotations

from pydantic import BaseModel

from atelier_contracts.jobs import JobStatus
from atelier_contracts.profiles import (
    AuditFilterQuery,
    AuditListQuery,
    AuditPageReply,
    AuditSummaryReply,
    ProfileCommandReply,
    ProfileCreateCommand,
    ProfileDeleteCommand,
    ProfileReplaceCommand,
)
from atelier_contracts.receipts import JobReceipt, ReceiptLine
from atelier_contracts.subjects import Subject, job_finished
from atelier_contracts.testing import QUERY_TIMEOUT_S
from atelier_messaging import publish_event, query

from .conftest import RunningApp, profile_fields
from .test_audit import seed
from .test_quotas import NOON, final_job


async def command(app: RunningApp, subject: Subject, body: BaseModel) -> ProfileCommandReply:
    return await query(app.broker, subject, body, ProfileCommandReply, timeout=QUERY_TIMEOUT_S)


async def test_create_replace_delete_announce_like_the_admin_api(running_app: RunningApp) -> None:
    created = await command(
        running_app,
        Subject.PROFILES_CREATE,
        ProfileCreateCommand(fields=profile_fields(name="Ink"), requested_by="root"),
    )
    assert created.error is None and created.profile is not None
    profile_id = created.profile.id

    replaced = await command(
        running_app,
        Subject.PROFILES_REPLACE,
        ProfileReplaceCommand(
            profile_id=profile_id,
            fields=profile_fields(name="Ink 2", enabled=False),
            requested_by="root",
        ),
    )
    assert replaced.profile is not None and replaced.profile.name == "Ink 2"
    assert not replaced.profile.enabled

    deleted = await command(
        running_app,
        Subject.PROFILES_DELETE,
        ProfileDeleteCommand(profile_id=profile_id, requested_by="root"),
    )
    assert deleted == ProfileCommandReply()
    assert await running_app.service.find_profile(profile_id) is None
    assert [c.action for c in running_app.changes] == ["created", "updated", "deleted"]


async def test_refusals_come_back_with_the_admin_apis_status(running_app: RunningApp) -> None:
    await running_app.service.create_profile(profile_fields(name="Taken"))
    conflict = await command(
        running_app,
        Subject.PROFILES_CREATE,
        ProfileCreateCommand(fields=profile_fields(name="taken"), requested_by="root"),
    )
    assert conflict.error is not None and (conflict.error.status, conflict.error.code) == (
        409,
        "conflict",
    )
    invalid = await command(
        running_app,
        Subject.PROFILES_CREATE,
        ProfileCreateCommand(
            fields=profile_fields(name="Bad", default_size="64x64"), requested_by="root"
        ),
    )
    assert invalid.error is not None and invalid.error.status == 422
    assert "default_size" in invalid.error.message
    missing = await command(
        running_app,
        Subject.PROFILES_DELETE,
        ProfileDeleteCommand(profile_id="nope", requested_by="root"),
    )
    assert missing.error is not None and missing.error.status == 404


async def test_audit_reads(running_app: RunningApp) -> None:
    profiles = await seed(running_app)
    page = await query(
        running_app.broker,
        Subject.AUDITS_LIST,
        AuditListQuery(profile_id=profiles["paint"].id, limit=2),
        AuditPageReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert page.error is None and page.total == 3 and len(page.items) == 2
    blocked = await query(
        running_app.broker,
        Subject.AUDITS_LIST,
        AuditListQuery(error_class="content_blocked"),
        AuditPageReply,
        timeout=QUERY_TIMEOUT_S,
    )
    [entry] = blocked.items
    assert entry.job_id == "j3" and entry.moderated and entry.error is not None
    assert entry.error.stage == "output"

    summary = await query(
        running_app.broker,
        Subject.AUDITS_SUMMARY,
        AuditFilterQuery(),
        AuditSummaryReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert summary.error is None and summary.total.jobs == 5
    assert summary.by_error_class == {"content_blocked": 1, "timeout": 1}

    backwards = await query(
        running_app.broker,
        Subject.AUDITS_LIST,
        AuditListQuery(since=NOON, until=NOON),
        AuditPageReply,
        timeout=QUERY_TIMEOUT_S,
    )
    assert backwards.error is None and backwards.items == []


async def test_an_audit_read_carries_the_jobs_receipt(running_app: RunningApp) -> None:
    sketch = await running_app.service.create_profile(
        profile_fields(name="Sketch", credit_cost=1.5)
    )
    receipt = JobReceipt(
        images=[
            ReceiptLine(index=0, charged=True, credits=1.5, outcome="landed", reason="Charged."),
            ReceiptLine(
                index=1,
                charged=False,
                credits=0,
                outcome="blocked",
                reason="Not charged: the provider refused it at the output stage.",
                error_class="content_blocked",
            ),
        ],
        charged_images=1,
        not_charged_images=1,
        credits_reserved=3,
        credits_charged=1.5,
        credits_refunded=1.5,
    )
    event = final_job("jr", JobStatus.PARTIAL, count=2, landed=1, profile=sketch)
    event.job.receipt = receipt
    older = final_job("jo", JobStatus.COMPLETED, count=1, landed=1, profile=sketch)
    for finished in (event, older):
        await publish_event(running_app.broker, finished, job_finished("alpha", finished.job.id))

    page = await query(
        running_app.broker,
        Subject.AUDITS_LIST,
        AuditListQuery(),
        AuditPageReply,
        timeout=QUERY_TIMEOUT_S,
    )
    by_job = {entry.job_id: entry for entry in page.items}
    assert by_job["jr"].receipt == receipt
    assert by_job["jo"].receipt is None  # a job without one (recorded before receipts)
