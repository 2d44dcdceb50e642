"""Broker wiring shared by every service: streams, durable consumers, traced publishing."""

from atelier_messaging.broker import (
    RedeliveryBackoffMiddleware,
    delivery_attempt,
    durable_subscriber,
    ensure_streams,
    make_broker,
    publish_event,
    query,
    stream_for_subject,
)

__all__ = [
    "RedeliveryBackoffMiddleware",
    "delivery_attempt",
    "durable_subscriber",
    "ensure_streams",
    "make_broker",
    "publish_event",
    "query",
    "stream_for_subject",
]
