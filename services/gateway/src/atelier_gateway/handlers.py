"""The gateway's NATS subscriptions and declared sends (the subject registry, ADR 0019).

The gateway consumes nothing durable: it asks (request/reply), publishes `jobs.requested` and
`media.assigned`, and follows jobs' status subjects. Those follow-ups are subscriptions of their
own, one per watcher (`backends.NatsBackends.subscribe_status` / `replay_status`), made with
nats-py on the broker's connection while an SSE stream is open; the registry declares them
(`jobs.status…`, `jobs.finished…`, received by the gateway `direct`), so the generated AsyncAPI
document shows them beside what FastStream knows.
"""

from __future__ import annotations

from collections.abc import Callable

from faststream.nats import NatsBroker

from atelier_contracts.profiles import ProfilesChanged
from atelier_contracts.subjects import Subject
from atelier_messaging import declare_publishers


def register_handlers(broker: NatsBroker, forget_profiles: Callable[[], None]) -> None:
    declare_publishers(broker, "gateway")

    # Drop cached profiles as soon as profiles announces a change. A core NATS subscription
    # without a queue group: every gateway replica must hear it. Ack policy: none (core NATS);
    # a missed change shows within the catalog's cache time. `no_reply`: `profiles.changed` is
    # published to JetStream, and its reply subject is the publisher's ack inbox, which must get
    # JetStream's ack and nothing from us.
    @broker.subscriber(Subject.PROFILES_CHANGED, no_reply=True)
    async def forget_cached_profiles(event: ProfilesChanged) -> None:
        forget_profiles()
