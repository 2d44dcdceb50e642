"""Use this image: `POST /v1/media/{id}/assign` and `GET /v1/projects/{p}/assignments`.

On FastStream's in-memory broker with the fake services of `gateway_testkit`, a fake media answer
to `media.query.assignments`, and a capture of the `media.assigned` events the gateway stores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from faststream.nats import NatsBroker, TestNatsBroker
from gateway_testkit import (
    ALL_SERVICES,
    World,
    auth,
    make_media,
    make_token,
    register_fakes,
    storage_app,
    test_settings,
)

from atelier_contracts.media import (
    MediaAssigned,
    MediaItem,
    ProjectAssignmentsQuery,
    ProjectAssignmentsReply,
)
from atelier_contracts.profiles import GenerationSettings
from atelier_contracts.subjects import MEDIA_STREAM, Subject
from atelier_gateway.main import create_app


@dataclass
class Media:
    """The fake media service's assignments side: what it was told, what it answers."""

    assigned: list[MediaAssigned] = field(default_factory=list)
    cover: MediaItem | None = None
    elements: dict[str, MediaItem] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)


@dataclass
class Gateway:
    client: httpx.AsyncClient
    world: World
    media: Media


@asynccontextmanager
async def gateway_with_assignments(
    *, services: frozenset[str] = ALL_SERVICES, answer_assignments: bool = True
) -> AsyncIterator[Gateway]:
    world = World()
    world.media["m1"] = make_media("m1", "alpha")
    world.media["m2"] = make_media("m2", "alpha", index=1)
    world.media["b1"] = make_media("b1", "beta")
    media = Media()
    app = create_app(test_settings(), media_transport=httpx.MockTransport(storage_app))
    broker: NatsBroker = app.state.broker
    register_fakes(broker, world, services)

    @broker.subscriber(Subject.MEDIA_ASSIGNED, stream=MEDIA_STREAM.name)
    async def capture_assigned(event: MediaAssigned) -> None:
        media.assigned.append(event)

    if answer_assignments:

        @broker.subscriber(Subject.MEDIA_ASSIGNMENTS, queue="media")
        async def assignments(query: ProjectAssignmentsQuery) -> ProjectAssignmentsReply:
            media.asked.append(query.project)
            return ProjectAssignmentsReply(cover=media.cover, elements=media.elements)

    async with (
        TestNatsBroker(broker),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield Gateway(client, world, media)


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    async with gateway_with_assignments() as gateway:
        yield gateway


async def test_assign_as_cover_stores_a_media_assigned_event(gw: Gateway) -> None:
    response = await gw.client.post("/v1/media/m1/assign", json={"target": "cover"}, headers=auth())

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["media_id"] == "m1"
    assert body["project"] == "alpha"
    assert body["target"] == "cover"
    assert body["element_id"] is None
    assert body["links"] == {"assignments": "/v1/projects/alpha/assignments"}
    assert response.headers["location"] == "/v1/projects/alpha/assignments"

    [event] = gw.media.assigned
    assert event.media_id == "m1"
    assert event.project == "alpha"  # the image's own project, never one the client names
    assert event.target == "cover"
    assert event.element_id is None
    assert event.assigned_by == "alice"
    assert str(event.event_id) == body["event_id"]


async def test_assign_as_element_image_names_the_element(gw: Gateway) -> None:
    response = await gw.client.post(
        "/v1/media/m2/assign",
        json={"target": "element", "element_id": "mara-vell"},
        headers=auth(),
    )
    assert response.status_code == 202, response.text
    [event] = gw.media.assigned
    assert (event.media_id, event.target, event.element_id) == ("m2", "element", "mara-vell")


async def test_each_choice_is_its_own_event(gw: Gateway) -> None:
    for media_id in ("m1", "m2", "m1"):
        response = await gw.client.post(
            f"/v1/media/{media_id}/assign", json={"target": "cover"}, headers=auth()
        )
        assert response.status_code == 202
    assert [e.media_id for e in gw.media.assigned] == ["m1", "m2", "m1"]
    assert len({e.event_id for e in gw.media.assigned}) == 3
    times = [e.occurred_at for e in gw.media.assigned]
    assert times == sorted(times)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"target": "element"}, "needs an element_id"),
        ({"target": "element", "element_id": ""}, "element_id"),
        ({"target": "cover", "element_id": "mara"}, "takes no element_id"),
        ({"target": "poster"}, "target"),
        ({}, "target"),
        ({"target": "cover", "project": "beta"}, "project"),
        ({"target": "element", "element_id": "x" * 201}, "element_id"),
    ],
)
async def test_a_malformed_choice_is_422_and_publishes_nothing(
    gw: Gateway, body: dict[str, object], fragment: str
) -> None:
    response = await gw.client.post("/v1/media/m1/assign", json=body, headers=auth())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert fragment in error["message"]
    assert gw.media.assigned == []


