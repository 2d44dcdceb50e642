"""Signed completion webhooks (issue 21, ADR 0025): the logic, no broker or HTTP server in sight.

Operators register endpoints (a URL, the events it wants, a project or all of them, a secret).
A job's outcome or an image assignment becomes one `WebhookDelivery` per matching endpoint,
stored in JetStream with an id derived from the event and the endpoint (a redelivered event is
stored once); each delivery is POSTed under the Standard Webhooks specification (`webhook-id`,
`webhook-timestamp`, `webhook-signature`, signed by the `standardwebhooks` package) through
the SSRF guard, and retried with backoff for a day. Every attempt is recorded; an event already
accepted by an endpoint is never sent to it again.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from standardwebhooks.webhooks import Webhook

from atelier_contracts.clock import as_utc, utcnow
from atelier_contracts.envelope import derived_event_id
from atelier_contracts.errors import Conflict, NotFound
from atelier_contracts.jobs import FINAL_STATUSES, JobStatus, JobStatusChanged
from atelier_contracts.media import MediaAssigned
from atelier_contracts.subjects import PROJECT_ID_PATTERN
from atelier_contracts.webhooks import (
    MAX_WEBHOOK_BODY_BYTES,
    WEBHOOK_EVENTS,
    WebhookDelivery,
    WebhookEvent,
)
from atelier_profiles.ports import Publish
from atelier_profiles.webhooks_repository import (
    WebhookAttemptRow,
    WebhookEndpointRow,
    WebhookRepository,
)
from atelier_security import Sealer
from atelier_security.ssrf import (
    FetchError,
    FetchPolicy,
    GuardedFetcher,
    IPNetwork,
    Posted,
    parse_networks,
)

log = logging.getLogger("atelier.profiles.webhooks")

# Standard Webhooks secrets: `whsec_` and base64 of 24 to about 64 random bytes (whole groups,
# so the pattern alone guarantees valid base64).
URL_PATTERN = r"^https?://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?(?:[/?#][!-~]*)?$"
SECRET_PATTERN = r"^whsec_(?:[A-Za-z0-9+/]{4}){8,22}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_OUTCOME_EVENTS: dict[JobStatus, WebhookEvent] = {
    JobStatus.COMPLETED: "job.completed",
    JobStatus.PARTIAL: "job.completed",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}
# A private or loopback origin an operator allowed for one endpoint: everything but the cloud
# metadata addresses (which only an exact single-address entry unlocks; the guard keeps them).
_EVERYWHERE = ("0.0.0.0/0", "::/0")


class WebhookEndpointIn(BaseModel):
    """An endpoint as an operator registers it."""

    # Values of the wrong JSON type are refused, not coerced (`0` is not `false`).
    model_config = ConfigDict(strict=True)

    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=URL_PATTERN,
        description="Where events are POSTed: an https address without user or password (plain "
        "http reaches only addresses the operator allowed). Reached through the SSRF guard at "
        "every attempt, so a refused address shows in the endpoint's attempts",
        examples=["https://backend.example.com/atelier/webhooks"],
    )
    events: list[WebhookEvent] = Field(
        min_length=1, max_length=len(WEBHOOK_EVENTS), examples=[["job.completed", "job.failed"]]
    )
    project: str | None = Field(
        default=None,
        pattern=PROJECT_ID_PATTERN,
        description="Only this project's events; null: every project",
    )
    secret: str | None = Field(
        default=None,
        max_length=100,
        pattern=SECRET_PATTERN,
        description="`whsec_` + base64 of 24 to 64 bytes; left out, one is made and shown once",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )
    allow_private_origin: StrictBool = Field(
        default=False,
        description="Let this endpoint be on a private, loopback or link-local address, and on "
        "plain http (cloud metadata addresses stay refused). Operators only; off by default",
    )
    description: str | None = Field(default=None, max_length=300)

    @field_validator("events")
    @classmethod
    def _distinct(cls, value: list[WebhookEvent]) -> list[WebhookEvent]:
        return list(dict.fromkeys(value))


class WebhookEndpointOut(BaseModel):
    id: str
    url: str
    events: list[WebhookEvent]
    project: str | None
    allow_private_origin: bool
    description: str | None
    created_at: datetime
    delivered: int = Field(description="Events this endpoint accepted")
    pending: int = Field(description="Events still being retried")
    failed: int = Field(description="Events given up on after a day of retries")
    secret: str | None = Field(
        default=None,
        description="Only in the answer to the registration: keep it, it is not shown again",
    )


class WebhookAttemptOut(BaseModel):
    webhook_id: str = Field(description="The `webhook-id` sent: one per event")
    event_type: WebhookEvent
    attempt: int = Field(description="1 for the first try of this event at this endpoint")
    at: datetime
    status_code: int | None = Field(description="The endpoint's HTTP answer; null if none came")
    error: str | None = Field(description="Why it failed, when it did")
    duration_ms: int
    outcome: Literal["delivered", "retrying", "failed"]


class WebhookAttempts(BaseModel):
    attempts: list[WebhookAttemptOut] = Field(description="Newest first")


@dataclass(frozen=True)
class DeliveryPolicy:
    """How deliveries are retried and bounded."""

    retry_schedule_s: tuple[float, ...]
    timeout_s: float = 10.0
    allow: tuple[str, ...] = ()
    max_endpoints: int = 100

    @property
    def max_attempts(self) -> int:
        return len(self.retry_schedule_s) + 1


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _job_data(event: JobStatusChanged) -> dict[str, Any]:
    job = event.job
    error = job.error
    return {
        "job_id": job.id,
        "project": job.project,
        "user_id": job.user_id,
        "status": job.status.value,
        "profile_id": job.profile_id,
        "provider": job.provider,
        "model": job.model,
        "count": job.count,
        "landed": job.progress.landed,
        "failed": job.progress.failed,
        "images": [
            {
                "media_id": image.media_id,
                "index": image.index,
                "width": image.width,
                "height": image.height,
                "content_type": image.content_type,
            }
            for image in job.images
        ],
        # What the writer is told, with a block's stage, category and input; the provider's
        # own detail stays in the admin audit.
        "error": error.model_dump(mode="json", exclude={"detail"}) if error else None,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.updated_at.isoformat(),
    }


def _assignment_data(event: MediaAssigned) -> dict[str, Any]:
    return {
        "media_id": event.media_id,
        "project": event.project,
        "target": event.target,
        "element_id": event.element_id,
        "assigned_by": event.assigned_by,
    }


class WebhookService:
    def __init__(
        self,
        repository: WebhookRepository,
        sealer: Sealer,
        publish: Publish[WebhookDelivery],
        policy: DeliveryPolicy,
        *,
        guard: GuardedFetcher | None = None,
        private_guard: GuardedFetcher | None = None,
    ) -> None:
        self.repository = repository
        self.sealer = sealer
        self.publish = publish
        self.policy = policy
        self.guard = guard or GuardedFetcher(
            FetchPolicy(allow=_networks(policy.allow), timeout_s=policy.timeout_s)
        )
        self.private_guard = private_guard or GuardedFetcher(
            FetchPolicy(allow=_networks(_EVERYWHERE), timeout_s=policy.timeout_s)
        )

    # -- the admin API ---------------------------------------------------------------------------

    async def register(self, body: WebhookEndpointIn) -> WebhookEndpointOut:
        if await self.repository.count_endpoints() >= self.policy.max_endpoints:
            raise Conflict(
                f"At most {self.policy.max_endpoints} webhook endpoints may be registered "
                "(ATELIER_PROFILES_WEBHOOK_MAX_ENDPOINTS); delete one first."
            )
        secret = body.secret or new_secret()
        endpoint_id = f"we_{uuid4().hex[:24]}"
        row = WebhookEndpointRow(
            id=endpoint_id,
            url=body.url,
            project=body.project,
            events=list(body.events),
            sealed_secret=self.sealer.seal(_sealing_context(endpoint_id), secret),
            allow_private=body.allow_private_origin,
            description=body.description,
            created_at=utcnow(),
        )
        await self.repository.add_endpoint(row)
        shown = await self._out(row)
        return shown.model_copy(update={"secret": secret})

    async def list_endpoints(self) -> list[WebhookEndpointOut]:
        return [await self._out(row) for row in await self.repository.endpoints()]

    async def get_endpoint(self, endpoint_id: str) -> WebhookEndpointOut:
        return await self._out(await self._endpoint(endpoint_id))

    async def delete_endpoint(self, endpoint_id: str) -> None:
        if not await self.repository.delete_endpoint(endpoint_id):
            raise NotFound(f"No webhook endpoint {endpoint_id!r}.")

    async def attempts(self, endpoint_id: str, limit: int) -> WebhookAttempts:
        await self._endpoint(endpoint_id)
        rows = await self.repository.attempts(endpoint_id, limit)
        return WebhookAttempts(
            attempts=[
                WebhookAttemptOut.model_validate(
                    {**row.model_dump(), "at": as_utc(row.at)}, from_attributes=True
                )
                for row in rows
            ]
        )

    async def _endpoint(self, endpoint_id: str) -> WebhookEndpointRow:
        row = await self.repository.endpoint(endpoint_id)
        if row is None:
            raise NotFound(f"No webhook endpoint {endpoint_id!r}.")
        return row

    async def _out(self, row: WebhookEndpointRow) -> WebhookEndpointOut:
        counts = await self.repository.counts(row.id)
        return WebhookEndpointOut.model_validate(
            {
                **row.model_dump(),
                "allow_private_origin": row.allow_private,
                "created_at": as_utc(row.created_at),
                **counts,
            }
        )

    # -- fan-out -----------------------------------------------------------------------------------

    async def job_finished(self, event: JobStatusChanged) -> int:
        """jobs.finished: a delivery for each endpoint that wants this outcome."""
        if event.job.status not in FINAL_STATUSES:
            return 0
        kind = _OUTCOME_EVENTS[event.job.status]
        return await self._fan_out(
            kind, event.job.project, event.event_id, event.occurred_at, _job_data(event)
        )

    async def media_assigned(self, event: MediaAssigned) -> int:
        return await self._fan_out(
            "media.assigned",
            event.project,
            event.event_id,
            event.occurred_at,
            _assignment_data(event),
        )

    async def _fan_out(
        self,
        kind: WebhookEvent,
        project: str,
        source: UUID,
        occurred_at: datetime,
        data: dict[str, Any],
    ) -> int:
        # An endpoint hears what happened after it was registered, not the streams' history.
        endpoints = [
            row
            for row in await self.repository.endpoints()
            if kind in row.events
            and row.project in (None, project)
            and as_utc(row.created_at) <= occurred_at
        ]
        if not endpoints:
            return 0
        body = json.dumps(
            {"type": kind, "timestamp": occurred_at.isoformat(), "data": data},
            separators=(",", ":"),
        )
        if len(body.encode()) > MAX_WEBHOOK_BODY_BYTES:  # never with today's payloads
            log.error("webhook body too large; not sent", extra={"type": kind, "source": source})
            return 0
        for row in endpoints:
            await self.publish(
                WebhookDelivery(
                    # Derived from the event and the endpoint: a redelivered event republishes
                    # the same id, which JetStream stores once.
                    event_id=derived_event_id(source, f"webhook:{row.id}"),
                    endpoint_id=row.id,
                    webhook_id=f"msg_{source}",
                    event_type=kind,
                    body=body,
                )
            )
        return len(endpoints)

    # -- delivery ----------------------------------------------------------------------------------

    async def deliver(self, delivery: WebhookDelivery, attempt: int) -> float | None:
        """One attempt at `delivery` (`attempt` counts from 1). Returns the delay before the next
        attempt, or None when done: accepted (now or before), given up on, or the endpoint is
        gone."""
        row = await self.repository.endpoint(delivery.endpoint_id)
        if row is None:
            return None
        status = await self.repository.message_status(row.id, delivery.webhook_id)
        if status in ("delivered", "failed"):
            return None  # a redelivered message: the endpoint already had its answer
        secret = self.sealer.open(_sealing_context(row.id), row.sealed_secret)
        sent_at = utcnow()
        signature = Webhook(secret).sign(delivery.webhook_id, sent_at, delivery.body)
        headers = {
            "content-type": "application/json",
            "user-agent": "Atelier-Webhooks/1",
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature,
        }
        guard = self.private_guard if row.allow_private else self.guard
        started = time.monotonic()
        answer: Posted | None = None
        error: str | None = None
        try:
            answer = await guard.post(row.url, delivery.body.encode(), headers)
        except FetchError as exc:
            error = exc.reason
        duration_ms = int((time.monotonic() - started) * 1000)
        accepted = answer is not None and 200 <= answer.status_code < 300
        if answer is not None and not accepted:
            error = f"HTTP {answer.status_code}: {answer.body[:200]}".strip()
        last = attempt >= self.policy.max_attempts
        outcome = "delivered" if accepted else ("failed" if last else "retrying")
        await self.repository.record_attempt(
            WebhookAttemptRow(
                endpoint_id=row.id,
                webhook_id=delivery.webhook_id,
                event_type=delivery.event_type,
                attempt=attempt,
                at=sent_at,
                status_code=answer.status_code if answer is not None else None,
                error=error[:500] if error else None,
                duration_ms=duration_ms,
                outcome=outcome,
            ),
            {"delivered": "delivered", "failed": "failed"}.get(outcome, "pending"),
            created_at=delivery.occurred_at,
        )
        if outcome != "retrying":
            if outcome == "failed":
                log.warning(
                    "webhook given up after its retries",
                    extra={"endpoint_id": row.id, "webhook_id": delivery.webhook_id},
                )
            return None
        return self.policy.retry_schedule_s[attempt - 1]


def _sealing_context(endpoint_id: str) -> str:
    return f"webhook:{endpoint_id}"


def _networks(entries: Sequence[str]) -> tuple[IPNetwork, ...]:
    return parse_networks(entries)
