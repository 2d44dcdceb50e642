"""The audit: one entry per finished job, from the same final status events that settle quotas;
filters, pagination and the summary, over the admin API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.jobs import JobImage, JobStatus
from atelier_contracts.profiles import AuditListQuery, AuditPageReply
from atelier_contracts.subjects import Subject, job_finished
from atelier_contracts.testing import QUERY_TIMEOUT_S
from atelier_messaging import publish_event, query

from .conftest import RunningApp, profile_fields
from .test_quotas import NOON, final_job


async def seed(app: RunningApp) -> dict[str, Any]:
    """Five finished jobs of two users on two profiles, delivered as status events."""
    sketch = await app.service.create_profile(profile_fields(name="Sketch", credit_cost=1))
    paint = await app.service.create_profile(profile_fields(name="Paint", credit_cost=2.5))
    blocked = ErrorInfo.of(ErrorClass.CONTENT_BLOCKED, "moderation_blocked").model_copy(
        update={"stage": "output"}
    )
    jobs = [
        final_job("j1", JobStatus.COMPLETED, count=2, landed=2, profile=sketch, prompt="Red fox"),
        final_job(
            "j2",
            JobStatus.PARTIAL,
            count=4,
            landed=1,
            profile=paint,
            error=ErrorInfo.of(ErrorClass.TIMEOUT),
            prompt="Blue whale",
            finished=NOON + timedelta(hours=1),
        ),
        final_job(
            "j3",
            JobStatus.FAILED,
            count=1,
            landed=0,
            profile=paint,
            error=blocked,
            user_id="bob",
            prompt="Something forbidden",
            finished=NOON + timedelta(days=1),
        ),
        final_job(
            "j4",
            JobStatus.COMPLETED,
            count=1,
            landed=1,
            profile=paint,
            user_id="bob",
            prompt="A red door",
            finished=NOON + timedelta(days=2),
        ),
        final_job("j5", JobStatus.CANCELLED, count=2, landed=0, profile=sketch, prompt="Nope"),
    ]
    # Through the broker, as dispatch publishes outcomes: each final status twice (a redelivery
    # must not count twice), and a non-final one, which profiles would never be sent, ignored.
    generating = final_job("j0", JobStatus.GENERATING, count=1, landed=0, profile=sketch)
    for event in [generating, *jobs, *jobs]:
        await publish_event(app.broker, event, job_finished("alpha", event.job.id))
    return {"sketch": sketch, "paint": paint}


async def audits(app: RunningApp, **params: Any) -> dict[str, Any]:
    response = await app.client.get("/admin/v1/audits", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(page: dict[str, Any]) -> list[str]:
    return [item["job_id"] for item in page["items"]]


async def test_every_outcome_is_recorded_once_with_what_was_sent(running_app: RunningApp) -> None:
    profiles = await seed(running_app)
    page = await audits(running_app)
    assert page["total"] == 5
    assert ids(page) == ["j4", "j3", "j2", "j1", "j5"]  # newest first (j1 and j5 tie: by id)
    j3 = next(i for i in page["items"] if i["job_id"] == "j3")
    assert j3["user_id"] == "bob" and j3["project"] == "alpha"
    assert j3["profile_id"] == profiles["paint"].id and j3["profile_name"] == "Paint"
    assert j3["status"] == "failed" and j3["moderated"] is True
    assert j3["error"]["error_class"] == "content_blocked" and j3["error"]["stage"] == "output"
    assert j3["error"]["detail"] == "moderation_blocked"
    assert j3["prompt"] == "Something forbidden. Mara (character): A smuggler."
    assert j3["user_prompt"] == "Something forbidden"
    j2 = next(i for i in page["items"] if i["job_id"] == "j2")
    assert (j2["requested"], j2["landed"], j2["failed"], j2["cost"]) == (4, 1, 3, 2.5)


async def test_filters_combine(running_app: RunningApp) -> None:
    profiles = await seed(running_app)
    assert ids(await audits(running_app, user="bob")) == ["j4", "j3"]
    assert ids(await audits(running_app, profile=profiles["sketch"].id)) == ["j1", "j5"]
    assert ids(await audits(running_app, status="completed")) == ["j4", "j1"]
    assert ids(await audits(running_app, error_class="content_blocked")) == ["j3"]
    assert ids(await audits(running_app, q="RED")) == ["j4", "j1"]
    assert ids(await audits(running_app, q="smuggler", user="alice", status="partial")) == ["j2"]
    day_two = (NOON + timedelta(days=1)).isoformat()
    assert ids(await audits(running_app, since=day_two)) == ["j4", "j3"]
    assert ids(await audits(running_app, until=day_two)) == ["j2", "j1", "j5"]
    # A bound with another offset means the same instant.
    plus_two = (NOON + timedelta(days=1)).astimezone().isoformat()
    assert ids(await audits(running_app, since=plus_two)) == ["j4", "j3"]
    assert ids(await audits(running_app, q="100%_")) == []
    # A backwards window selects nothing (no JSON Schema can say `since` < `until`).
    assert ids(await audits(running_app, since=day_two, until=NOON.isoformat())) == []
    # Only ISO 8601, as documented: a number is not read as a Unix time.
    for bound in ("since", "until"):
        number = await running_app.client.get("/admin/v1/audits", params={bound: "0.5"})
        assert number.status_code == 422
    nul = await running_app.client.get("/admin/v1/audits", params={"q": "a\x00b"})
    assert nul.status_code == 422
    wrong = await running_app.client.get("/admin/v1/audits", params={"status": "queued"})
    assert wrong.status_code == 422


async def test_pagination(running_app: RunningApp) -> None:
    await seed(running_app)
    first = await audits(running_app, limit=2)
    second = await audits(running_app, limit=2, offset=2)
    third = await audits(running_app, limit=2, offset=4)
    assert (first["total"], first["limit"], first["offset"]) == (5, 2, 0)
    assert ids(first) + ids(second) + ids(third) == ["j4", "j3", "j2", "j1", "j5"]
    assert (await audits(running_app, offset=50))["items"] == []


async def test_summary_counts_and_costs(running_app: RunningApp) -> None:
    profiles = await seed(running_app)
    response = await running_app.client.get("/admin/v1/audits/summary")
    assert response.status_code == 200, response.text
    summary = response.json()
    # Landed: j1 2 at 1 credit, j2 and j4 1 each at 2.5.
    assert summary["total"] == {"jobs": 5, "images": 4, "cost": 7.0}
    assert summary["by_status"] == {"completed": 2, "partial": 1, "failed": 1, "cancelled": 1}
    assert summary["by_error_class"] == {"timeout": 1, "content_blocked": 1}
    assert summary["by_user"] == [
        {"user_id": "alice", "jobs": 3, "images": 3, "cost": 4.5},
        {"user_id": "bob", "jobs": 2, "images": 1, "cost": 2.5},
    ]
    assert summary["by_profile"] == [
        {
            "profile_id": profiles["paint"].id,
            "profile_name": "Paint",
            "jobs": 3,
            "images": 2,
            "cost": 5.0,
        },
        {
            "profile_id": profiles["sketch"].id,
            "profile_name": "Sketch",
            "jobs": 2,
            "images": 2,
            "cost": 2.0,
        },
    ]
    only_bob = (
        await running_app.client.get("/admin/v1/audits/summary", params={"user": "bob"})
    ).json()
    assert only_bob["total"] == {"jobs": 2, "images": 1, "cost": 2.5}


async def test_the_audit_records_which_profile_made_each_image_and_why(
    running_app: RunningApp,
) -> None:
    own = await running_app.service.create_profile(profile_fields(name="Own", credit_cost=2))
    spare = await running_app.service.create_profile(profile_fields(name="Spare", credit_cost=1))
    reason = "'Own' (offline) was unavailable after 3 attempts: provider_unavailable"
    images = [
        JobImage(
            media_id=f"m{i}",
            index=i,
            width=64,
            height=64,
            content_type="image/png",
            profile_id=profile.id,
            profile_name=profile.name,
            credit_cost=profile.credit_cost,
            fallback_reason=why,
        )
        for i, (profile, why) in enumerate([(own, None), (spare, reason)])
    ]
    event = final_job("fb", JobStatus.COMPLETED, count=2, landed=2, profile=own, images=images)
    plain = final_job("plain", JobStatus.COMPLETED, count=1, landed=1, profile=own)
    for finished in (event, plain):
        await publish_event(running_app.broker, finished, job_finished("alpha", finished.job.id))

    items = {item["job_id"]: item for item in (await audits(running_app))["items"]}
    assert items["plain"]["fallbacks"] == []
    assert items["fb"]["cost"] == 3  # 2 for its own profile's image, 1 for the spare's
    assert items["fb"]["fallbacks"] == [
        {
            "index": 1,
            "media_id": "m1",
            "profile_id": spare.id,
            "profile_name": "Spare",
            "credit_cost": 1.0,
            "reason": reason,
        }
    ]
    # The same over NATS, for the gateway's Inkweld-compatible audit routes.
    page = await query(
        running_app.broker,
        Subject.AUDITS_LIST,
        AuditListQuery(),
        AuditPageReply,
        timeout=QUERY_TIMEOUT_S,
    )
    [record] = [item for item in page.items if item.job_id == "fb"]
    assert [(f.profile_name, f.reason) for f in record.fallbacks] == [("Spare", reason)]
