"""`POST /api/v1/ai/image/generate-stream`, read the way the app's frontend reads it.

The app uses this route instead of `/generate` for `openai` profiles (reference §1): refusals
before the stream are plain JSON; then `partial_image` events, exactly one `completed` or `error`,
and the end of the stream. An event whose name differs from its JSON `type` is ignored by the
app, and a stream that ends without a final event fails with "Stream ended unexpectedly".
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from inkweld_testkit import (
    USER_TOKEN,
    InkweldHarness,
    InkweldWorld,
    bearer,
    inkweld_gateway,
    openai_profile,
)

from atelier_contracts.profiles import GenerationSettings

API = "/api/v1"
DALLE = openai_profile().id
STORED_BYTES = b"\x89PNGdata"  # what gateway_testkit's fake storage serves for originals


def app_events(text: str) -> list[dict[str, Any]]:
    """The events the app acts on: `event:` and `data:` per block, the name equal to `type`."""
    events = []
    for block in text.split("\n\n"):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].strip())
            else:
                assert not line, f"the app's parser would not expect the line {line!r}"
        if name is None and not data:
            continue
        payload = json.loads("\n".join(data))
        assert payload["type"] == name, "the app ignores an event whose name differs from type"
        events.append(payload)
    return events


def final_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert events, "Stream ended unexpectedly"
    *partials, final = events
    assert all(e["type"] == "partial_image" for e in partials)
    assert final["type"] in ("completed", "error")
    return final


@pytest.fixture
async def ink() -> AsyncIterator[InkweldHarness]:
    async with inkweld_gateway(InkweldWorld(profiles=[openai_profile()])) as harness:
        yield harness


async def stream(ink: InkweldHarness, **body: Any) -> Any:
    return await ink.client.post(
        f"{API}/ai/image/generate-stream",
        json={"prompt": "A lighthouse", "profileId": DALLE, **body},
        headers={**bearer(USER_TOKEN), "Accept": "text/event-stream"},
    )


async def test_a_generation_streams_one_completed_event_with_the_images(
    ink: InkweldHarness,
) -> None:
    response = await stream(ink, n=2)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    final = final_of(app_events(response.text))
    assert final["type"] == "completed"
    result = final["result"]
    assert result["provider"] == "openai" and result["model"] == "dall-e-3"
    assert [base64.b64decode(image["b64Json"]) for image in result["data"]] == [STORED_BYTES] * 2
    assert all("url" not in image for image in result["data"])
    # A durable job like any other.
    [event] = ink.world.published
    assert event.count == 2 and event.project == "alpha"


async def test_a_failed_job_streams_one_error_event(ink: InkweldHarness) -> None:
    ink.world.outcome = "fail"
    response = await stream(ink)
    assert response.status_code == 200
    final = final_of(app_events(response.text))
    assert final == {"type": "error", "error": "The provider refused this prompt or its result."}


async def test_refusals_come_before_the_stream_as_plain_json(ink: InkweldHarness) -> None:
    unknown = await stream(ink, profileId="no-such-profile")
    assert unknown.status_code == 400
    assert unknown.headers["content-type"] == "application/json"
    assert "no-such-profile" in unknown.json()["error"]
    bad_size = await stream(ink, size="3x3")
    assert bad_size.status_code == 400 and bad_size.json()["error"]
    ink.world.settings = GenerationSettings(enabled=False, reason="Maintenance")
    ink.app.state.service.forget_profiles()
    off = await stream(ink)
    assert off.status_code == 503 and off.json()["error"]
    anonymous = await ink.client.post(f"{API}/ai/image/generate-stream", json={"prompt": "x"})
    assert anonymous.status_code == 401
    assert ink.world.published == []


async def test_a_job_still_running_at_the_limit_ends_the_stream_with_an_error() -> None:
    world = InkweldWorld(profiles=[openai_profile()], outcome="pending")
    env = {"ATELIER_GATEWAY_INKWELD_STREAM_TIMEOUT_S": "0.3"}
    async with inkweld_gateway(world, env=env) as ink:
        response = await stream(ink)
    final = final_of(app_events(response.text))
    assert final["type"] == "error"
    assert "media library" in final["error"]
