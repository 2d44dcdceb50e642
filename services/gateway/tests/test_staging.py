"""Request inputs by reference (ADR 0017): pictures and large contexts are staged through the
context service's slots, the events carry keys, a user can never name a key, and a staging
failure is a 503 that keeps no credits. Fake context, profiles and staging store."""

from __future__ import annotations

import base64
import hashlib
import json
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
    running_gateway,
    storage_app,
    test_settings,
)

from atelier_contracts.jobs import (
    ContextPreviewQuery,
    ContextPreviewReply,
    GenerationContext,
    JobRequested,
)
from atelier_contracts.subjects import Subject
from atelier_gateway.main import create_app

ALICE = auth(make_token("alice", ["alpha"]))
PICTURE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


def data_url(data: bytes = PICTURE, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def body(*elements: dict[str, Any]) -> dict[str, Any]:
    return {
        "project": "alpha",
        "profile_id": "sketch",
        "prompt": "A lighthouse",
        "context": {"elements": list(elements)},
    }


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_pictures_are_staged_under_the_job_and_the_event_carries_keys() -> None:
    world = World()
    elements = [
        {"id": "mara", "name": "Mara", "image": {"data_url": data_url()}},
        {"id": "port", "name": "Port", "image": {"media_id": "m-1"}},
        {
            "id": "hidden",
            "name": "Hidden",
            "image": {"data_url": data_url(b"never stored")},
            "send": {"image": False},
        },
    ]
    async with running_gateway(world) as gw:
        response = await gw.client.post("/v1/generations", json=body(*elements), headers=ALICE)
    assert response.status_code == 202, response.text
    [event] = world.published
    job_id = response.json()["id"]

    # One request for all of the job's slots; only the picture that can be sent is stored.
    [slots] = world.slot_requests
    assert (slots.job_id, slots.count) == (job_id, 1)
    key = f"refs/{job_id}/in/0"
    assert world.staged == {key: (PICTURE, "image/png")}

    mara, port, hidden = (e.image for e in event.context.elements)
    assert mara is not None and mara.staged is not None and mara.data_url is None
    assert mara.staged.model_dump() == {
        "key": key,
        "size_bytes": len(PICTURE),
        "sha256": hashlib.sha256(PICTURE).hexdigest(),
        "content_type": "image/png",
    }
    assert port is not None and port.media_id == "m-1"
    assert hidden is not None and hidden.withheld and hidden.data_url is None
    assert "base64" not in event.model_dump_json()
    # The digest is of the request as the user sent it: a keyed retry is still recognised.
    assert event.request_digest is not None


async def test_a_request_with_nothing_to_stage_asks_nothing() -> None:
    world = World()
    async with running_gateway(world) as gw:
        elements = [{"id": "mara", "name": "Mara", "description": "A smuggler"}]
        response = await gw.client.post("/v1/generations", json=body(*elements), headers=ALICE)
    assert response.status_code == 202
    assert world.slot_requests == [] and world.staged == {}
    assert world.published[0].context.elements[0].description == "A smuggler"
    assert world.published[0].staged_context is None


async def test_a_large_context_is_staged_and_the_event_stays_small() -> None:
    world = World(profiles=[make_profile(max_reference_images=4, prompt_max_length=32_000)])
    elements = [
        {
            "id": f"e{i}",
            "name": f"Element {i}",
            "description": "d" * 20_000,
            "data": {"notes": "n" * 10_000},
            **({"image": {"data_url": data_url()}} if i < 2 else {}),
        }
        for i in range(16)
    ]
    async with running_gateway(world) as gw:
        response = await gw.client.post("/v1/generations", json=body(*elements), headers=ALICE)
    assert response.status_code == 202, response.text
    [event] = world.published
    job_id = response.json()["id"]
    assert len(event.model_dump_json()) < 4096
    assert event.context.elements == []
    assert event.staged_context is not None
    assert event.staged_context.key == f"refs/{job_id}/in/2"  # after the two pictures
    data, content_type = world.staged[event.staged_context.key]
    assert content_type == "application/json"
    assert hashlib.sha256(data).hexdigest() == event.staged_context.sha256
    staged = GenerationContext.model_validate_json(data)
    assert [e.id for e in staged.elements] == [f"e{i}" for i in range(16)]
    assert staged.elements[0].description == "d" * 20_000
    first = staged.elements[0].image
    assert first is not None and first.staged is not None
    assert first.staged.key == f"refs/{job_id}/in/0"
    assert set(world.staged) == {f"refs/{job_id}/in/{n}" for n in range(3)}


@pytest.mark.parametrize(
    "image",
    [
        {
            "staged": {
                "key": "refs/x/in/0",
                "size_bytes": 1,
                "sha256": "0" * 64,
                "content_type": "a",
            }
        },
        {
            "data_url": data_url(),
            "staged": {
                "key": "refs/x/in/0",
                "size_bytes": 1,
                "sha256": "0" * 64,
                "content_type": "a",
            },
        },
        {"media_id": "m-1", "withheld": True},
    ],
)
@pytest.mark.parametrize("route", ["/v1/generations", "/v1/context/preview"])
async def test_a_user_can_never_name_a_staging_key(image: dict[str, Any], route: str) -> None:
    world = World()
    async with running_gateway(world) as gw:
        element = {"id": "mara", "name": "Mara", "image": image}
        response = await gw.client.post(route, json=body(element), headers=ALICE)
        assert error_of(response) == (422, "invalid_input")
        schema = (await gw.client.get("/openapi.json")).json()
    assert world.reservations == [] and world.published == [] and world.staged == {}
    schemas = json.dumps(schema["components"]["schemas"])
    assert '"staged"' not in schemas and '"withheld"' not in schemas


@pytest.mark.parametrize(
    ("world", "services"),
    [
        (World(), ALL_SERVICES - {"context"}),  # nobody hands out slots
        (World(staging_status=503), ALL_SERVICES),  # the store refuses the PUT
    ],
)
async def test_a_staging_failure_is_a_503_and_releases_the_credits(
    world: World, services: frozenset[str]
) -> None:
    element = {"id": "mara", "name": "Mara", "image": {"data_url": data_url()}}
    async with running_gateway(world, services=services) as gw:
        for key in (None, "key-1"):  # keyed or not: nothing was queued
            headers = {**ALICE, **({"Idempotency-Key": key} if key else {})}
            response = await gw.client.post("/v1/generations", json=body(element), headers=headers)
            assert error_of(response) == (503, "staging_unavailable")
            assert "try again" in response.json()["error"]["message"]
    assert world.published == []
    assert len(world.reservations) == 2
    assert world.releases == [r.job_id for r in world.reservations]


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png,not-base64",
        "data:text/plain;base64,aGVsbG8=",
        "data:image/png;base64,@@@@",
        "https://example.org/not-a-data-url.png",
    ],
)
async def test_a_picture_that_cannot_be_read_is_a_422_naming_the_element(url: str) -> None:
    world = World()
    async with running_gateway(world) as gw:
        element = {"id": "mara", "name": "Mara", "image": {"data_url": url}}
        response = await gw.client.post("/v1/generations", json=body(element), headers=ALICE)
    assert error_of(response) == (422, "invalid_data_url")
    assert "'mara'" in response.json()["error"]["message"]
    assert world.published == [] and world.staged == {}
    assert world.releases == [r.job_id for r in world.reservations]


