"""The operators' webhook routes (ADR 0025): `/admin/v1/webhooks`, behind the admin token.

Only operators register endpoints: a URL and a secret decide where Atelier sends what happens in
every project, so the app admins' routes (the gateway's Inkweld facade) have no such command.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from atelier_profiles.api import PREFIX, described_errors
from atelier_profiles.dependencies import Webhooks, require_admin
from atelier_profiles.webhooks import WebhookAttempts, WebhookEndpointIn, WebhookEndpointOut

EndpointId = Annotated[
    str,
    Path(pattern=r"^we_[0-9a-f]{1,40}$", description="The endpoint's id", examples=["we_3f2a"]),
]

router = APIRouter(
    prefix=f"{PREFIX}/webhooks",
    dependencies=[Depends(require_admin)],
    responses=described_errors(e401="The admin token is missing or wrong"),
    tags=["webhooks"],
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register a webhook endpoint",
    description="Events (`job.completed`, `job.failed`, `job.cancelled`, `media.assigned`) "
    "of one project or of all are POSTed to `url`, signed under the Standard Webhooks "
    "specification with `secret` (made when left out, and shown only in this answer), "
    "retried with backoff for a day. The URL is reached through the same SSRF guard as "
    "reference images: private and loopback addresses only with `allow_private_origin`.",
    responses=described_errors(
        e400="The body is not valid JSON (or not UTF-8)",
        e409="As many endpoints as allowed are registered",
        e422="A field breaks a rule; the message names it",
    ),
)
async def register(webhooks: Webhooks, body: WebhookEndpointIn) -> WebhookEndpointOut:
    return await webhooks.register(body)


@router.get("", summary="Every registered webhook endpoint (secrets never shown)")
async def list_endpoints(webhooks: Webhooks) -> list[WebhookEndpointOut]:
    return await webhooks.list_endpoints()


@router.get(
    "/{endpoint_id}",
    summary="One webhook endpoint, with how many events it accepted, awaits and missed",
    responses=described_errors(e404="No such endpoint", e422="The id is malformed"),
)
async def get_endpoint(webhooks: Webhooks, endpoint_id: EndpointId) -> WebhookEndpointOut:
    return await webhooks.get_endpoint(endpoint_id)


@router.delete(
    "/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a webhook endpoint; deliveries still waiting for it are dropped",
    responses=described_errors(e404="No such endpoint", e422="The id is malformed"),
)
async def delete_endpoint(webhooks: Webhooks, endpoint_id: EndpointId) -> Response:
    await webhooks.delete_endpoint(endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{endpoint_id}/attempts",
    summary="The endpoint's delivery attempts, newest first",
    description="Each POST: the event's `webhook-id`, its type, which attempt, when, the "
    "HTTP status (or why none came), how long it took and what followed.",
    responses=described_errors(e404="No such endpoint", e422="The id or limit is malformed"),
)
async def attempts(
    webhooks: Webhooks,
    endpoint_id: EndpointId,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> WebhookAttempts:
    return await webhooks.attempts(endpoint_id, limit)
