"""The envelope every event carries: event id, type, version and time.

The trace context is not in it: it travels in the message's NATS headers, where FastStream's
telemetry middleware writes and reads it (ADR 0027).
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid4, uuid5

from pydantic import BaseModel, ConfigDict, Field

from atelier_contracts.clock import utcnow


class Event(BaseModel):
    """Base of every event published on NATS.

    Subclasses fix `type` with a `Literal`; `event_id` doubles as JetStream's `Nats-Msg-Id`, so a
    publish repeated inside the stream's duplicate window is stored once.
    """

    model_config = ConfigDict(extra="ignore")

    event_id: UUID = Field(default_factory=uuid4, description="Unique id; the dedup key")
    type: str = Field(description="Event type, equal to its subject family")
    version: int = Field(default=1, description="Schema version of this event type")
    occurred_at: datetime = Field(default_factory=utcnow, description="When it happened (UTC)")


def derived_event_id(source: UUID | str, purpose: str) -> UUID:
    """A stable id for an event caused by another one.

    A handler that runs twice for one input (redelivery) publishes the same id twice, and
    JetStream's duplicate window keeps one copy.
    """
    return uuid5(UUID(str(source)), purpose)