@asynccontextmanager
async def gateway_with_preview(
    world: World,
) -> AsyncIterator[tuple[Harness, list[ContextPreviewQuery]]]:
    app = create_app(
        test_settings(), media_transport=httpx.MockTransport(lambda r: storage_app(r, world))
    )
    broker: NatsBroker = app.state.broker
    register_fakes(broker, world, ALL_SERVICES)
    asked: list[ContextPreviewQuery] = []

    @broker.subscriber(Subject.CONTEXT_PREVIEW, queue="context")
    async def preview(query: ContextPreviewQuery) -> ContextPreviewReply:
        asked.append(query)
        return ContextPreviewReply(prompt=query.prompt)

    async with (
        TestNatsBroker(broker),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield Harness(client, world, broker, app), asked


async def test_a_preview_carries_keys_under_a_preview_prefix() -> None:
    world = World()
    element = {"id": "mara", "name": "Mara", "image": {"data_url": data_url()}}
    async with gateway_with_preview(world) as (gw, asked):
        response = await gw.client.post("/v1/context/preview", json=body(element), headers=ALICE)
    assert response.status_code == 200, response.text
    [slots] = world.slot_requests
    assert (slots.job_id, slots.count) == (None, 1)
    [query] = asked
    image = query.context.elements[0].image
    assert image is not None and image.staged is not None
    assert image.staged.key.startswith("previews/")
    assert world.staged[image.staged.key] == (PICTURE, "image/png")
    assert "base64" not in query.model_dump_json()
    assert world.reservations == []  # a preview charges nothing


def test_the_event_only_fields_stay_out_of_jobs_requested_when_unused() -> None:
    # An event from before ADR 0017 still reads: the new fields are optional.
    old = JobRequested.model_json_schema()
    assert "staged_context" not in old.get("required", [])
