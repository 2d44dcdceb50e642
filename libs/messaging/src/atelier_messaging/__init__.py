"""Broker wiring shared by every service: streams, durable consumers, traced publishing."""

from atelier_messaging.broker import (
    RedeliveryBackoffMiddleware,
    StreamFull,
    delivery_attempt,
    durable_subscriber,
    ensure_streams,
    make_broker,
    publish_event,
    query,
    stream_for_subject,
)
from atelier_messaging.consumers import INTEREST_CONSUMERS, DurableSpec
from atelier_messaging.kv import CancelledJobs, ProviderHandles, TaskHandle

__all__ = [
    "INTEREST_CONSUMERS",
    "CancelledJobs",
    "DurableSpec",
    "ProviderHandles",
    "RedeliveryBackoffMiddleware",
    "StreamFull",
    "TaskHandle",
    "delivery_attempt",
    "durable_subscriber",
    "ensure_streams",
    "make_broker",
    "publish_event",
    "query",
    "stream_for_subject",
]
