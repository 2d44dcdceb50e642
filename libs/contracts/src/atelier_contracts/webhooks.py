"""Signed completion webhooks (issue 21, ADR 0025): what an operator's endpoint is sent.

The profiles service turns job outcomes and image assignments into one `WebhookDelivery` per
matching endpoint, stored in JetStream (`webhooks.deliver`), and delivers each under the
Standard Webhooks specification, retrying with backoff for a day.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from atelier_contracts.envelope import Event

WebhookEvent = Literal["job.completed", "job.failed", "job.cancelled", "media.assigned"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = (
    "job.completed",
    "job.failed",
    "job.cancelled",
    "media.assigned",
)
# A delivery's body is small (a job's outcome without its long texts); bounded all the same.
MAX_WEBHOOK_BODY_BYTES = 64 * 1024


class WebhookDelivery(Event):
    """One event for one endpoint, to be POSTed until it is accepted or its day is over."""

    type: Literal["webhooks.delivery"] = "webhooks.delivery"
    endpoint_id: str = Field(description="The registered endpoint it goes to")
    webhook_id: str = Field(
        description="The `webhook-id` header: the same for every attempt and redelivery of this "
        "event, so receivers deduplicate on it",
        examples=["msg_1f0c6e1e-4a55-5b4e-9a1d-0c6f1f1b2d3e"],
    )
    event_type: WebhookEvent = Field(examples=["job.completed"])
    body: str = Field(
        max_length=MAX_WEBHOOK_BODY_BYTES,
        description="The exact JSON sent and signed: `{type, timestamp, data}`",
    )
