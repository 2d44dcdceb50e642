"""Nothing staged outlives its job (issue 17, item 5; docs/reliability.md), on the real stack.

A stack of its own, so its sweeps can run every second without touching anyone else's objects:
context's sweep every second with its real 24 h age (so only the cancellation rule can remove
what the first test leaves), media's every second with a 10 s grace for unlanded results.

1. A job is cancelled while context is staging its references: the gateway has staged the
   element picture under `refs/<job>/in/`, context is fetching the second element's picture (a
   slow server that answers only when told) when the writer cancels. The final clean-up runs
   before context has written anything; then context writes the job's references, after the
   cancel. After the sweep nothing of the job is left in either bucket.
2. A `generated/` object no media record names (a worker that died after its PUT) is removed
   after the grace; a landed image's object stays.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from minio import Minio
from nats.aio.msg import Msg
from PIL import Image

from atelier_devstack.stack import MEDIA_BUCKET, STAGING_BUCKET, RunInfo, Stack, StackConfig
from tests.e2e.jobs import FINAL

pytestmark = pytest.mark.e2e

UNLANDED_GRACE_S = 10


def _png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 32), colour).save(out, format="PNG")
    return out.getvalue()


class SlowPicture:
    """A picture server on loopback that answers only once `release` is set: while context
    waits on it, the job is "having its references staged"."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()
        picture = _png((40, 120, 60))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.asked.set()
                outer.release.wait(30)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(picture)))
                self.end_headers()
                self.wfile.write(picture)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slow.png"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


