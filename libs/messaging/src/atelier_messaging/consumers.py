"""Durable consumers declared with their stream, before anything is published into it.

Under interest retention (ADR 0015) JetStream keeps a message only for the consumers that exist
when it is stored: a `jobs.requested` published before context's or dispatch's durable existed
would never reach it, and with no consumer at all it is dropped at once. So `ensure_streams`,
which every publisher awaits before its first publish, declares the consumers of interest
streams itself, with the settings their services subscribe with (`durable_subscriber` refuses to
differ: a consumer that exists is used as it is, never updated).
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.api import ConsumerConfig

from atelier_contracts.subjects import Durable, Subject

# How long JetStream waits for a delivered message's ack before it hands the message to another
# process of the consumer. Short, so that a message held by a process that died (SIGKILL, a lost
# node) is back within seconds; a handler that is slow but alive is never redelivered meanwhile,
# because the broker's middleware tells JetStream it is still working every third of it.
DEFAULT_ACK_WAIT_S = 15.0


@dataclass(frozen=True)
class DurableSpec:
    subject: str
    durable: str
    max_deliver: int = 20
    ack_wait_s: float = DEFAULT_ACK_WAIT_S
    max_ack_pending: int | None = None

    def config(self) -> ConsumerConfig:
        return consumer_config(
            self.subject, self.durable, self.max_deliver, self.ack_wait_s, self.max_ack_pending
        )


def consumer_config(
    subject: str,
    durable: str,
    max_deliver: int,
    ack_wait_s: float,
    max_ack_pending: int | None,
) -> ConsumerConfig:
    """A durable pull consumer with explicit acks (nats-py's default ack policy)."""
    return ConsumerConfig(
        durable_name=durable,
        max_deliver=max_deliver,
        ack_wait=ack_wait_s,
        filter_subject=subject,
        max_ack_pending=max_ack_pending,
    )


# Every durable consumer reading an interest stream (ATELIER_JOBS). A message leaves the stream
# once each consumer of its subject acked (or terminated) it; one that ran out of deliveries is
# deleted by dispatch's dead-letter path once its job is failed.
INTEREST_CONSUMERS: tuple[DurableSpec, ...] = (
    DurableSpec(Subject.JOBS_REQUESTED, Durable.CONTEXT_JOBS),
    DurableSpec(Subject.JOBS_REQUESTED, Durable.DISPATCH_JOBS_REQUESTED, max_deliver=50),
    DurableSpec(Subject.JOBS_ENRICHED, Durable.DISPATCH_JOBS_ENRICHED, max_deliver=50),
)


def declared_consumer(durable: str) -> DurableSpec | None:
    return next((spec for spec in INTEREST_CONSUMERS if spec.durable == durable), None)
