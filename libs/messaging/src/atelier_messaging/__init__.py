"""Broker wiring shared by every service: streams, durable consumers, traced publishing."""

from atelier_messaging.broker import (
    RedeliveryBackoffMiddleware,
    StreamFull,
    declare_publishers,
    delivery_attempt,
    durable_subscriber,
    ensure_streams,
    make_broker,
    nats_servers,
    publish_event,
    publish_notice,
    query,
    stream_for_subject,
)
from atelier_messaging.consumers import INTEREST_CONSUMERS, DurableSpec
from atelier_messaging.kv import CancelledJobs, ProviderBudgets, ProviderHandles, TaskHandle

__all__ = [
    "INTEREST_CONSUMERS",
    "CancelledJobs",
    "DurableSpec",
    "ProviderBudgets",
    "ProviderHandles",
    "RedeliveryBackoffMiddleware",
    "StreamFull",
    "TaskHandle",
    "declare_publishers",
    "delivery_attempt",
    "durable_subscriber",
    "ensure_streams",
    "make_broker",
    "nats_servers",
    "publish_event",
    "publish_notice",
    "query",
    "stream_for_subject",
]
