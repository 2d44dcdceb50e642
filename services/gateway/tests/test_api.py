"""The HTTP API against fake profiles/dispatch/media services on the in-memory broker."""

import asyncio
import re
from typing import Any

import pytest
from gateway_testkit import (
    Harness,
    World,
    auth,
    make_job,
    make_media,
    make_profile,
    make_token,
    running_gateway,
    test_settings,
)

from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.jobs import JobImage, JobStatus, JobStatusChanged
from atelier_contracts.profiles import GenerationSettings
from atelier_gateway.main import create_app
from atelier_gateway.streams import FeedClosed, StatusUpdate

VALID = {"project": "alpha", "profile_id": "sketch", "prompt": "A lighthouse in a storm"}


def error_of(response: Any) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"], body
    return response.status_code, body["error"]["code"]


# --- authentication --------------------------------------------------------------------------


SAMPLE_PATH_VALUES = {"job_id": "abc", "project": "alpha", "media_id": "m1"}
# Answer in another API's own error shape, with their own tests of a missing token: the app's
# routes (test_inkweld_api.py) and the OpenAI-compatible ones (tests/e2e/test_openai_sdk.py).
OTHER_ERROR_SHAPES = ("/api/", "/v1/images/")


def protected_routes() -> list[tuple[str, str]]:
    """Every route of the gateway's own API, from the app itself: a route added later is
    checked without anyone adding it here."""
    routes = []
    for path, operations in create_app(test_settings()).openapi()["paths"].items():
        if path.startswith(OTHER_ERROR_SHAPES):
            continue
        concrete = re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PATH_VALUES.get(m[1], "x1"), path)
        routes += [(method.upper(), concrete) for method in sorted(operations)]
    return routes


PROTECTED = protected_routes()


def test_the_route_list_is_the_apps() -> None:
    assert ("POST", "/v1/generations") in PROTECTED
    assert ("GET", "/v1/media/m1/thumbnail") in PROTECTED
    assert len(PROTECTED) >= 14


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_every_route_needs_a_token(gateway: Harness, method: str, path: str) -> None:
    kwargs: dict[str, Any] = {"json": VALID} if method == "POST" else {}
    response = await gateway.client.request(method, path, **kwargs)
    assert error_of(response) == (401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert gateway.world.published == []


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"Authorization": "Bearer nonsense"}, "not valid"),
        ({"Authorization": "Basic YWxpY2U6cHc="}, "bearer token"),
        (auth(make_token(secret="someone-elses-secret-0123456789abcdef")), "not valid"),
        (auth(make_token(expires_in=-120)), "expired"),
    ],
)
async def test_bad_tokens_are_401_with_a_reason(
    gateway: Harness, headers: dict[str, str], says: str
) -> None:
    response = await gateway.client.post("/v1/generations", json=VALID, headers=headers)
    assert error_of(response) == (401, "unauthorized")
    assert says in response.json()["error"]["message"]
    assert gateway.world.published == []


async def test_health_routes_need_no_token(gateway: Harness) -> None:
    assert (await gateway.client.get("/healthz")).status_code == 200
    assert (await gateway.client.get("/readyz")).json() == {"ready": True}


# --- features --------------------------------------------------------------------------------


async def test_features_lists_enabled_profiles_in_sort_order() -> None:
    world = World(
        profiles=[
            make_profile(id="b", name="Beta", sort_order=2),
            make_profile(id="off", name="Off", enabled=False),
            make_profile(id="a", name="Alpha", sort_order=1, max_reference_images=0),
        ]
    )
    async with running_gateway(world) as gw:
        response = await gw.client.get("/v1/features", headers=auth())
    assert response.status_code == 200
    features = response.json()
    assert features["enabled"] is True
    assert [p["id"] for p in features["profiles"]] == ["a", "b"]
    first = features["profiles"][0]
    assert {
        "id",
        "name",
        "provider",
        "sizes",
        "default_size",
        "counts",
        "options",
        "max_reference_images",
        "supports_reference_images",
    } <= set(first)
    assert first["supports_reference_images"] is False
    assert features["profiles"][1]["supports_reference_images"] is True
    assert first["options"][0]["name"] == "quality"