@dataclass
class SweptStack:
    stack: Stack
    info: RunInfo
    s3: Minio
    profile_id: str  # offline, takes 2 reference images

    def user(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.info.gateway_url,
            headers={"Authorization": f"Bearer {self.info.user_token}"},
            timeout=30,
        )

    def keys(self, bucket: str, prefix: str) -> list[str]:
        objects = self.s3.list_objects(bucket, prefix=prefix, recursive=True)
        return sorted(o.object_name for o in objects if o.object_name)

    def wait_gone(self, bucket: str, prefix: str, timeout_s: float) -> list[str]:
        """What is left under `prefix` once it is empty or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        while (left := self.keys(bucket, prefix)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left


@pytest.fixture(scope="module")
def swept_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SweptStack]:
    var_dir: Path = tmp_path_factory.mktemp("swept-stack")
    stack = Stack(
        StackConfig(
            var_dir=var_dir,
            prefer_standard_ports=False,
            database_url=os.environ.get("ATELIER_E2E_DATABASE_URL"),
            extra_env={
                # Context: its real age (24 h), swept every second: only a cancellation mark
                # can make a young object go.
                "ATELIER_CONTEXT_SWEEP_INTERVAL_S": "1",
                # The slow picture server is on loopback, refused by the SSRF guard otherwise.
                "ATELIER_CONTEXT_FETCH_ALLOW_LIST": "127.0.0.1",
                "ATELIER_MEDIA_SWEEP_INTERVAL_S": "1",
                "ATELIER_MEDIA_UNLANDED_MAX_AGE_S": str(UNLANDED_GRACE_S),
            },
        )
    )
    try:
        info = stack.start()
        s3 = stack.s3
        assert s3 is not None
        client = Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=False, region=s3.region)
        with httpx.Client(
            base_url=info.admin_url,
            headers={"Authorization": f"Bearer {info.admin_token}"},
            timeout=30,
        ) as admin:
            created = admin.post(
                "/admin/v1/profiles",
                json={
                    "name": "Sketch with references (offline)",
                    "provider": "offline",
                    "model": "offline-sketch",
                    "sizes": ["256x256"],
                    "default_size": "256x256",
                    "counts": [1],
                    "max_reference_images": 2,
                },
            )
            assert created.status_code == 201, created.text
        yield SweptStack(stack, info, client, str(created.json()["id"]))
    finally:
        stack.stop()


async def test_a_job_cancelled_while_its_references_are_staged_leaves_nothing(
    swept_stack: SweptStack,
) -> None:
    slow = SlowPicture()
    picture = _png((200, 40, 40))
    body = {
        "project": "demo-project",
        "profile_id": swept_stack.profile_id,
        "prompt": "A harbour at dusk",
        "context": {
            "elements": [
                {
                    "id": "mara",
                    "name": "Mara",
                    "image": {
                        "data_url": "data:image/png;base64," + base64.b64encode(picture).decode()
                    },
                },
                {"id": "harbour", "name": "Harbour", "image": {"url": slow.url}},
            ]
        },
    }
    nats_info = swept_stack.stack.nats
    assert nats_info is not None
    nc = await nats.connect(nats_info.url)
    enriched: list[dict[str, Any]] = []
    finished: list[dict[str, Any]] = []

    async def record_enriched(msg: Msg) -> None:
        enriched.append(json.loads(msg.data))

    async def record_finished(msg: Msg) -> None:
        finished.append(json.loads(msg.data))

    await nc.subscribe("jobs.enriched", cb=record_enriched)
    await nc.subscribe("jobs.finished.>", cb=record_finished)
    await nc.flush()
    try:
        with swept_stack.user() as user:
            submitted = await asyncio.to_thread(user.post, "/v1/generations", json=body)
            assert submitted.status_code == 202, submitted.text
            job_id = submitted.json()["id"]
            refs = f"refs/{job_id}/"

            # Context is fetching the second picture; the gateway's staged first one is there.
            assert await asyncio.to_thread(slow.asked.wait, 30), "context never asked"
            assert swept_stack.keys(STAGING_BUCKET, refs) == [f"{refs}in/0"]

            cancelled = await asyncio.to_thread(user.post, f"/v1/generations/{job_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["status"] == "cancelled"
            # The job's final clean-up (jobs.finished → context) takes the gateway's input.
            left = await asyncio.to_thread(swept_stack.wait_gone, STAGING_BUCKET, refs, 15)
            assert left == [], "the final clean-up did not run"
            assert [e["job"]["status"] for e in finished if e["job"]["id"] == job_id] == [
                "cancelled"
            ]

            # Now context gets its picture and stages the job's references: after the cancel,
            # after the clean-up.
            slow.release.set()
            for _ in range(150):
                ours = [e for e in enriched if e["job_id"] == job_id]
                if ours:
                    break
                await asyncio.sleep(0.2)
            assert ours, "context never enriched the job"
            staged = [r["staging_key"] for r in ours[0]["assembled"]["reference_images"]]
            assert staged == [f"{refs}0.png", f"{refs}1.png"]

            # Its sweep (every second, with its real 24 h age) finds them: the job is cancelled.
            left = await asyncio.to_thread(swept_stack.wait_gone, STAGING_BUCKET, refs, 15)
            assert left == [], "staged after the cancel, and never swept"
            assert swept_stack.keys(MEDIA_BUCKET, f"generated/{job_id}/") == []
            job = (await asyncio.to_thread(user.get, f"/v1/generations/{job_id}")).json()
            assert job["status"] == "cancelled" and job["images"] == []
        log = swept_stack.stack.supervisor.process("context").log_path.read_text()
        assert "stale staged objects deleted" in log
    finally:
        slow.close()
        await nc.drain()


def test_a_generated_object_no_media_record_names_is_removed_after_the_grace(
    swept_stack: SweptStack,
) -> None:
    with swept_stack.user() as user:
        submitted = user.post(
            "/v1/generations",
            json={
                "project": "demo-project",
                "profile_id": swept_stack.info.profile_id,
                "prompt": "A lighthouse",
                "count": 1,
            },
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 60
        while (job := user.get(f"/v1/generations/{job_id}").json())["status"] not in FINAL:
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["status"] == "completed", job
    [landed] = swept_stack.keys(MEDIA_BUCKET, f"generated/{job_id}/")

    # A worker that died after its PUT: an image of a task no gen.completed ever named.
    data = _png((10, 20, 30))
    sha = hashlib.sha256(data).hexdigest()
    orphan = f"generated/{uuid.uuid4()}/{uuid.uuid4()}.0/0-{sha[:16]}.png"
    swept_stack.s3.put_object(MEDIA_BUCKET, orphan, io.BytesIO(data), len(data), "image/png")
    written = time.monotonic()

    left = swept_stack.wait_gone(MEDIA_BUCKET, orphan, UNLANDED_GRACE_S + 20)
    assert left == [], "an unlanded object outlived the grace"
    # Not before the grace: it was young, and a young one may still be landed.
    assert time.monotonic() - written >= UNLANDED_GRACE_S - 1
    # The landed image is older than the grace by now, and stays: its record names it.
    assert swept_stack.keys(MEDIA_BUCKET, f"generated/{job_id}/") == [landed]
    with swept_stack.user() as user:
        [image] = user.get(f"/v1/generations/{job_id}").json()["images"]
        content = user.get(f"/v1/media/{image['media_id']}/content")
        assert content.status_code == 200 and content.content[:4] == b"\x89PNG"
