"""What a request may carry (issue 15): free-form JSON bounded, strict types, unknown fields
refused at every level, pictures limited by what the profile can use, the body's bytes bounded
before parsing, a job too large for the queue answered 413, and credits never kept when the job
was not queued."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats.errors
import pytest
from gateway_testkit import (
    World,
    auth,
    make_profile,
    make_token,
    running_gateway,
    test_settings,
)

from atelier_contracts.errors import AtelierError
from atelier_contracts.jobs import JobRequested
from atelier_gateway.auth import User
from atelier_gateway.models import ELEMENT_DATA_LIMITS, GenerationRequestBody
from atelier_gateway.service import GatewayService, RequestTooLarge
from atelier_gateway.validation import data_url_bytes

ALICE = auth(make_token("alice", ["alpha"]))
VALID: dict[str, Any] = {"project": "alpha", "profile_id": "sketch", "prompt": "A lighthouse"}


def nested(levels: int) -> dict[str, Any]:
    data: dict[str, Any] = {"leaf": "x"}
    for _ in range(levels - 1):
        data = {"inner": data}
    return data


def element(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"id": "mara", "name": "Mara Vell"}
    fields.update(overrides)
    return fields


def with_elements(*elements: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {**VALID, "context": {"elements": list(elements)}, **overrides}


def png_data_url(size: int) -> str:
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"\0" * (size - 4)).decode()


def error_of(response: Any) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"]["code"], body["error"]["message"]


# --- free-form JSON --------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/v1/generations", "/v1/context/preview"])
async def test_deeply_nested_data_is_a_422_and_leaves_the_quota_untouched(route: str) -> None:
    world = World()
    async with running_gateway(world) as gw:
        body = with_elements(element(data=nested(300)))
        status, code, message = error_of(await gw.client.post(route, json=body, headers=ALICE))
    assert (status, code) == (422, "invalid_input")
    assert "nested more than 8 levels deep" in message and "context.elements.0.data" in message
    assert world.reservations == [] and world.published == []


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (nested(9), "more than 8 levels"),
        ({f"k{i}": i for i in range(201)}, "more than 200 keys"),
        ({"bio": "x" * 10_001}, "longer than 10,000 characters"),
        ({"k" * 10_001: 1}, "key longer than 10000"),
        ({f"k{i}": "x" * 9_000 for i in range(8)}, "at most 65,536 are allowed"),
    ],
)
async def test_element_data_limits_name_the_limit(data: dict[str, Any], says: str) -> None:
    async with running_gateway() as gw:
        response = await gw.client.post(
            "/v1/generations", json=with_elements(element(data=data)), headers=ALICE
        )
    status, code, message = error_of(response)
    assert (status, code) == (422, "invalid_input") and says in message


async def test_data_within_the_limits_is_accepted() -> None:
    assert ELEMENT_DATA_LIMITS.problem(nested(8)) is None
    data = {"looks": {"eyes": "green", "scars": ["left cheek"]}, "age": 31, "bio": "x" * 10_000}
    world = World()
    async with running_gateway(world) as gw:
        response = await gw.client.post(
            "/v1/generations", json=with_elements(element(data=data)), headers=ALICE
        )
    assert response.status_code == 202
    assert world.published[0].context.elements[0].data == data


async def test_options_are_bounded_too() -> None:
    async with running_gateway() as gw:
        response = await gw.client.post(
            "/v1/generations", json={**VALID, "options": {"quality": nested(10)}}, headers=ALICE
        )
    status, code, message = error_of(response)
    assert (status, code) == (422, "invalid_input") and "options is nested" in message


# --- strict types, unknown fields ------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"count": True}, "count"),
        ({"count": "2"}, "count"),
        ({"count": 2.0}, "count"),
        ({"target": {"kind": "media", "extra": 1}}, "target.extra"),
        ({"target": {"kind": "element", "element_id": ""}}, "target.element_id"),
        ({"context": {"elements": [], "extra": 1}}, "context.extra"),
        ({"context": {"elements": [element(colour="red")]}}, "context.elements.0.colour"),
        ({"context": {"elements": [element(send={"image": "yes"})]}}, "send.image"),
        ({"context": {"elements": [element(send={"img": True})]}}, "send.img"),
        (
            {"context": {"elements": [element(image={"media_id": "m", "note": "x"})]}},
            "image.media_id.note",
        ),
    ],
)
async def test_strict_types_and_no_unknown_fields(overrides: dict[str, Any], where: str) -> None:
    async with running_gateway() as gw:
        response = await gw.client.post(
            "/v1/generations", json={**VALID, **overrides}, headers=ALICE
        )
    status, code, message = error_of(response)
    assert (status, code) == (422, "invalid_input") and where in message


@pytest.mark.parametrize(
    "image",
    [{"media_id": "m", "url": "https://example.com/a.png"}, {}, {"media_id": ""}],
)
async def test_an_element_image_is_exactly_one_of_three(image: dict[str, Any]) -> None:
    async with running_gateway() as gw:
        response = await gw.client.post(
            "/v1/generations", json=with_elements(element(image=image)), headers=ALICE
        )
    status, code, message = error_of(response)
    assert (status, code) == (422, "invalid_input")
    assert "exactly one of media_id, url or data_url" in message


async def test_the_inputs_accepted_before_still_are() -> None:
    # The other two left null or empty, as the contract has always read them.
    images = [
        {"media_id": "m-1", "url": None, "data_url": ""},
        {"url": "https://example.com/a.png"},
        {"data_url": png_data_url(100), "media_id": None},
    ]
    body = GenerationRequestBody.model_validate(
        with_elements(*(element(id=f"e{i}", image=img) for i, img in enumerate(images)))
    )
    kinds = [type(e.image).__name__ for e in body.context.elements]
    assert kinds == ["MediaImage", "UrlImage", "DataUrlImage"]


def test_the_schema_says_exactly_one_image_kind() -> None:
    schema = GenerationRequestBody.model_json_schema()
    image = schema["$defs"]["ContextElementIn"]["properties"]["image"]
    one_of = image["anyOf"][0]["oneOf"]
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in one_of] == [
        "MediaImage",
        "UrlImage",
        "DataUrlImage",
    ]
    for name, kind in (("MediaImage", "media_id"), ("UrlImage", "url")):
        definition = schema["$defs"][name]
        assert definition["required"] == [kind]
        assert definition["additionalProperties"] is False


async def test_a_body_that_is_not_utf8_is_malformed_json() -> None:
    async with running_gateway() as gw:
        response = await gw.client.post(
            "/v1/generations",
            content=b'{"project": "\xff\xfe"}',
            headers={**ALICE, "Content-Type": "application/json"},
        )
    assert error_of(response)[:2] == (400, "malformed_json")


# --- pictures: as many as the profile can use, each bounded ----------------------------------


async def test_more_pictures_than_the_profile_takes_is_a_422_naming_its_limit() -> None:
    world = World()  # Sketch takes 2
    pictures = [element(id=f"e{i}", image={"data_url": png_data_url(64)}) for i in range(3)]
    async with running_gateway(world) as gw:
        for route in ("/v1/generations", "/v1/context/preview"):
            response = await gw.client.post(route, json=with_elements(*pictures), headers=ALICE)
            status, code, message = error_of(response)
            assert (status, code) == (422, "too_many_reference_images")
            assert "at most 2 pictures" in message and "sends 3 pictures" in message
        # A picture whose sending is off, and library images, do not count.
        pictures[2]["send"] = {"image": False}
        library = [element(id=f"m{i}", image={"media_id": f"media-{i}"}) for i in range(4)]
        response = await gw.client.post(
            "/v1/generations", json=with_elements(*pictures, *library), headers=ALICE
        )
        assert response.status_code == 202
    assert len(world.reservations) == 1


async def test_a_profile_without_reference_images_takes_no_pictures() -> None:
    world = World(profiles=[make_profile(max_reference_images=0)])
    async with running_gateway(world) as gw:
        body = with_elements(element(image={"url": "https://example.com/a.png"}))
        status, code, message = error_of(
            await gw.client.post("/v1/generations", json=body, headers=ALICE)
        )
    assert (status, code) == (422, "too_many_reference_images")
    assert "takes no reference images" in message


async def test_a_data_url_over_the_limit_is_a_422_naming_the_setting() -> None:
    settings = test_settings(max_data_url_bytes=1000)
    async with running_gateway(settings=settings) as gw:
        ok = with_elements(element(image={"data_url": png_data_url(1000)}))
        assert (await gw.client.post("/v1/generations", json=ok, headers=ALICE)).status_code == 202
        over = with_elements(element(image={"data_url": png_data_url(1001)}))
        status, code, message = error_of(
            await gw.client.post("/v1/generations", json=over, headers=ALICE)
        )
    assert (status, code) == (422, "reference_image_too_large")
    assert "1,001 bytes" in message and "ATELIER_GATEWAY_MAX_DATA_URL_BYTES" in message


def test_data_url_sizes_are_counted_decoded() -> None:
    assert data_url_bytes(png_data_url(1001)) == 1001
    assert data_url_bytes("data:image/svg+xml,%3Csvg%3E") == len("%3Csvg%3E")


# --- the body's bytes ------------------------------------------------------------------------


async def test_a_declared_body_over_the_limit_is_refused_before_it_is_read() -> None:
    world = World()
    async with running_gateway(world, settings=test_settings(max_request_bytes=2000)) as gw:
        body = with_elements(element(description="x" * 3000))
        status, code, message = error_of(
            await gw.client.post("/v1/generations", json=body, headers=ALICE)
        )
        assert (status, code) == (413, "request_too_large")
        assert "2,000 bytes" in message and "ATELIER_GATEWAY_MAX_REQUEST_BYTES" in message
        small = await gw.client.post("/v1/generations", json=VALID, headers=ALICE)
        assert small.status_code == 202
    assert len(world.reservations) == 1


async def test_a_chunked_body_is_counted_as_it_is_read() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        payload = json.dumps(with_elements(element(description="x" * 3000))).encode()
        for start in range(0, len(payload), 500):
            yield payload[start : start + 500]

    async with running_gateway(settings=test_settings(max_request_bytes=2000)) as gw:
        response = await gw.client.post(
            "/v1/generations",
            content=chunks(),
            headers={**ALICE, "Content-Type": "application/json"},
        )
        assert "content-length" not in response.request.headers
    assert error_of(response)[:2] == (413, "request_too_large")


# --- nothing reserved is kept ----------------------------------------------------------------


async def test_any_failure_after_the_reservation_releases_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    async with running_gateway(world) as gw:
        service: GatewayService = gw.app.state.service

        async def broken(event: JobRequested) -> None:
            raise RuntimeError("injected after the reservation")

        monkeypatch.setattr(service.backends, "publish_job_requested", broken)
        # As a server answers: the error handler's 500, not the exception.
        transport = httpx.ASGITransport(app=gw.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for key in (None, "key-1"):  # keyed or not: nothing was queued
                headers = {**ALICE, **({"Idempotency-Key": key} if key else {})}
                response = await client.post("/v1/generations", json=VALID, headers=headers)
                assert error_of(response)[:2] == (500, "internal")
    assert len(world.reservations) == 2
    assert world.releases == [r.job_id for r in world.reservations]


async def test_a_job_over_the_queues_payload_limit_is_413_and_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def too_large(*args: Any, **kwargs: Any) -> None:
        raise nats.errors.MaxPayloadError

    monkeypatch.setattr("atelier_gateway.backends.publish_event", too_large)
    world = World()
    async with running_gateway(world) as gw:
        response = await gw.client.post(
            "/v1/generations", json=VALID, headers={**ALICE, "Idempotency-Key": "k"}
        )
    status, code, message = error_of(response)
    assert (status, code) == (413, "request_too_large")
    assert "max_payload" in message and "bytes once queued" in message
    assert world.releases == [world.reservations[0].job_id]


async def test_a_release_that_fails_does_not_hide_the_error() -> None:
    class Backends:
        async def release_quota(self, job_id: str) -> bool:
            raise RuntimeError("profiles away")

    service = GatewayService(Backends())  # type: ignore[arg-type]
    await service._release_credits("job-1")  # logged, not raised


def test_request_too_large_is_a_413() -> None:
    error = RequestTooLarge("too big")
    assert isinstance(error, AtelierError)
    assert (error.status_code, error.code) == (413, "request_too_large")
    assert User(id="a", projects=frozenset()).id == "a"