async def test_features_says_why_generation_is_off() -> None:
    world = World(settings=GenerationSettings(enabled=False, reason="Maintenance until 14:00."))
    async with running_gateway(world) as gw:
        features = (await gw.client.get("/v1/features", headers=auth())).json()
    assert features["enabled"] is False
    assert features["reason"] == "Maintenance until 14:00."


# --- submitting ------------------------------------------------------------------------------


async def test_a_valid_request_is_accepted_and_published_once(gateway: Harness) -> None:
    response = await gateway.client.post(
        "/v1/generations",
        json={**VALID, "size": "512x512", "count": 2, "options": {"quality": "high"}},
        headers=auth(make_token("alice", ["alpha"])),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    job_id = body["id"]
    assert body["status"] == "queued"
    assert body["project"] == "alpha"
    assert body["links"] == {
        "self": f"/v1/generations/{job_id}",
        "events": f"/v1/generations/{job_id}/events",
    }
    assert response.headers["location"] == f"/v1/generations/{job_id}"

    [event] = gateway.world.published
    assert event.job_id == job_id
    assert event.user_id == "alice"
    assert event.project == "alpha"
    assert event.profile.id == "sketch" and event.profile.provider == "offline"
    assert (event.size, event.count) == ("512x512", 2)
    assert event.options == {"quality": "high", "guidance": 7.5, "transparent": False}
    assert event.idempotency_key is None


async def test_submitting_to_a_project_not_granted_is_403(gateway: Harness) -> None:
    response = await gateway.client.post(
        "/v1/generations",
        json={**VALID, "project": "beta"},
        headers=auth(make_token("alice", ["alpha"])),
    )
    assert error_of(response) == (403, "project_not_granted")
    assert "beta" in response.json()["error"]["message"]
    assert gateway.world.published == []


INVALID: list[tuple[dict[str, Any], int, str]] = [
    ({"profile_id": "nope"}, 422, "unknown_profile"),
    ({"profile_id": "off"}, 422, "profile_disabled"),
    ({"size": "640x480"}, 422, "size_not_allowed"),
    ({"count": 3}, 422, "count_not_allowed"),
    ({"prompt": "   "}, 422, "empty_prompt"),
    ({"prompt": "x" * 101}, 422, "prompt_too_long"),
    ({"options": {"style": "vivid"}}, 422, "unknown_option"),
    ({"options": {"quality": "ultra"}}, 422, "invalid_option"),
    ({"options": {"seed": "seven"}}, 422, "invalid_option"),
    ({"project": "not a project!"}, 422, "invalid_input"),
    ({"prompt": None}, 422, "invalid_input"),
    ({"count": "many"}, 422, "invalid_input"),
    ({"target": {"kind": "element"}}, 422, "invalid_input"),
    ({"sizes": ["512x512"]}, 422, "invalid_input"),
    ({"context": {"elements": [{"id": "e1", "name": "Mara", "image": {}}]}}, 422, "invalid_input"),
]


@pytest.mark.parametrize(("change", "status", "code"), INVALID)
async def test_invalid_requests_are_refused_and_nothing_is_published(
    change: dict[str, Any], status: int, code: str
) -> None:
    world = World(profiles=[make_profile(), make_profile(id="off", name="Off", enabled=False)])
    async with running_gateway(world) as gw:
        response = await gw.client.post("/v1/generations", json={**VALID, **change}, headers=auth())
        assert error_of(response) == (status, code)
        assert gw.world.published == []


async def test_generation_switched_off_is_403_and_nothing_is_published() -> None:
    world = World(settings=GenerationSettings(enabled=False, reason="Budget used up."))
    async with running_gateway(world) as gw:
        response = await gw.client.post("/v1/generations", json=VALID, headers=auth())
        assert error_of(response) == (403, "generation_disabled")
        assert "Budget used up." in response.json()["error"]["message"]
        assert gw.world.published == []


async def test_malformed_json_is_400(gateway: Harness) -> None:
    response = await gateway.client.post(
        "/v1/generations",
        content=b'{"project": "alpha", ',
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert error_of(response) == (400, "malformed_json")
    assert gateway.world.published == []


async def test_the_same_idempotency_key_gives_the_same_job(gateway: Harness) -> None:
    headers = {**auth(), "Idempotency-Key": "dialog-42"}
    first = await gateway.client.post("/v1/generations", json=VALID, headers=headers)
    again = await gateway.client.post("/v1/generations", json=VALID, headers=headers)
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert len(gateway.world.published) == 1
    assert gateway.world.published[0].idempotency_key == "dialog-42"

    other = await gateway.client.post(
        "/v1/generations", json=VALID, headers={**auth(), "Idempotency-Key": "dialog-43"}
    )
    assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
    bob = await gateway.client.post(
        "/v1/generations",
        json=VALID,
        headers={**auth(make_token("bob", ["alpha"])), "Idempotency-Key": "dialog-42"},
    )
    assert bob.status_code == 202 and bob.json()["id"] != first.json()["id"]


async def test_a_keyed_submission_asks_dispatch_only_when_it_is_a_retry(gateway: Harness) -> None:
    # Profiles' reservation tells a retry from a first submission (issue 14): a first one costs
    # no lookup in dispatch, the busiest service under a burst.
    headers = {**auth(), "Idempotency-Key": "dialog-7"}
    first = await gateway.client.post("/v1/generations", json=VALID, headers=headers)
    assert first.status_code == 202
    assert gateway.world.job_queries == 0
    again = await gateway.client.post("/v1/generations", json=VALID, headers=headers)
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    assert gateway.world.job_queries == 1
    assert len(gateway.world.published) == 1


async def test_a_keyed_retry_gets_its_job_after_the_profile_was_disabled(
    gateway: Harness,
) -> None:
    headers = {**auth(), "Idempotency-Key": "dialog-8"}
    first = await gateway.client.post("/v1/generations", json=VALID, headers=headers)
    gateway.world.profiles = [
        p.model_copy(update={"enabled": False}) for p in gateway.world.profiles
    ]
    gateway.app.state.service.forget_profiles()
    again = await gateway.client.post("/v1/generations", json=VALID, headers=headers)
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    fresh = await gateway.client.post(
        "/v1/generations", json=VALID, headers={**auth(), "Idempotency-Key": "dialog-9"}
    )
    assert fresh.status_code >= 400  # a new key meets the disabled profile


async def test_an_idempotency_key_reused_for_another_request_is_422(gateway: Harness) -> None:
    headers = {**auth(), "Idempotency-Key": "k"}
    await gateway.client.post("/v1/generations", json=VALID, headers=headers)
    response = await gateway.client.post(
        "/v1/generations", json={**VALID, "prompt": "Something else"}, headers=headers
    )
    assert error_of(response) == (422, "idempotency_key_reused")
    assert len(gateway.world.published) == 1


ELEMENT = {"id": "mara", "name": "Mara Vell", "data": {"eyes": "green"}}


@pytest.mark.parametrize(
    "changed",
    [
        {"options": {"quality": "high"}},
        {"context": {"elements": [{**ELEMENT, "data": {"eyes": "grey"}}]}},
        {"context": {"elements": [{**ELEMENT, "send": {"image": True, "data": False}}]}},
        {"context": {"elements": [ELEMENT], "project_title": "The Salt Road"}},
        {"target": {"kind": "cover"}},
        {"size": "512x512"},
    ],
)
async def test_an_idempotency_key_is_compared_on_the_whole_request(
    gateway: Harness, changed: dict[str, Any]
) -> None:
    # Issue 15, item 7: options, context and target were not compared, and the old job came back.
    first = {**VALID, "options": {"quality": "low"}, "context": {"elements": [ELEMENT]}}
    headers = {**auth(), "Idempotency-Key": "k"}
    assert (
        await gateway.client.post("/v1/generations", json=first, headers=headers)
    ).status_code == 202
    response = await gateway.client.post(
        "/v1/generations", json={**first, **changed}, headers=headers
    )
    status, code = error_of(response)
    assert (status, code) == (422, "idempotency_key_reused")
    assert "different request" in response.json()["error"]["message"]
    # The same body again (keys in another order, size spelt differently) is the same request.
    again = {"context": first["context"], **{k: v for k, v in first.items() if k != "context"}}
    repeat = await gateway.client.post(
        "/v1/generations", json={**again, "size": " 1024X1024"}, headers=headers
    )
    assert repeat.status_code == 422  # the first left the size out: not the same request
    same = await gateway.client.post("/v1/generations", json=again, headers=headers)
    assert same.status_code == 200
    assert len(gateway.world.published) == 1
    assert gateway.world.published[0].request_digest


async def test_a_retry_before_dispatch_recorded_the_job_republishes_the_same_event() -> None:
    # JetStream drops the second publish as a duplicate of the first (same Nats-Msg-Id).
    async with running_gateway(World(record_requested_jobs=False)) as gw:
        headers = {**auth(), "Idempotency-Key": "k"}
        first = await gw.client.post("/v1/generations", json=VALID, headers=headers)
        again = await gw.client.post("/v1/generations", json=VALID, headers=headers)
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        first_event, again_event = gw.world.published
        assert first_event.event_id == again_event.event_id


async def test_an_overlong_idempotency_key_is_refused(gateway: Harness) -> None:
    response = await gateway.client.post(
        "/v1/generations", json=VALID, headers={**auth(), "Idempotency-Key": "k" * 201}
    )
    assert error_of(response) == (422, "invalid_idempotency_key")
    assert gateway.world.published == []


# --- reading jobs ----------------------------------------------------------------------------


async def test_a_job_shows_image_urls_and_a_user_facing_error(gateway: Harness) -> None:
    gateway.world.jobs["job-1"] = make_job(
        "job-1",
        status=JobStatus.PARTIAL,
        count=2,
        images=[
            JobImage(
                media_id="m1",
                index=0,
                width=64,
                height=64,
                content_type="image/png",
                profile_id="paint",
                profile_name="Paint",
                credit_cost=2.5,
                fallback_reason="'Sketch' (offline) was unavailable after 3 attempts: timeout",
            )
        ],
        error=ErrorInfo(
            error_class=ErrorClass.CONTENT_BLOCKED,
            message="The provider refused this prompt.",
            detail="moderation_v2 flagged: category=violence score=0.97",
            stage="output",
        ),
    )
    response = await gateway.client.get("/v1/generations/job-1", headers=auth())
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "partial"
    assert job["images"] == [
        {
            "media_id": "m1",
            "index": 0,
            "width": 64,
            "height": 64,
            "content_type": "image/png",
            # Which profile made it, at what price, and why not the job's own (issue 16).
            "profile_id": "paint",
            "profile_name": "Paint",
            "credit_cost": 2.5,
            "fallback_reason": "'Sketch' (offline) was unavailable after 3 attempts: timeout",
            "content_url": "/v1/media/m1/content",
            "thumbnail_url": "/v1/media/m1/thumbnail",
        }
    ]
    # Provider detail is for admins (the audit), never for the user.
    assert job["error"] == {
        "class": "content_blocked",
        "error_class": "content_blocked",
        "message": "The provider refused this prompt.",
        "stage": "output",
        # What the provider said of the block, machine-readable (issue 21); none known here.
        "category": None,
        "input": None,
        "retry_after_s": None,
    }
    assert "moderation" not in response.text


async def test_a_job_of_another_project_is_404(gateway: Harness) -> None:
    gateway.world.jobs["job-x"] = make_job("job-x", project="beta")
    response = await gateway.client.get("/v1/generations/job-x", headers=auth())
    assert error_of(response) == (404, "not_found")
    # ...and looks exactly like one that does not exist.
    missing = await gateway.client.get("/v1/generations/job-none", headers=auth())
    assert (
        missing.json()["error"]["message"].replace("job-none", "job-x")
        == (response.json()["error"]["message"])
    )


async def test_a_job_recorded_just_after_the_202_is_found(gateway: Harness) -> None:
    # An id the gateway made for this user (as its 202 answered it) is waited for.
    late = gateway.app.state.service.job_ids.new("alice", None)

    async def dispatch_records_it_late() -> None:
        await asyncio.sleep(0.05)
        gateway.world.jobs[late] = make_job(late)

    task = asyncio.create_task(dispatch_records_it_late())
    response = await gateway.client.get(f"/v1/generations/{late}", headers=auth())
    await task
    assert response.status_code == 200
    assert gateway.world.job_queries >= 2


async def test_the_projects_active_jobs(gateway: Harness) -> None:
    gateway.world.jobs.update(
        {
            "a": make_job("a", status=JobStatus.GENERATING),
            "b": make_job("b", status=JobStatus.COMPLETED),
            "c": make_job("c", project="beta", status=JobStatus.GENERATING),
        }
    )
    active = await gateway.client.get("/v1/projects/alpha/generations", headers=auth())
    assert [j["id"] for j in active.json()["jobs"]] == ["a"]
    every = await gateway.client.get("/v1/projects/alpha/generations?active=false", headers=auth())
    assert sorted(j["id"] for j in every.json()["jobs"]) == ["a", "b"]
    other = await gateway.client.get("/v1/projects/beta/generations", headers=auth())
    assert error_of(other) == (404, "not_found")


# --- media -----------------------------------------------------------------------------------


@pytest.fixture
def with_media(gateway: Harness) -> Harness:
    gateway.world.media.update(
        {
            "m1": make_media("m1"),
            "m2": make_media("m2", index=1),
            "gone": make_media("gone", original_key="missing.png", thumbnail_key="missing.webp"),
            "theirs": make_media("theirs", project="beta"),
        }
    )
    return gateway


async def test_media_library_of_a_project(with_media: Harness) -> None:
    response = await with_media.client.get("/v1/projects/alpha/media?limit=2", headers=auth())
    assert response.status_code == 200
    page = response.json()
    assert page["total"] == 3
    assert [item["id"] for item in page["items"]] == ["m1", "m2"]
    assert page["items"][0]["content_url"] == "/v1/media/m1/content"
    assert page["items"][0]["thumbnail_url"] == "/v1/media/m1/thumbnail"
    assert "original_key" not in page["items"][0]  # storage layout stays inside

    other = await with_media.client.get("/v1/projects/beta/media", headers=auth())
    assert error_of(other) == (404, "not_found")


async def test_media_metadata(with_media: Harness) -> None:
    response = await with_media.client.get("/v1/media/m1", headers=auth())
    assert response.status_code == 200
    assert response.json()["prompt"] == "A lighthouse"
    for hidden in ("theirs", "nothing"):
        response = await with_media.client.get(f"/v1/media/{hidden}", headers=auth())
        assert error_of(response) == (404, "not_found")


async def test_original_bytes_are_streamed_with_cache_headers(with_media: Harness) -> None:
    response = await with_media.client.get("/v1/media/m1/content", headers=auth())
    assert response.status_code == 200
    assert response.content == b"\x89PNGdata"
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "private, max-age=3600"
    assert response.headers["x-content-type-options"] == "nosniff"
    etag = response.headers["etag"]

    cached = await with_media.client.get(
        "/v1/media/m1/content", headers={**auth(), "If-None-Match": etag}
    )
    assert cached.status_code == 304 and cached.content == b""


async def test_thumbnail_bytes(with_media: Harness) -> None:
    response = await with_media.client.get("/v1/media/m1/thumbnail", headers=auth())
    assert response.status_code == 200
    assert response.content == b"RIFFwebp"
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["cache-control"] == "private, max-age=3600"


@pytest.mark.parametrize("variant", ["content", "thumbnail"])
async def test_bytes_of_hidden_or_missing_media_are_404(with_media: Harness, variant: str) -> None:
    for media_id in ("theirs", "nothing", "gone"):
        response = await with_media.client.get(f"/v1/media/{media_id}/{variant}", headers=auth())
        assert error_of(response) == (404, "not_found"), media_id


# --- services not answering ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("down", "method", "path", "service"),
    [
        ("profiles", "GET", "/v1/features", "profiles"),
        ("profiles", "POST", "/v1/generations", "profiles"),
        ("dispatch", "GET", "/v1/generations/job-1", "dispatch"),
        ("dispatch", "GET", "/v1/projects/alpha/generations", "dispatch"),
        ("media", "GET", "/v1/projects/alpha/media", "media"),
        ("media", "GET", "/v1/media/m1/content", "media"),
    ],
)
async def test_a_service_not_answering_is_503(
    down: str, method: str, path: str, service: str
) -> None:
    services = {"profiles", "dispatch", "media"} - {down}
    async with running_gateway(services=services) as gw:
        kwargs: dict[str, Any] = {"json": VALID} if method == "POST" else {}
        response = await gw.client.request(method, path, headers=auth(), **kwargs)
        assert error_of(response) == (503, "unavailable")
        assert response.json()["error"]["message"] == (
            f"The {service} service is not answering; try again shortly."
        )
        assert gw.world.published == []


async def test_a_keyed_submit_still_works_while_dispatch_is_away() -> None:
    async with running_gateway(services={"profiles", "media"}) as gw:
        response = await gw.client.post(
            "/v1/generations", json=VALID, headers={**auth(), "Idempotency-Key": "k"}
        )
        assert response.status_code == 202
        assert len(gw.world.published) == 1


# --- server-sent events ----------------------------------------------------------------------


class ScriptedSubscription:
    def __init__(self, *events: JobStatusChanged) -> None:
        self.events = list(events)
        self.subjects: list[str] = []
        self.closed = 0

    async def next_update(self, wait_s: float) -> StatusUpdate | None:
        if not self.events:
            raise FeedClosed
        event = self.events.pop(0)
        return StatusUpdate(event.job, str(event.event_id))

    async def close(self) -> None:
        self.closed += 1


def parse_sse(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            events.append(fields)
    return events


async def test_job_events_stream_state_then_changes_until_final(
    gateway: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    gateway.world.jobs["job-1"] = make_job("job-1", status=JobStatus.ENRICHING)
    start = gateway.world.jobs["job-1"].updated_at
    generating = JobStatusChanged(
        job=make_job("job-1", status=JobStatus.GENERATING, updated_at=start + timedelta(seconds=1))
    )
    done = JobStatusChanged(
        job=make_job("job-1", status=JobStatus.COMPLETED, updated_at=start + timedelta(seconds=2))
    )
    stale = JobStatusChanged(job=make_job("job-1", status=JobStatus.QUEUED))
    subscription = ScriptedSubscription(stale, generating, done)

    async def subscribe_status(subject: str) -> ScriptedSubscription:
        subscription.subjects.append(subject)
        return subscription

    monkeypatch.setattr(gateway.app.state.backends, "subscribe_status", subscribe_status)
    response = await gateway.client.get("/v1/generations/job-1/events", headers=auth())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert [e["event"] for e in events] == ["status"] * 3
    assert "id" not in events[0]  # the state read from dispatch, not an event
    assert [e.get("id") for e in events[1:]] == [str(generating.event_id), str(done.event_id)]
    import json

    assert [json.loads(e["data"])["status"] for e in events] == [
        "enriching",
        "generating",
        "completed",
    ]
    assert json.loads(events[0]["data"])["links"]["events"] == "/v1/generations/job-1/events"
    assert subscription.subjects == ["jobs.*.*.job-1"]
    assert subscription.closed >= 1


async def test_job_events_of_unknown_or_hidden_jobs_are_404_before_streaming(
    gateway: Harness,
) -> None:
    gateway.world.jobs["theirs"] = make_job("theirs", project="beta")
    for job_id in ("theirs", "nothing"):
        response = await gateway.client.get(f"/v1/generations/{job_id}/events", headers=auth())
        assert error_of(response) == (404, "not_found")
        assert response.headers["content-type"] == "application/json"


async def test_project_events_of_a_project_not_granted_are_404(gateway: Harness) -> None:
    response = await gateway.client.get("/v1/projects/beta/generations/events", headers=auth())
    assert error_of(response) == (404, "not_found")


async def test_settings_give_the_documented_defaults() -> None:
    settings = test_settings()
    assert settings.port == 8080
    assert settings.jwt_issuer == "atelier"
    assert settings.job_lookup_grace_s == 0.2  # overridden for tests; default below
    from atelier_gateway.settings import Settings

    defaults = Settings()
    assert (defaults.job_lookup_grace_s, defaults.sse_ping_s) == (2.0, 15.0)
    assert "jwt_secret" in Settings.secret_fields
