"""The app's real frontend, replayed against the running stack beside a fake of its backend.

What the app's code does beyond its OpenAPI document (shared/reference/inkweld-app-behaviour.md):
its own tokens (access asked of its backend), the dialog's calls, `/generate` read the way the
dialog displays it, `generate-stream` parsed the way it parses server-sent events, a cropped cover
read back through the media route, and the media sync by name and size, which must converge.

Generation runs on the `openai` worker against the fake OpenAI server.
"""

from __future__ import annotations

import base64
import io
import json
import mimetypes
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e

API = "/api/v1"
PROJECT = "writer/saga"
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class App:
    """The app's frontend for three of its users."""

    stack: RunningStack
    writer: httpx.Client
    viewer: httpx.Client
    admin: httpx.Client


@pytest.fixture(scope="module")
def app(running_stack: RunningStack) -> Iterator[App]:
    backend = running_stack.app_backend
    url = running_stack.info.gateway_url

    def client(user_id: str) -> httpx.Client:
        token = backend.token(user_id)
        return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=90)

    with client("u-writer") as writer, client("u-viewer") as viewer, client("u-admin") as admin:
        yield App(running_stack, writer, viewer, admin)


@pytest.fixture(scope="module")
def profile(app: App) -> dict[str, Any]:
    """An `openai` profile, made by the app's own admin (its `isAdmin` flag)."""
    created = app.admin.post(
        f"{API}/admin/image-profiles",
        json={
            "name": f"App replay {uuid.uuid4().hex[:8]}",
            "provider": "openai",
            "modelId": "gpt-image-1",
            "supportedSizes": ["1024x1024", "1536x1024"],
            "defaultSize": "1024x1024",
            "modelConfig": {"baseUrl": f"{app.stack.openai_url}/v1"},
            "creditCost": 1,
        },
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def displayable(image: dict[str, Any]) -> bytes:
    """What the dialog shows: a `url` it can fetch without credentials, else the base64 bytes."""
    if image.get("url"):
        shown = httpx.get(image["url"], timeout=30)  # no token: an <img> sends none
        assert shown.status_code == 200
        return shown.content
    assert image.get("b64Json"), "neither b64Json nor url: the app fails the job"
    return base64.b64decode(image["b64Json"])


def app_stream_events(response: httpx.Response) -> list[dict[str, Any]]:
    """The app's SSE reading: `event:` and `data:` per block; an event whose name differs from
    its JSON `type` is ignored; a stream without a final event fails."""
    events = []
    for block in response.text.split("\n\n"):
        name, data = None, ""
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
        if name and data:
            payload = json.loads(data)
            if payload.get("type") == name:
                events.append(payload)
    assert events and events[-1]["type"] in ("completed", "error"), "Stream ended unexpectedly"
    return events


# --- the dialog ---------------------------------------------------------------------------------


def test_the_dialogs_calls(app: App, profile: dict[str, Any]) -> None:
    status = app.writer.get(f"{API}/ai/image/status").json()
    assert status["available"] is True
    openai = next(p for p in status["providers"] if p["type"] == "openai")
    assert openai["enabled"] and openai["available"]
    profiles = app.writer.get(f"{API}/ai/image-profiles").json()
    assert isinstance(profiles, list) and profile["id"] in {p["id"] for p in profiles}
    assert app.writer.get(f"{API}/ai/image/custom-sizes").json() == {"sizes": []}


def test_generate_answers_an_image_the_dialog_can_display(
    app: App, profile: dict[str, Any]
) -> None:
    response = app.writer.post(
        f"{API}/ai/image/generate",
        json={"prompt": "A harbour at night", "profileId": profile["id"], "projectKey": PROJECT},
    )
    assert response.status_code == 200, response.text
    [image] = response.json()["data"]
    assert displayable(image).startswith(PNG)


def test_generate_stream_ends_with_one_completed_event(app: App, profile: dict[str, Any]) -> None:
    response = app.writer.post(
        f"{API}/ai/image/generate-stream",
        json={"prompt": "A lantern", "profileId": profile["id"], "projectKey": PROJECT, "n": 1},
        headers={"Accept": "text/event-stream"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    final = app_stream_events(response)[-1]
    assert final["type"] == "completed", final
    [image] = final["result"]["data"]
    assert displayable(image).startswith(PNG)


def test_who_may_do_what_is_the_app_backends_answer(app: App, profile: dict[str, Any]) -> None:
    body = {"prompt": "x", "profileId": profile["id"], "projectKey": PROJECT}
    viewer = app.viewer.post(f"{API}/ai/image/generate", json=body)
    assert viewer.status_code == 400 and viewer.headers["x-atelier-error-code"] == "forbidden"
    streamed = app.viewer.post(f"{API}/ai/image/generate-stream", json=body)
    assert streamed.status_code == 403 and streamed.json()["error"]
    assert app.viewer.get(f"{API}/media/{PROJECT}").status_code == 200  # a viewer reads
    assert app.writer.get(f"{API}/media/writer/nothing-here").status_code == 404
    token = app.stack.app_backend.token("u-writer", scope="enrol")
    enrol = httpx.get(
        f"{app.stack.info.gateway_url}{API}/ai/image-profiles",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert enrol.status_code == 403
    assert app.writer.get(f"{API}/admin/image-profiles").status_code == 403


# --- covers and the media sync ------------------------------------------------------------------


@dataclass
class LocalLibrary:
    """The app's media in the browser, keyed by media id, and its sync (reference §3)."""

    items: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # id → (bytes, type)

    @staticmethod
    def name(media_id: str, kind: str) -> str:
        extension = {"image/jpeg": "jpg", "application/pdf": "pdf"}.get(kind)
        extension = extension or (mimetypes.guess_extension(kind) or ".bin").lstrip(".")
        return f"{media_id}.{extension}"

    def sync(self, client: httpx.Client) -> tuple[list[str], list[str]]:
        """One round; the names uploaded and downloaded."""
        listed = client.get(f"{API}/media/{PROJECT}")
        assert listed.status_code == 200, listed.text
        remote = {item["filename"]: item["size"] for item in listed.json()["items"]}
        local = {self.name(i, kind): (i, data, kind) for i, (data, kind) in self.items.items()}
        uploaded, downloaded = [], []
        for name, (_, data, kind) in local.items():
            if name not in remote:
                sent = client.post(f"{API}/media/{PROJECT}", files={"file": (name, data, kind)})
                assert sent.status_code == 200, sent.text
                uploaded.append(name)
            elif remote[name] != len(data):
                downloaded.append(name)
        for name in remote:
            if name not in local:
                got = client.get(f"{API}/media/{PROJECT}/{name}")
                assert got.status_code == 200
                kind = got.headers["content-type"].split(";")[0]
                self.items[name.rsplit(".", 1)[0]] = (got.content, kind)
                downloaded.append(name)
        return uploaded, downloaded


def test_a_cropped_cover_and_two_sync_rounds_that_converge(
    app: App, profile: dict[str, Any]
) -> None:
    generated = app.writer.post(
        f"{API}/ai/image/generate",
        json={"prompt": "A cliff path", "profileId": profile["id"], "projectKey": PROJECT},
    )
    assert generated.status_code == 200, generated.text
    png = displayable(generated.json()["data"][0])
    library = LocalLibrary()
    library.items[f"generated-{int(time.time() * 1000)}-0"] = (png, "image/png")

    # The cover: the generated image cropped in the browser, sent as an unnamed blob.
    with Image.open(io.BytesIO(png)) as picture:
        cropped = io.BytesIO()
        picture.crop((0, 0, picture.width // 2, picture.height // 2)).save(cropped, "PNG")
    cover = app.writer.post(
        f"{API}/projects/{PROJECT}/cover",
        files={"cover": ("blob", cropped.getvalue(), "image/png")},
    )
    assert cover.status_code == 200, cover.text
    name = cover.json()["coverImage"]
    read_back = app.writer.get(f"{API}/media/{PROJECT}/{name}")
    assert read_back.status_code == 200
    assert read_back.headers["content-type"].startswith("image/jpeg")
    with Image.open(io.BytesIO(read_back.content)) as jpeg:
        assert jpeg.format == "JPEG" and jpeg.width <= 1600 and jpeg.height <= 2560
    library.items[name.rsplit(".", 1)[0]] = (read_back.content, "image/jpeg")
    shown = app.writer.get(f"{API}/projects/{PROJECT}/cover")
    deadline = time.monotonic() + 30
    while shown.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.3)  # media records the durable choice a moment later
        shown = app.writer.get(f"{API}/projects/{PROJECT}/cover")
    assert shown.status_code == 200 and shown.content == read_back.content

    library.items[f"notes-{uuid.uuid4().hex[:8]}"] = (b"%PDF-1.7\n% notes\n", "application/pdf")

    first_up, _ = library.sync(app.writer)
    assert f"{next(iter(library.items))}.png" in first_up
    assert library.sync(app.writer) == ([], []), "the second round still had work"
    assert library.sync(app.writer) == ([], [])
