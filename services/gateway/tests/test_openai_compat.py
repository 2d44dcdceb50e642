"""The OpenAI-compatible images routes: the request and error mappings (pure), and the routes on
the in-memory broker with gateway_testkit's fake services (a dispatch that ends jobs at once).
End to end with the official SDK: tests/e2e/test_openai_compat.py."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gateway_testkit import make_job, make_profile, make_token
from inkweld_testkit import InkweldWorld, bearer, inkweld_gateway

from atelier_contracts.errors import ErrorClass, ErrorInfo, InvalidInput, Unavailable
from atelier_contracts.jobs import JobStatus
from atelier_contracts.profiles import QuotaReserveReply
from atelier_gateway.auth import TokenRejected
from atelier_gateway.openai_compat import mapping
from atelier_gateway.openai_compat.errors import StillRunning, describe
from atelier_gateway.openai_compat.models import ImageGenerationBody
from atelier_gateway.service import QuotaRefused

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
JSON = {"content-type": "application/json"}
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 32


def gpt_image(**overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "id": "p-gpt",
        "name": "GPT Image",
        "provider": "openai",
        "model": "gpt-image-1",
        "sizes": ["1024x1024", "1536x1024"],
        "default_size": "1024x1024",
        "counts": [1, 2, 4],
        "options": [{"name": "quality", "kind": "enum", "values": ["low", "medium", "high"]}],
        "max_reference_images": 4,
        "sort_order": 2,
    }
    fields.update(overrides)
    return make_profile(**fields)


# --- mapping ---------------------------------------------------------------------------------


def test_model_names_a_profile_by_id_or_name_and_defaults_to_the_first_enabled() -> None:
    first = make_profile(id="p-first", name="Sketch", sort_order=0)
    off = make_profile(id="p-off", name="Zero", sort_order=-1, enabled=False)
    profiles = [gpt_image(), first, off]
    assert mapping.find_profile("p-gpt", profiles).id == "p-gpt"
    assert mapping.find_profile("gpt image", profiles).id == "p-gpt"
    assert mapping.find_profile(None, profiles).id == "p-first"
    assert mapping.find_profile("Zero", profiles).id == "p-off"  # the native check refuses it
    with pytest.raises(mapping.ModelNotFound) as raised:
        mapping.find_profile("dall-e-3", profiles)
    assert raised.value.status_code == 404 and "dall-e-3" in raised.value.message
    with pytest.raises(mapping.ModelNotFound):
        mapping.find_profile(None, [off])


def test_the_project_is_the_header_or_the_tokens_only_project() -> None:
    assert mapping.request_project(" saga ", ["alpha"]) == "saga"
    assert mapping.request_project(None, ["alpha"]) == "alpha"
    for granted in ([], ["alpha", "beta"]):
        with pytest.raises(mapping.ParamError) as raised:
            mapping.request_project(None, granted)
        assert "OpenAI-Project" in raised.value.message
    with pytest.raises(mapping.ParamError):
        mapping.request_project("a/b", ["alpha"])


def test_a_request_maps_onto_the_native_body() -> None:
    body = ImageGenerationBody(
        prompt="A fox", model="GPT Image", n=2, size="1536x1024", quality="high", style="vivid"
    )
    native = mapping.generation_request(body, "alpha", gpt_image())
    assert (native.project, native.profile_id, native.prompt) == ("alpha", "p-gpt", "A fox")
    assert (native.size, native.count) == ("1536x1024", 2)
    # Declared by the profile: sent; not declared (style): left out; auto: the default.
    assert native.options == {"quality": "high"}
    auto = ImageGenerationBody(prompt="A fox", size="auto", quality="auto")
    native = mapping.generation_request(auto, "alpha", gpt_image())
    assert (native.size, native.count, native.options) == (None, 1, {})
    with pytest.raises(mapping.ParamError) as raised:
        mapping.generation_request(ImageGenerationBody(prompt="x", quality="hd"), "a", gpt_image())
    assert (raised.value.param, raised.value.code) == ("quality", "invalid_option")
    assert "low, medium or high" in raised.value.message


def test_edit_images_are_elements_sending_only_their_picture() -> None:
    assert mapping.image_type(PNG) == "image/png"
    assert mapping.image_type(JPEG) == "image/jpeg"
    assert mapping.image_type(WEBP) == "image/webp"
    assert mapping.image_type(b"%PDF-1.7") is None
    element = mapping.edit_element(1, PNG, "image/png")
    body = ImageGenerationBody(prompt="Put them together")
    native = mapping.generation_request(body, "alpha", gpt_image(), [element])
    [sent] = native.context.elements
    assert sent.name == "Image 1" and sent.send.image and not sent.send.description
    assert sent.image is not None and sent.image.data_url is not None
    assert base64.b64decode(sent.image.data_url.split(",", 1)[1]) == PNG


def test_strict_json_and_unknown_parameters_are_refused() -> None:
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError
        ImageGenerationBody.model_validate({"prompt": "x", "n": "2"})
    with pytest.raises(mapping.ParamError) as raised:
        mapping.refuse_unsupported(ImageGenerationBody(prompt="x", stream=True))
    assert raised.value.param == "stream"


def test_errors_take_openais_shape_and_status() -> None:
    size = describe(InvalidInput("no such size", code="size_not_allowed"))
    assert size.status == 400 and size.error.type == "invalid_request_error"
    assert (size.error.param, size.error.code) == ("size", "size_not_allowed")

    token = describe(TokenRejected("no token"))
    assert token.status == 401 and token.error.code == "invalid_api_key"

    resets = datetime.now(UTC) + timedelta(hours=1)
    spent = QuotaReserveReply(outcome="quota_exceeded", message="spent", resets_at=resets)
    quota = describe(QuotaRefused(spent))
    assert quota.status == 429 and quota.error.type == quota.error.code == "insufficient_quota"
    assert quota.headers["x-should-retry"] == "false" and int(quota.headers["Retry-After"]) > 3500
    fast = QuotaReserveReply(outcome="rate_limited", message="slow down", retry_after_s=1.5)
    rate = describe(QuotaRefused(fast))
    assert (rate.status, rate.error.code, rate.headers["Retry-After"]) == (
        429,
        "rate_limit_exceeded",
        "2",
    )
    assert "x-should-retry" not in rate.headers  # the SDK retries after Retry-After

    down = describe(Unavailable("profiles is not answering"))
    assert down.status == 503 and down.error.type == "server_error"

    waiting = describe(StillRunning("j1", 5, retry_safe=False))
    assert waiting.status == 503 and waiting.headers["x-should-retry"] == "false"
    assert waiting.headers["Location"] == "/v1/generations/j1"
    assert describe(StillRunning("j1", 5, retry_safe=True)).headers["x-should-retry"] == "true"


def test_a_job_without_images_is_answered_by_its_error_class() -> None:
    blocked = make_job("j", status=JobStatus.FAILED, error=ErrorInfo.of(ErrorClass.CONTENT_BLOCKED))
    answer = describe(mapping.job_failure(blocked))
    assert answer.status == 400 and answer.error.code == "content_policy_violation"
    assert answer.headers["x-should-retry"] == "false"
    busy = make_job("j", status=JobStatus.FAILED, error=ErrorInfo.of(ErrorClass.TIMEOUT))
    answer = describe(mapping.job_failure(busy))
    assert (answer.status, answer.error.type) == (503, "server_error")
    assert answer.headers["x-should-retry"] == "true"
    cancelled = describe(mapping.job_failure(make_job("j", status=JobStatus.CANCELLED)))
    assert (cancelled.status, cancelled.error.code) == (400, "cancelled")


# --- the routes on the in-memory broker --------------------------------------------------------


def world() -> InkweldWorld:
    blind = make_profile(id="p-blind", name="Blind", max_reference_images=0, sort_order=5)
    return InkweldWorld(profiles=[make_profile(), gpt_image(), blind])


async def test_generation_answers_every_image_inline_or_as_a_url() -> None:
    async with inkweld_gateway(world()) as gw:
        headers = bearer(make_token())
        response = await gw.client.post(
            "/v1/images/generations",
            json={"model": "GPT Image", "prompt": "A fox", "n": 2, "quality": "high"},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert [base64.b64decode(d["b64_json"]) for d in body["data"]] == [b"\x89PNGdata"] * 2
        assert body["size"] == "1024x1024" and body["output_format"] == "png"
        job_id = response.headers["x-request-id"]
        [event] = gw.world.published
        assert event.job_id == job_id and event.count == 2 and event.options == {"quality": "high"}

        linked = await gw.client.post(
            "/v1/images/generations",
            json={"model": "p-gpt", "prompt": "A fox", "response_format": "url"},
            headers={**headers, "OpenAI-Project": "alpha"},
        )
        assert linked.status_code == 200, linked.text
        [image] = linked.json()["data"]
        assert image["url"].startswith("http://gw/v1/media/") and image["url"].endswith("/content")


async def test_an_edit_stages_its_images_as_reference_images() -> None:
    async with inkweld_gateway(world()) as gw:
        response = await gw.client.post(
            "/v1/images/edits",
            data={"prompt": "Put them in a basket", "model": "GPT Image", "n": "1"},
            files=[("image[]", ("a.png", PNG, "image/png")), ("image[]", ("b.jpg", JPEG))],
            headers=bearer(make_token()),
        )
        assert response.status_code == 200, response.text
        [event] = gw.world.published
        staged = [e.image.staged for e in event.context.elements if e.image is not None]
        assert [s.content_type for s in staged if s is not None] == ["image/png", "image/jpeg"]
        assert "base64" not in event.model_dump_json()  # by reference, never inline
        assert sorted(gw.world.objects.values()) == sorted([PNG, JPEG])


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code", "param"),
    [
        ({"json": {"model": "dall-e-3", "prompt": "x"}}, 404, "model_not_found", "model"),
        ({"json": {"prompt": "x", "size": "640x480"}}, 400, "size_not_allowed", "size"),
        ({"json": {"prompt": "x", "n": 3}}, 400, "count_not_allowed", "n"),
        ({"json": {"prompt": "x", "colour": "red"}}, 400, "invalid_value", "colour"),
        ({"content": b"{not json", "headers": JSON}, 400, None, None),
        ({"json": {"prompt": "x"}, "headers": {"Authorization": ""}}, 401, "invalid_api_key", None),
        ({"json": {"prompt": "x"}, "headers": {"OpenAI-Project": "beta"}}, 403, None, None),
    ],
)
async def test_refusals_in_openais_shape(
    request_kwargs: dict[str, Any], status: int, code: str | None, param: str | None
) -> None:
    async with inkweld_gateway(world()) as gw:
        headers = {**bearer(make_token()), **request_kwargs.pop("headers", {})}
        response = await gw.client.post("/v1/images/generations", headers=headers, **request_kwargs)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert error["type"] == "invalid_request_error"
        if code is not None:
            assert error["code"] == code
        assert error["param"] == param
        assert gw.world.published == []


async def test_edit_refusals() -> None:
    async with inkweld_gateway(world()) as gw:
        headers = bearer(make_token())

        async def edit(**kwargs: Any) -> dict[str, Any]:
            response = await gw.client.post("/v1/images/edits", headers=headers, **kwargs)
            assert response.status_code == 400, response.text
            error: dict[str, Any] = response.json()["error"]
            return error

        data = {"prompt": "x", "model": "GPT Image"}
        pdf = [("image", ("a.pdf", b"%PDF-1.7", "image/png"))]
        assert (await edit(data=data, files=pdf))["code"] == "invalid_image_file"
        mask = [("image", ("a.png", PNG)), ("mask", ("m.png", PNG))]
        assert (await edit(data=data, files=mask))["param"] == "mask"
        five = [("image[]", (f"{i}.png", PNG)) for i in range(5)]
        assert (await edit(data=data, files=five))["code"] == "too_many_reference_images"
        one = [("image", ("a.png", PNG))]
        none = await edit(data={"prompt": "x", "model": "Blind"}, files=one)
        assert none["param"] == "image"  # that profile takes no reference images
        assert (await edit(json={"prompt": "x"}))["code"] == "unsupported_content_type"
        assert gw.world.published == []


async def test_quota_spent_is_a_429_the_sdk_does_not_retry() -> None:
    spent = QuotaReserveReply(
        outcome="quota_exceeded",
        message="You have used your 10 credits for this month.",
        resets_at=datetime.now(UTC) + timedelta(days=3),
    )
    w = world()
    w.quota_reply = spent
    async with inkweld_gateway(w) as gw:
        response = await gw.client.post(
            "/v1/images/generations", json={"prompt": "x"}, headers=bearer(make_token())
        )
        assert response.status_code == 429
        assert response.json()["error"]["type"] == "insufficient_quota"
        assert response.headers["x-should-retry"] == "false"


async def test_a_failed_job_and_one_still_running() -> None:
    w = world()
    w.outcome = "fail"
    async with inkweld_gateway(w) as gw:
        blocked = await gw.client.post(
            "/v1/images/generations", json={"prompt": "x"}, headers=bearer(make_token())
        )
        assert blocked.status_code == 400
        assert blocked.json()["error"]["code"] == "content_policy_violation"
    w = world()
    w.outcome = "pending"
    async with inkweld_gateway(w, env={"ATELIER_GATEWAY_OPENAI_WAIT_S": "0.3"}) as gw:
        waiting = await gw.client.post(
            "/v1/images/generations", json={"prompt": "x"}, headers=bearer(make_token())
        )
        assert waiting.status_code == 503, waiting.text
        assert waiting.json()["error"]["code"] == "still_running"
        assert waiting.headers["Location"].startswith("/v1/generations/")
