"""Waiting for a durable job to end, for the routes that answer synchronously (the Inkweld
facade's generate, the OpenAI-compatible images routes)."""

from __future__ import annotations

import asyncio

from atelier_contracts.errors import NotFound, Unavailable
from atelier_contracts.jobs import FINAL_STATUSES, JobView
from atelier_gateway.auth import User
from atelier_gateway.service import GatewayService


async def wait_for_final(
    service: GatewayService, user: User, job_id: str, wait_s: float
) -> JobView | None:
    """The job once it ended, or None if it is still running after `wait_s`.

    Follows the job's status subject (subscribed before the state is read, as the SSE route
    does), so the answer goes out the moment the job ends. Stopping to wait changes nothing
    for the job: it is durable and lands whoever is still listening.
    """
    try:
        async with asyncio.timeout(wait_s):
            while True:
                try:
                    stream = await service.open_job_stream(user, job_id)
                except (NotFound, Unavailable):
                    # Not recorded yet, or dispatch is away for a moment: the job is queued
                    # durably either way, so keep asking until the wait is over.
                    await asyncio.sleep(0.2)
                    continue
                last: JobView | None = None
                try:
                    async for update in stream.updates:
                        last = update.job
                finally:
                    await stream.updates.aclose()
                    await stream.subscription.close()
                if last is not None and last.status in FINAL_STATUSES:
                    return last
                await asyncio.sleep(0.2)  # the feed closed (reconnecting): read again
    except TimeoutError:
        return None
