"""Reference images on OpenAI: GPT-image models get them on `/images/edits` as multipart
`image[]` parts; the fake validates each call against `CreateImageEditRequest`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from adapter_support import picture, serve

from atelier_fakes import FakeOpenAIState, create_openai_fake
from atelier_workers.adapters import ImageRequest, OpenAIAdapter, ProviderError
from atelier_workers.adapters.base import ReferenceImage

API_KEY = "sk-test-atelier-references-0123456789"
ADAPTER = OpenAIAdapter()


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[str, FakeOpenAIState]]:
    yield from serve(create_openai_fake, FakeOpenAIState(api_key=API_KEY))


@pytest.fixture
def fake(fake_server: tuple[str, FakeOpenAIState]) -> FakeOpenAIState:
    fake_server[1].reset()
    return fake_server[1]


@pytest.fixture
def base_url(fake_server: tuple[str, FakeOpenAIState]) -> str:
    return f"{fake_server[0]}/v1"


def _picture(width: int, height: int, fmt: str = "PNG") -> ReferenceImage:
    return picture(size=(width, height), fmt=fmt, element_id=f"e{width}")


def _request(base_url: str, model: str, *refs: ReferenceImage) -> ImageRequest:
    return ImageRequest(
        model=model,
        prompt="Mara on the docks",
        size="1024x1024",
        n=1,
        options={"quality": "low", "moderation": "low"},
        base_url=base_url,
        api_key=API_KEY,
        timeout_s=10,
        reference_images=refs,
    )


async def test_gpt_image_sends_references_as_image_parts(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    first, second = _picture(64, 48), _picture(32, 32, "JPEG")
    output = await ADAPTER.generate(_request(base_url, "gpt-image-1", first, second), client)

    assert len(output.images) == 1 and output.images[0].content_type == "image/png"
    assert fake.requests == []  # nothing went to /images/generations
    [edit] = fake.edits
    assert edit.fields == {
        "model": "gpt-image-1",
        "prompt": "Mara on the docks",
        "n": "1",
        "size": "1024x1024",
        "quality": "low",
    }
    assert [image.data for image in edit.images] == [first.data, second.data]
    assert [image.filename for image in edit.images] == ["reference-1.png", "reference-2.jpg"]
    assert [image.content_type for image in edit.images] == ["image/png", "image/jpeg"]
    assert edit.headers["authorization"] == f"Bearer {API_KEY}"


async def test_models_without_references_get_the_prompt_alone(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    await ADAPTER.generate(_request(base_url, "dall-e-3", _picture(16, 16)), client)
    assert fake.edits == []
    assert fake.bodies[-1]["model"] == "dall-e-3"


async def test_without_references_the_generation_endpoint_is_used(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    await ADAPTER.generate(_request(base_url, "gpt-image-1"), client)
    assert fake.edits == []
    assert fake.bodies[-1]["moderation"] == "low"


async def test_the_fake_refuses_what_openai_refuses(
    fake: FakeOpenAIState, base_url: str, client: httpx.AsyncClient
) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    fields = {"model": "gpt-image-1", "prompt": "x"}
    not_an_image = await client.post(
        f"{base_url}/images/edits",
        data=fields,
        files=[("image[]", ("a.png", b"<html>", "image/png"))],
        headers=auth,
    )
    assert not_an_image.status_code == 400
    assert not_an_image.json()["error"]["code"] == "invalid_image_file"

    unknown = await client.post(
        f"{base_url}/images/edits",
        data={**fields, "moderation": "low"},
        files=[("image[]", ("a.png", _picture(8, 8).data, "image/png"))],
        headers=auth,
    )
    assert unknown.json()["error"]["code"] == "unknown_parameter"

    only_a_mask = await client.post(
        f"{base_url}/images/edits",
        data=fields,
        files=[("mask", ("m.png", _picture(8, 8).data, "image/png"))],
        headers=auth,
    )
    assert only_a_mask.status_code == 400
    assert only_a_mask.json()["error"]["code"] == "missing_required_parameter"

    with pytest.raises(ProviderError) as caught:
        await ADAPTER.generate(
            ImageRequest(
                model="gpt-image-1",
                prompt="x",
                size="1024x1024",
                base_url=base_url,
                api_key="sk-wrong-key-000000000000",
                reference_images=(_picture(8, 8),),
            ),
            client,
        )
    assert caught.value.error_class == "auth"
    assert len(fake.edits) == 4  # every edit is recorded, refused ones too
