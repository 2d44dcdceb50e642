"""The dead-letter path on a real nats-server: a JOBS message a consumer gave up on is deleted
once its job is failed, since interest retention would otherwise keep it forever (ADR 0015)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from atelier_contracts.jobs import JobStatus
from atelier_contracts.subjects import JOBS_STREAM, Durable
from atelier_contracts.testing import job_enriched, job_requested
from atelier_database import Database
from atelier_devstack import NatsInfo, Supervisor, start_nats
from atelier_dispatch.dead_letter import MaxDeliveriesAdvisory, handle_max_deliveries
from atelier_dispatch.handlers import JetStreamMessages
from atelier_dispatch.repository import TABLES
from atelier_dispatch.service import DispatchService
from atelier_messaging import ensure_streams

pytestmark = pytest.mark.integration

JOBS = JOBS_STREAM.name


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsInfo]:
    root: Path = tmp_path_factory.mktemp("nats")
    with Supervisor(root / "logs") as sup:
        yield start_nats(sup, root / "data")


@pytest.fixture
async def js(nats_server: NatsInfo) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(JOBS)
    await ensure_streams(nats_server.url)
    try:
        yield js
    finally:
        await nc.close()


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[DispatchService]:
    db = Database(database_url)
    await db.create_tables(TABLES)

    async def publish(*_: object) -> None:
        return None

    yield DispatchService(db, publish, max_attempts=3, retry_base_s=0.01)
    await db.dispose()


async def stored(js: JetStreamContext, seq: int) -> bool:
    try:
        await js.get_msg(JOBS, seq)
    except NotFoundError:
        return False
    return True


def advisory(consumer: str, seq: int) -> MaxDeliveriesAdvisory:
    return MaxDeliveriesAdvisory(stream=JOBS, consumer=consumer, stream_seq=seq, deliveries=20)


async def test_a_request_context_gave_up_on_is_deleted_after_its_job_is_failed(
    js: JetStreamContext, service: DispatchService
) -> None:
    request = job_requested()
    seq = (await js.publish("jobs.requested", request.model_dump_json().encode())).seq
    # Context gave up; dispatch's consumer has not read the request yet, so interest retention
    # would keep it for dispatch, and then for context, which never acks it.
    outcome = await handle_max_deliveries(
        advisory(Durable.CONTEXT_JOBS, seq), JetStreamMessages(js), service
    )

    assert outcome == f"job {request.job_id} failed; message deleted"
    job = await service.get_job(request.job_id)
    assert job is not None and job.status == JobStatus.FAILED and job.error is not None
    assert job.error.detail == "context-jobs-requested gave up after 20 tries"
    assert not await stored(js, seq)
    assert (await js.stream_info(JOBS)).state.messages == 0
    # Dispatch's consumer moves on past it.
    sub = await js.pull_subscribe_bind(durable=Durable.DISPATCH_JOBS_REQUESTED, stream=JOBS)
    with pytest.raises(TimeoutError):
        await sub.fetch(1, timeout=0.5)


async def test_dispatch_giving_up_deletes_what_no_other_consumer_still_needs(
    js: JetStreamContext, service: DispatchService
) -> None:
    request = job_requested()
    enriched = job_enriched(request)
    requested_seq = (await js.publish("jobs.requested", request.model_dump_json().encode())).seq
    enriched_seq = (await js.publish("jobs.enriched", enriched.model_dump_json().encode())).seq
    messages = JetStreamMessages(js)

    # jobs.enriched has no other reader: gone. The sweeper ends the job from its rows.
    outcome = await handle_max_deliveries(
        advisory(Durable.DISPATCH_JOBS_ENRICHED, enriched_seq), messages, service
    )
    assert outcome.endswith("message deleted") and not await stored(js, enriched_seq)

    # The request is still context's to handle: kept for it.
    outcome = await handle_max_deliveries(
        advisory(Durable.DISPATCH_JOBS_REQUESTED, requested_seq), messages, service
    )
    assert outcome.endswith("kept for its other consumers") and await stored(js, requested_seq)

    # Once context has acked it, dispatch giving up deletes it.
    sub = await js.pull_subscribe_bind(durable=Durable.CONTEXT_JOBS, stream=JOBS)
    for msg in await sub.fetch(1, timeout=5):
        await msg.ack_sync()
    await asyncio.sleep(0.2)
    outcome = await handle_max_deliveries(
        advisory(Durable.DISPATCH_JOBS_REQUESTED, requested_seq), messages, service
    )
    assert outcome.endswith("message deleted") and not await stored(js, requested_seq)