async def test_media_not_granted_or_unknown_is_404(gw: Gateway) -> None:
    for media_id in ("b1", "no-such-media"):
        response = await gw.client.post(
            f"/v1/media/{media_id}/assign", json={"target": "cover"}, headers=auth()
        )
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
    # The owner of project beta may.
    beta = auth(make_token("bob", ["beta"]))
    response = await gw.client.post("/v1/media/b1/assign", json={"target": "cover"}, headers=beta)
    assert response.status_code == 202
    assert [(e.media_id, e.project, e.assigned_by) for e in gw.media.assigned] == [
        ("b1", "beta", "bob")
    ]


async def test_no_token_is_401(gw: Gateway) -> None:
    response = await gw.client.post("/v1/media/m1/assign", json={"target": "cover"})
    assert response.status_code == 401
    response = await gw.client.get("/v1/projects/alpha/assignments")
    assert response.status_code == 401
    assert gw.media.assigned == []


async def test_assigning_works_while_generation_is_off(gw: Gateway) -> None:
    gw.world.settings = GenerationSettings(enabled=False, reason="maintenance")
    response = await gw.client.post("/v1/media/m1/assign", json={"target": "cover"}, headers=auth())
    assert response.status_code == 202


async def test_assignments_show_media_items_with_gateway_urls(gw: Gateway) -> None:
    response = await gw.client.get("/v1/projects/alpha/assignments", headers=auth())
    assert response.status_code == 200
    assert response.json() == {"project": "alpha", "cover": None, "elements": {}}

    gw.media.cover = gw.world.media["m1"]
    gw.media.elements = {"mara-vell": gw.world.media["m2"]}
    response = await gw.client.get("/v1/projects/alpha/assignments", headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert body["cover"]["id"] == "m1"
    assert body["cover"]["thumbnail_url"] == "/v1/media/m1/thumbnail"
    assert body["cover"]["content_url"] == "/v1/media/m1/content"
    assert "original_key" not in body["cover"]  # storage keys stay inside Atelier
    assert {k: v["id"] for k, v in body["elements"].items()} == {"mara-vell": "m2"}
    assert gw.media.asked == ["alpha", "alpha"]


async def test_assignments_of_a_project_not_granted_are_404_and_media_is_not_asked(
    gw: Gateway,
) -> None:
    response = await gw.client.get("/v1/projects/beta/assignments", headers=auth())
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert gw.media.asked == []


async def test_items_of_another_project_are_never_shown(gw: Gateway) -> None:
    gw.media.cover = gw.world.media["b1"]
    gw.media.elements = {"mara": gw.world.media["b1"], "port": gw.world.media["m2"]}
    body = (await gw.client.get("/v1/projects/alpha/assignments", headers=auth())).json()
    assert body["cover"] is None
    assert list(body["elements"]) == ["port"]


async def test_media_not_answering_is_503() -> None:
    async with gateway_with_assignments(answer_assignments=False) as gateway:
        response = await gateway.client.get("/v1/projects/alpha/assignments", headers=auth())
        assert response.status_code == 503
        assert "media service is not answering" in response.json()["error"]["message"]

    async with gateway_with_assignments(services=frozenset({"profiles", "dispatch"})) as gateway:
        response = await gateway.client.post(
            "/v1/media/m1/assign", json={"target": "cover"}, headers=auth()
        )
        assert response.status_code == 503
        assert gateway.media.assigned == []
