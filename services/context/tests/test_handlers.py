from datetime import UTC, datetime

from faststream.nats import TestNatsBroker

from atelier_context.main import create_app
from atelier_context.settings import Settings
from atelier_contracts.jobs import JobEnriched
from atelier_contracts.subjects import Subject
from atelier_contracts.testing import job_requested


async def test_requested_job_is_enriched_and_published() -> None:
    app = create_app(Settings(run_startup_hooks=False))
    broker = app.state.broker
    received: list[JobEnriched] = []

    @broker.subscriber(Subject.JOBS_ENRICHED, stream="ATELIER_JOBS")
    async def capture(event: JobEnriched) -> None:
        received.append(event)

    request = job_requested(job_id="j1", prompt="A lighthouse", occurred_at=datetime.now(UTC))
    async with TestNatsBroker(broker) as test_broker:
        await test_broker.publish(request, Subject.JOBS_REQUESTED)
    assert len(received) == 1
    assert received[0].job_id == "j1"
    assert received[0].assembled.prompt == "A lighthouse"
    assert received[0].event_id != request.event_id
