"""An element's picture, given as a data URL, reaches the provider as a reference image.

gateway → context (validates, downscales, stages under refs/<job>/) → dispatch (task carries the
staged keys) → OpenAI worker (loads the bytes, posts `/images/edits` with `image[]`) → the fake
OpenAI server, which records what it received.
"""

from __future__ import annotations

import base64
import io
import time
import uuid
from typing import TYPE_CHECKING

import pytest
from minio import Minio
from PIL import Image

from atelier_devstack.stack import STAGING_BUCKET
from tests.e2e.jobs import wait_final

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e


def _staged_references(running_stack: RunningStack, job_id: str, wait_s: float = 15) -> list[str]:
    """What is left under `refs/<job_id>/` in the staging bucket, once it is empty or `wait_s`
    passed (context deletes it after the final status event)."""
    s3 = running_stack.stack.s3
    assert s3 is not None
    client = Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=False, region=s3.region)
    deadline = time.monotonic() + wait_s
    while True:
        objects = client.list_objects(STAGING_BUCKET, prefix=f"refs/{job_id}/", recursive=True)
        left = [o.object_name for o in objects if o.object_name]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _png_data_url(width: int, height: int) -> tuple[str, bytes]:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 160)).save(out, format="PNG")
    data = out.getvalue()
    return f"data:image/png;base64,{base64.b64encode(data).decode('ascii')}", data


def test_a_data_url_image_reaches_the_provider_as_a_reference(
    running_stack: RunningStack,
) -> None:
    with running_stack.admin() as admin:
        created = admin.post(
            "/admin/v1/profiles",
            json={
                "name": "E2E OpenAI with references",
                "provider": "openai",
                "model": "gpt-image-1",
                "sizes": ["1024x1024"],
                "default_size": "1024x1024",
                "counts": [1],
                "max_reference_images": 2,
                "base_url": f"{running_stack.openai_url}/v1",
            },
        )
        assert created.status_code == 201, created.text
        profile_id = created.json()["id"]

    data_url, _ = _png_data_url(96, 64)
    marker = f"Harbour of glass {uuid.uuid4().hex[:8]}"
    body = {
        "project": "demo-project",
        "profile_id": profile_id,
        "prompt": marker,
        "context": {
            "elements": [
                {
                    "id": "mara",
                    "name": "Mara",
                    "type": "character",
                    "description": "A smuggler with a scar",
                    "image": {"data_url": data_url},
                },
                {
                    "id": "hidden",
                    "name": "Hidden",
                    "image": {"data_url": data_url},
                    "send": {"image": False, "description": False, "data": False},
                },
                {
                    "id": "local",
                    "name": "Local",
                    "image": {"url": "http://127.0.0.1:9/never-fetched.png"},
                },
            ]
        },
    }

    with running_stack.user() as user:
        preview = user.post("/v1/context/preview", json=body)
        assert preview.status_code == 200, preview.text
        shown = preview.json()
        [image] = shown["reference_images"]
        assert (image["element_id"], image["source"]) == ("mara", "data_url")
        assert (image["width"], image["height"], image["content_type"]) == (96, 64, "image/png")
        reasons = {e["element_id"]: e["reason"] for e in shown["excluded_images"]}
        assert "switched off" in reasons["hidden"]
        assert "loopback" in reasons["local"]
        assert shown["prompt"].startswith(f"{marker}\n\nContext:\nMara (character): A smuggler")
        assert shown["prompt"].endswith("Reference images, in order: Mara.")

        submitted = user.post("/v1/generations", json=body)
        assert submitted.status_code == 202, submitted.text
        job = wait_final(user, submitted.json()["id"])
        assert job["status"] == "completed", job
        # What the writer saw in the preview is what the job sent.
        assert job["assembled_prompt"] == shown["prompt"]
        assert job["reference_images"] == shown["reference_images"]
        assert job["excluded_images"] == shown["excluded_images"]

    # Once the job is final, context deletes what it staged for it.
    assert _staged_references(running_stack, job["id"]) == [], "refs/<job>/ was not cleaned up"

    edits = [e for e in running_stack.openai.edits if e.fields.get("prompt", "").startswith(marker)]
    assert len(edits) == 1, [e.fields for e in running_stack.openai.edits]
    [edit] = edits
    assert edit.fields["model"] == "gpt-image-1"
    assert edit.fields["prompt"] == shown["prompt"]
    [received] = edit.images
    assert received.content_type == "image/png"
    with Image.open(io.BytesIO(received.data)) as picture:
        assert picture.size == (96, 64)
        assert picture.getpixel((10, 10)) == (30, 90, 160)
