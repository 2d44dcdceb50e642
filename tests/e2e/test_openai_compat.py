"""The OpenAI-compatible images routes through every real process, driven by the official
`openai` SDK: a generation of two images, an edit with two images that reach the provider (the
fake OpenAI server) as `image[]`, and the refusals, each raising the SDK's own exception class.

The jobs are Atelier's like any other: in the media library, in dispatch, charged to the quota.
"""

from __future__ import annotations

import base64
import io
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from PIL import Image

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e


@dataclass
class Caller:
    stack: RunningStack
    user_id: str
    project: str
    token: str
    sketch: str  # an offline profile's name (two images at a time)
    gpt: str  # an OpenAI profile's id, on the fake OpenAI server, taking two reference images

    def sdk(self, **kwargs: Any) -> openai.OpenAI:
        # No automatic retries: each refusal must surface as it was answered.
        options: dict[str, Any] = {
            "base_url": f"{self.stack.info.gateway_url}/v1",
            "api_key": self.token,
            "max_retries": 0,
            "timeout": 60,
        }
        options.update(kwargs)
        return openai.OpenAI(**options)

    def native(self) -> httpx.Client:
        return self.stack.user(self.token)


def _profile(admin: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    created = admin.post("/admin/v1/profiles", json=body)
    assert created.status_code == 201, created.text
    result: dict[str, Any] = created.json()
    return result


@pytest.fixture(scope="module")
def caller(running_stack: RunningStack) -> Iterator[Caller]:
    tag = secrets.token_hex(4)
    user_id, project = f"sdk-user-{tag}", f"sdk-project-{tag}"
    with running_stack.admin() as admin:
        sketch = _profile(
            admin,
            {
                "name": f"SDK sketch {tag}",
                "provider": "offline",
                "model": "offline-sketch",
                "sizes": ["256x256", "512x512"],
                "default_size": "256x256",
                "counts": [1, 2],
                "credit_cost": 1,
            },
        )
        gpt = _profile(
            admin,
            {
                "name": f"SDK gpt-image {tag}",
                "provider": "openai",
                "model": "gpt-image-1",
                "sizes": ["1024x1024"],
                "default_size": "1024x1024",
                "counts": [1],
                "max_reference_images": 2,
                "base_url": f"{running_stack.openai_url}/v1",
            },
        )
    token = running_stack.stack.mint_token(user_id, [project])
    yield Caller(running_stack, user_id, project, token, sketch["name"], gpt["id"])


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, format="PNG")
    return out.getvalue()


def test_a_generation_of_two_images_is_a_durable_job_in_the_library(caller: Caller) -> None:
    client = caller.sdk()
    raw = client.images.with_raw_response.generate(
        model=caller.sketch, prompt="Two lighthouses at dusk", n=2, size="512x512"
    )
    result = raw.parse()
    assert result.data is not None and len(result.data) == 2
    for image in result.data:
        assert image.b64_json is not None
        with Image.open(io.BytesIO(base64.b64decode(image.b64_json))) as picture:
            assert picture.size == (512, 512)
    job_id = raw.headers["x-request-id"]
    assert result._request_id == job_id  # the SDK's request id is the job's

    with caller.native() as native:
        job = native.get(f"/v1/generations/{job_id}").json()
        assert (job["status"], job["project"], job["count"]) == ("completed", caller.project, 2)
        library = native.get(f"/v1/projects/{caller.project}/media").json()
        assert {i["media_id"] for i in job["images"]} <= {m["id"] for m in library["items"]}

        # `url`: Atelier's own media content, read with the same token.
        linked = client.images.generate(
            model=caller.sketch, prompt="One lighthouse", response_format="url"
        )
        assert linked.data is not None
        [image] = linked.data
        assert image.url is not None and image.b64_json is None
        content = native.get(image.url)
        assert content.status_code == 200 and content.content.startswith(b"\x89PNG")


def test_an_edit_sends_both_images_to_the_provider(caller: Caller) -> None:
    marker = f"Put both in a basket {uuid.uuid4().hex[:8]}"
    red, blue = _png((200, 30, 30)), _png((30, 30, 200))
    result = caller.sdk().images.edit(
        model=caller.gpt,
        image=[("red.png", red, "image/png"), ("blue.png", blue, "image/png")],
        prompt=marker,
        extra_headers={"OpenAI-Project": caller.project},
    )
    assert result.data is not None and len(result.data) == 1
    assert result.data[0].b64_json

    openai_state = caller.stack.openai
    [edit] = [e for e in openai_state.edits if e.fields.get("prompt", "").startswith(marker)]
    assert edit.fields["prompt"] == f"{marker}\n\nContext:\nReference images, in order: " + (
        "Image 1, Image 2."
    )
    colours = []
    for received in edit.images:
        with Image.open(io.BytesIO(received.data)) as picture:
            colours.append(picture.convert("RGB").getpixel((5, 5)))
    assert colours == [(200, 30, 30), (30, 30, 200)]


def test_refusals_raise_the_sdks_exception_classes(caller: Caller) -> None:
    client = caller.sdk()
    with pytest.raises(openai.NotFoundError) as unknown:
        client.images.generate(model="dall-e-9", prompt="x")
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"

    with pytest.raises(openai.BadRequestError) as size:
        client.images.generate(model=caller.sketch, prompt="x", size="1792x1024")
    assert size.value.code == "size_not_allowed" and size.value.param == "size"
    assert "256x256" in size.value.message

    with pytest.raises(openai.AuthenticationError) as missing:
        # The SDK insists on a key; the header it would make is left out of this request.
        client.images.generate(
            model=caller.sketch, prompt="x", extra_headers={"Authorization": openai.Omit()}
        )
    assert missing.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        caller.sdk(api_key="not-a-token").images.generate(model=caller.sketch, prompt="x")

    with pytest.raises(openai.PermissionDeniedError):
        client.images.generate(
            model=caller.sketch, prompt="x", extra_headers={"OpenAI-Project": "not-mine"}
        )


def test_an_exhausted_quota_raises_rate_limit_error(caller: Caller) -> None:
    user_id = f"sdk-broke-{secrets.token_hex(4)}"
    with caller.stack.admin() as admin:
        quota = admin.put(f"/admin/v1/quotas/users/{user_id}", json={"credits_per_period": 0})
        assert quota.status_code == 200, quota.text
    broke = caller.sdk(api_key=caller.stack.stack.mint_token(user_id, [caller.project]))
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as refused:
        broke.images.generate(model=caller.sketch, prompt="x")
    assert refused.value.code == "insufficient_quota"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert time.monotonic() - started < 10
