"""The largest request a writer can send stays small on NATS (issue 14, item 1; ADR 0017).

One job with the largest allowed inputs — a prompt of the profile's maximum length, 16 elements
with maximal descriptions and data, 4 element pictures as data URLs of the maximum size (3 MiB
decoded) — and a preview of the same request, on the real stack with NATS at its default
`max_payload` (1 MB). A core subscription to `>` records every message; those of the job (its id
in the subject or payload) and the `context.*` requests with their replies are measured.

Every message of the job stays under 64 KiB, what this part controls (`jobs.requested`,
`context.*` and their replies, `jobs.enriched`) first among them. The sizes of each kind are printed
(`pytest -s`), so the ones over 64 KiB that other services publish can be listed: a JetStream
delivery shows under its subject too (a publish and two consumers: 3 x `jobs.requested`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import struct
import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import nats
import pytest
from minio import Minio
from nats.aio.msg import Msg
from PIL import Image

from atelier_devstack.stack import STAGING_BUCKET

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e

KIB = 1024
PICTURE_BYTES = 3 * 1024 * 1024  # ATELIER_GATEWAY_MAX_DATA_URL_BYTES
PROMPT_MAX = 32_000  # the largest prompt_max_length a profile takes
DESCRIPTION_MAX = 20_000
DATA_MAX_BYTES = 64 * KIB  # ELEMENT_DATA_LIMITS: as JSON, strings of at most 10,000 characters
FINAL = {"completed", "partial", "failed", "cancelled"}
# Ours: the request, its enrichment, the context service's queries and commands.
OWNED = re.compile(r"^(jobs\.requested|jobs\.enriched|context\..+|reply to context\..+)$")


def png_of_exactly(size: int, seed: int) -> bytes:
    """A valid PNG of exactly `size` bytes: random pixels (so nothing compresses it away), padded
    with a private ancillary chunk that decoders skip."""
    noise = os.urandom(256 * 256 * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (256, 256), noise).save(out, format="PNG")
    data = out.getvalue()
    iend = data[-12:]
    padding = size - len(data) - 12
    assert padding > 0
    kind = b"atLr"  # ancillary, private, safe to copy
    body = bytes([seed % 256]) * padding
    chunk = struct.pack(">I", padding) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    picture = data[:-12] + chunk + iend
    assert len(picture) == size
    return picture


def data_url(picture: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(picture).decode("ascii")


def maximal_data(index: int) -> dict[str, str]:
    """Element data just under 64 KiB as compact JSON, every string at its 10,000 limit."""
    data: dict[str, str] = {}
    for n in range(6):
        data[f"k{n}"] = chr(ord("a") + index % 26) * 10_000
    used = len(json.dumps(data, separators=(",", ":")).encode())
    data["rest"] = "z" * (DATA_MAX_BYTES - used - len(',"rest":""'))
    assert len(json.dumps(data, separators=(",", ":")).encode()) == DATA_MAX_BYTES
    return data


@dataclass
class Seen:
    subject: str
    reply: str
    size: int
    data: bytes


def _header_size(msg: Msg) -> int:
    return sum(len(k) + len(v) + 4 for k, v in (msg.headers or {}).items())


def kind_of(seen: Seen, replies: dict[str, str], job_id: str, project: str) -> str:
    if seen.subject in replies:
        return f"reply to {replies[seen.subject]}"
    if seen.subject.startswith(("_INBOX.", "$JS.")) or seen.subject.count(".") > 4:
        try:
            kind = json.loads(seen.data).get("type")
        except (ValueError, AttributeError):
            kind = None
        return f"delivery of {kind}" if kind else f"{seen.subject.split('.')[0]}.* (other)"
    return seen.subject.replace(job_id, "<job>").replace(project, "<project>")


async def test_the_largest_request_keeps_every_message_small(running_stack: RunningStack) -> None:
    stack = running_stack.stack
    assert stack.nats is not None
    with running_stack.admin() as admin:
        created = admin.post(
            "/admin/v1/profiles",
            json={
                "name": "E2E largest request",
                "provider": "openai",
                "model": "gpt-image-1",
                "sizes": ["1024x1024"],
                "default_size": "1024x1024",
                "counts": [1],
                "max_reference_images": 4,
                "prompt_max_length": PROMPT_MAX,
                "base_url": f"{running_stack.openai_url}/v1",
            },
        )
        assert created.status_code == 201, created.text
        profile_id = created.json()["id"]

    project = "demo-project"
    elements: list[dict[str, Any]] = [
        {
            "id": f"element-{i:02d}",
            "name": f"Element {i}",
            "type": "character",
            "description": chr(ord("A") + i) * DESCRIPTION_MAX,
            "data": maximal_data(i),
            **(
                {"image": {"data_url": data_url(png_of_exactly(PICTURE_BYTES, i))}} if i < 4 else {}
            ),
        }
        for i in range(16)
    ]
    body = {
        "project": project,
        "profile_id": profile_id,
        "prompt": "P" * PROMPT_MAX,
        "context": {"elements": elements},
    }

    seen: list[Seen] = []
    nc = await nats.connect(stack.nats.url)

    async def record(msg: Msg) -> None:
        seen.append(Seen(msg.subject, msg.reply, len(msg.data) + _header_size(msg), msg.data))

    # Large pending limits: the recorder must see everything, not drop the big ones.
    await nc.subscribe(">", cb=record, pending_bytes_limit=512 * 1024 * 1024)
    await nc.flush()
    try:
        headers = {"Authorization": f"Bearer {running_stack.info.user_token}"}
        async with httpx.AsyncClient(
            base_url=running_stack.info.gateway_url, headers=headers, timeout=120
        ) as user:
            preview = await user.post("/v1/context/preview", json=body)
            assert preview.status_code == 200, preview.text
            assert len(preview.json()["reference_images"]) == 4, preview.json()

            submitted = await user.post("/v1/generations", json=body)
            assert submitted.status_code == 202, submitted.text
            job_id = submitted.json()["id"]
            job: dict[str, Any] = {}
            for _ in range(600):
                job = (await user.get(f"/v1/generations/{job_id}")).json()
                if job["status"] in FINAL:
                    break
                await asyncio.sleep(0.2)
            assert job["status"] == "completed", job
            assert len(job["reference_images"]) == 4, job["excluded_images"]
        await asyncio.sleep(1.0)  # the last events (outcome, clean-up) reach the recorder
        await nc.flush()
    finally:
        await nc.drain()

    # Every request's reply inbox (JetStream's publish acks included), to name what answers it;
    # context's requests and their replies, and the job's own messages, are measured.
    replies = {s.reply: s.subject for s in seen if s.reply.startswith("_INBOX.")}
    context_replies = {r for r, subject in replies.items() if subject.startswith("context.")}
    marker = job_id.encode()
    relevant = [
        s
        for s in seen
        if s.subject.startswith("context.")
        or s.subject in context_replies
        or job_id in s.subject
        or marker in s.data
    ]
    sizes: dict[str, list[int]] = defaultdict(list)
    for s in relevant:
        sizes[kind_of(s, replies, job_id, project)].append(s.size)
    table = "\n".join(
        f"{kind:60} {len(values):3} x max {max(values):>9,} B"
        for kind, values in sorted(sizes.items())
    )
    print(f"\nmessages of job {job_id} and of context.*:\n{table}")

    for kind in ("jobs.requested", "jobs.enriched", "context.command.input_slots"):
        assert kind in sizes, f"{kind} was not seen:\n{table}"
    assert "context.query.preview" in sizes, table
    owned_over = {k: max(v) for k, v in sizes.items() if OWNED.match(k) and max(v) > 64 * KIB}
    assert owned_over == {}, f"over 64 KiB:\n{table}"
    # Every other message too: the outcome carries the start of long texts, and the job read by
    # id its assembled prompt as what follows the prompt (ADR 0018 addendum).
    over = {k: max(v) for k, v in sizes.items() if max(v) > 64 * KIB}
    assert over == {}, f"over 64 KiB:\n{table}"
    assert "reply to jobs.query.get" in sizes, table
    assert "jobs.status.<project>.<job>" in sizes, table
    over_1mb = {k: max(v) for k, v in sizes.items() if max(v) > 1024 * KIB}
    assert over_1mb == {}, f"over 1 MiB:\n{table}"

    # The pictures were staged, not queued: the request names them by key.
    requested = next(s for s in relevant if s.subject == "jobs.requested")
    event = json.loads(requested.data)
    assert event["staged_context"]["key"].startswith(f"refs/{job_id}/in/")
    assert b"base64" not in requested.data
    s3 = stack.s3
    assert s3 is not None
    client = Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=False, region=s3.region)
    left: list[str] = []
    for _ in range(75):  # context deletes refs/<job>/ once the job is final
        objects = client.list_objects(STAGING_BUCKET, prefix=f"refs/{job_id}/", recursive=True)
        left = [o.object_name for o in objects if o.object_name]
        if not left:
            break
        await asyncio.sleep(0.2)
    assert left == [], "refs/<job>/ (staged inputs and references) was not cleaned up"
    previews = client.list_objects(STAGING_BUCKET, prefix="previews/", recursive=True)
    assert [o.object_name for o in previews] == [], "a preview's staged inputs were left"
