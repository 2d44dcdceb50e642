"""`POST /v1/context/preview` against fake profiles and context services on the in-memory broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from faststream.nats import NatsBroker, TestNatsBroker
from gateway_testkit import (
    ALL_SERVICES,
    Harness,
    World,
    auth,
    make_profile,
    make_token,
    register_fakes,
    storage_app,
    test_settings,
)

from atelier_contracts.jobs import (
    ContextPreviewQuery,
    ContextPreviewReply,
    ExcludedImage,
    ReferenceImagePreview,
)
from atelier_contracts.profiles import GenerationSettings
from atelier_contracts.subjects import Subject
from atelier_gateway.main import create_app

VALID: dict[str, Any] = {
    "project": "alpha",
    "profile_id": "sketch",
    "prompt": "A lighthouse in a storm",
    "context": {
        "elements": [
            {
                "id": "e1",
                "name": "Mara",
                "type": "character",
                "description": "A smuggler",
                "image": {"media_id": "m1"},
            },
            {"id": "e2", "name": "Port", "image": {"url": "https://example.org/port.png"}},
        ]
    },
    "target": {"kind": "cover"},
}

REPLY = ContextPreviewReply(
    prompt="A lighthouse in a storm\n\nContext:\nMara (character): A smuggler.",
    elements_used=["e1"],
    notes=["Port: nothing selected to send."],
    reference_images=[
        ReferenceImagePreview(
            element_id="e1",
            source="media",
            media_id="m1",
            content_type="image/png",
            width=512,
            height=384,
            size_bytes=120_000,
        )
    ],
    excluded_images=[ExcludedImage(element_id="e2", reason="Over the maximum.")],
)


@asynccontextmanager
async def gateway_with_context(
    world: World | None = None, *, context: bool = True
) -> AsyncIterator[tuple[Harness, list[ContextPreviewQuery]]]:
    world = world or World()
    app = create_app(test_settings(), media_transport=httpx.MockTransport(storage_app))
    broker: NatsBroker = app.state.broker
    register_fakes(broker, world, ALL_SERVICES)
    asked: list[ContextPreviewQuery] = []
    if context:

        @broker.subscriber(Subject.CONTEXT_PREVIEW, queue="context")
        async def preview(query: ContextPreviewQuery) -> ContextPreviewReply:
            asked.append(query)
            return REPLY

    async with (
        TestNatsBroker(broker),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield Harness(client, world, broker, app), asked


def _error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_preview_answers_the_prompt_and_reference_images() -> None:
    async with gateway_with_context() as (gw, asked):
        response = await gw.client.post(
            "/v1/context/preview",
            json={**VALID, "size": "512x512", "options": {"quality": "high"}},
            headers=auth(make_token("alice", ["alpha"])),
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "prompt": REPLY.prompt,
            "negative_prompt": None,
            "elements_used": ["e1"],
            "notes": ["Port: nothing selected to send."],
            "reference_images": [
                {
                    "element_id": "e1",
                    "source": "media",
                    "media_id": "m1",
                    "content_type": "image/png",
                    "width": 512,
                    "height": 384,
                    "size_bytes": 120_000,
                    "style": False,
                }
            ],
            "excluded_images": [
                {
                    "element_id": "e2",
                    "reason": "Over the maximum.",
                    "media_id": None,
                    "style": False,
                }
            ],
            "style": None,
        }
        [query] = asked
        # The context service gets what a job would carry: the resolved request.
        assert (query.user_id, query.project, query.size, query.count) == (
            "alice",
            "alpha",
            "512x512",
            1,
        )
        assert query.profile.id == "sketch" and query.profile.max_reference_images == 2
        assert query.options == {"quality": "high", "guidance": 7.5, "transparent": False}
        assert [e.id for e in query.context.elements] == ["e1", "e2"]
        assert query.target.kind == "cover"
        # Nothing is queued.
        assert gw.world.published == []


INVALID: list[tuple[dict[str, Any], int, str]] = [
    ({"profile_id": "nope"}, 422, "unknown_profile"),
    ({"profile_id": "off"}, 422, "profile_disabled"),
    ({"size": "640x480"}, 422, "size_not_allowed"),
    ({"count": 3}, 422, "count_not_allowed"),
    ({"prompt": "x" * 101}, 422, "prompt_too_long"),
    ({"options": {"quality": "ultra"}}, 422, "invalid_option"),
    ({"project": "beta"}, 403, "project_not_granted"),
    ({"target": {"kind": "element"}}, 422, "invalid_input"),
    ({"context": {"elements": [{"id": "e1", "name": "M", "image": {}}]}}, 422, "invalid_input"),
]


@pytest.mark.parametrize(("change", "status", "code"), INVALID)
async def test_preview_is_validated_like_a_generation(
    change: dict[str, Any], status: int, code: str
) -> None:
    world = World(profiles=[make_profile(), make_profile(id="off", name="Off", enabled=False)])
    async with gateway_with_context(world) as (gw, asked):
        response = await gw.client.post(
            "/v1/context/preview", json={**VALID, **change}, headers=auth()
        )
        assert _error(response) == (status, code)
        assert asked == []


async def test_preview_while_generation_is_off_is_403() -> None:
    world = World(settings=GenerationSettings(enabled=False, reason="Budget used up."))
    async with gateway_with_context(world) as (gw, asked):
        response = await gw.client.post("/v1/context/preview", json=VALID, headers=auth())
        assert _error(response) == (403, "generation_disabled")
        assert asked == []


async def test_preview_needs_a_token() -> None:
    async with gateway_with_context() as (gw, _):
        response = await gw.client.post("/v1/context/preview", json=VALID)
        assert response.status_code == 401


async def test_a_silent_context_service_is_503() -> None:
    async with gateway_with_context(context=False) as (gw, _):
        response = await gw.client.post("/v1/context/preview", json=VALID, headers=auth())
        assert _error(response) == (503, "unavailable")
        assert "context service" in response.json()["error"]["message"]
