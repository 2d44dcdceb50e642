"""Prometheus metrics every service exposes at `/metrics` (served by `atelier_web`).

Metrics live in prometheus-client's process-wide registry: one process is one service, and
Prometheus tells services apart by their scrape target. Labels are kept to bounded sets (subjects,
route templates, providers, error classes) — never job, user or project ids.

Recorded for every service without any code of its own:
- `atelier_messages_handled_total{subject, outcome}` and `atelier_message_handler_seconds{subject}`
  by `MessageMetricsMiddleware` (added to the broker by `create_service_app`);
- `atelier_http_request_duration_seconds{method, route, status}` by `atelier_web`.

Helpers for the code that knows the domain: `provider_call_in_flight`, `record_generation_failure`,
`record_generation_success`, `record_generation_cost`, `observe_stage_latency`, `set_queue_depth`,
`record_job_finished`, `record_dead_letter`, `set_stream_usage`, `set_ready`; the gateway counts
its status subscriptions in `STATUS_SUBSCRIPTIONS_OPEN`. docs/operations.md lists them all, with the
objectives, dashboards and alerts built on them (deploy/monitoring/).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from faststream import BaseMiddleware
from faststream.message import AckStatus, SourceType
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Provider calls take seconds to minutes; queries take milliseconds: one set of buckets covers both.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

MESSAGES_HANDLED = Counter(
    "atelier_messages_handled",
    "NATS messages handled, by subject and outcome (ok, error, nacked, rejected)",
    ["subject", "outcome"],
)
MESSAGES_PUBLISHED = Counter(
    "atelier_messages_published",
    "NATS messages this process published, by subject and kind (event: stored by JetStream and "
    "acknowledged; notice: core NATS, not stored)",
    ["subject", "kind"],
)
MESSAGE_HANDLER_SECONDS = Histogram(
    "atelier_message_handler_seconds",
    "Time a NATS message handler took, by subject",
    ["subject"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REQUEST_SECONDS = Histogram(
    "atelier_http_request_duration_seconds",
    "Time to the response's headers, by method, route template and status "
    "(an SSE stream counts until its headers)",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
PROVIDER_IN_FLIGHT = Gauge(
    "atelier_provider_calls_in_flight",
    "Provider calls running now, by provider",
    ["provider"],
)
GENERATION_FAILURES = Counter(
    "atelier_generation_failures",
    "Failed generation tasks, by provider and normalized error class",
    ["provider", "error_class"],
)
GENERATION_SUCCEEDED = Counter(
    "atelier_generation_succeeded",
    "Generation tasks a provider completed (images written), by provider: with "
    "atelier_generation_failures_total, the provider's failure ratio",
    ["provider"],
)
GENERATION_COST = Counter(
    "atelier_generation_cost_credits",
    "Credits spent on generations, by provider and model",
    ["provider", "model"],
)
STAGE_SECONDS = Histogram(
    "atelier_job_stage_seconds",
    "Time a job spent in one stage (queued, enriching, generating, landing, ...)",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "atelier_queue_depth",
    "Messages waiting for a durable consumer, by stream and consumer",
    ["stream", "consumer"],
)
JOBS_FINISHED = Counter(
    "atelier_jobs_finished",
    "Jobs that reached their final state, by provider, outcome (completed, partial, failed, "
    "cancelled) and the error class of a job that did not complete (empty when it did)",
    ["provider", "outcome", "error_class"],
)
IMAGES_LANDED = Counter(
    "atelier_images_landed",
    "Images of finished jobs that landed in the media library, by provider",
    ["provider"],
)
DEAD_LETTERS = Counter(
    "atelier_dead_letters",
    "Messages that ran out of deliveries (JetStream's max-deliveries advisory), by stream and "
    "durable consumer",
    ["stream", "consumer"],
)
STREAM_BYTES = Gauge("atelier_stream_bytes", "Bytes a JetStream stream holds", ["stream"])
STREAM_MESSAGES = Gauge("atelier_stream_messages", "Messages a JetStream stream holds", ["stream"])
STREAM_LIMIT_BYTES = Gauge(
    "atelier_stream_limit_bytes",
    "A JetStream stream's max_bytes (absent when the stream has no byte limit)",
    ["stream"],
)
STREAM_LIMIT_MESSAGES = Gauge(
    "atelier_stream_limit_messages",
    "A JetStream stream's max_msgs (absent when the stream has no message limit)",
    ["stream"],
)
READY = Gauge(
    "atelier_ready",
    "1 when this process's dependencies answer (what /readyz says), 0 when not; evaluated at "
    "every scrape",
)
STATUS_SUBSCRIPTIONS_OPEN = Gauge(
    "atelier_status_subscriptions_open",
    "Job status subscriptions the gateway holds now: one per watcher (an SSE stream, or an "
    "Inkweld generate waiting for its job)",
)


@contextmanager
def provider_call_in_flight(provider: str) -> Iterator[None]:
    """Counts a provider call as in flight while the block runs (also when it raises)."""
    gauge = PROVIDER_IN_FLIGHT.labels(provider=provider)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def record_generation_failure(provider: str, error_class: str) -> None:
    """One failed task; `error_class` is the taxonomy's slug (`rate_limited`, `timeout`, ...)."""
    GENERATION_FAILURES.labels(provider=provider, error_class=error_class).inc()


def record_generation_success(provider: str) -> None:
    GENERATION_SUCCEEDED.labels(provider=provider).inc()


def record_generation_cost(provider: str, model: str, credits: float) -> None:
    if credits < 0:
        raise ValueError("a cost cannot be negative")
    GENERATION_COST.labels(provider=provider, model=model).inc(credits)


def observe_stage_latency(stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage=stage).observe(seconds)


def set_queue_depth(stream: str, consumer: str, pending: int) -> None:
    QUEUE_DEPTH.labels(stream=stream, consumer=consumer).set(pending)


def record_job_finished(
    provider: str, outcome: str, error_class: str | None, images_landed: int
) -> None:
    """A job reached its final state; `error_class` is the taxonomy's slug of why it did not
    complete (None when it did)."""
    JOBS_FINISHED.labels(provider=provider, outcome=outcome, error_class=error_class or "").inc()
    if images_landed:
        IMAGES_LANDED.labels(provider=provider).inc(images_landed)


def record_dead_letter(stream: str, consumer: str) -> None:
    DEAD_LETTERS.labels(stream=stream, consumer=consumer).inc()


def set_stream_usage(
    stream: str, *, messages: int, bytes_: int, max_messages: int | None, max_bytes: int | None
) -> None:
    """What a stream holds and its limits (a limit of None, 0 or -1 is no limit: not exported)."""
    STREAM_MESSAGES.labels(stream=stream).set(messages)
    STREAM_BYTES.labels(stream=stream).set(bytes_)
    for gauge, limit in ((STREAM_LIMIT_MESSAGES, max_messages), (STREAM_LIMIT_BYTES, max_bytes)):
        if limit is not None and limit > 0:
            gauge.labels(stream=stream).set(limit)
        else:
            with suppress(KeyError):
                gauge.remove(stream)


def set_ready(ready: bool) -> None:
    READY.set(1 if ready else 0)


def observe_http_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUEST_SECONDS.labels(method=method, route=route, status=str(status)).observe(seconds)


def render_metrics(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The Prometheus text exposition of `registry` and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


class MessageMetricsMiddleware(BaseMiddleware):
    """Counts every handled NATS message by subject and outcome and times its handler.

    Installed outermost, so the outcome is what the message finally got: `error` when the handler
    raised (JetStream redelivers it later), `nacked`/`rejected` when it was settled that way
    without raising, `ok` otherwise (acked, or a request answered).
    """

    async def consume_scope(self, call_next: Callable[..., Awaitable[Any]], msg: Any) -> Any:
        # Replies to our own requests pass through consumers too; they are not handled messages.
        if getattr(msg, "source_type", None) is SourceType.RESPONSE:
            return await call_next(msg)
        subject = subject_label(str(getattr(msg.raw_message, "subject", "") or "unknown"))
        outcome = "ok"
        start = time.perf_counter()
        try:
            return await call_next(msg)
        except Exception:
            outcome = "error"
            raise
        finally:
            if outcome == "ok":
                outcome = _settled_as(msg)
            MESSAGE_HANDLER_SECONDS.labels(subject=subject).observe(time.perf_counter() - start)
            MESSAGES_HANDLED.labels(subject=subject, outcome=outcome).inc()


def subject_label(subject: str) -> str:
    """A bounded label for a subject. Atelier's subjects of four or more tokens carry ids from
    the third on (`jobs.status.<project>.<job>`), so those are labelled by their family
    (`jobs.status.>`); shorter ones name a fixed stream or query and stay as they are."""
    tokens = subject.split(".")
    return subject if len(tokens) <= 3 else f"{tokens[0]}.{tokens[1]}.>"


def _settled_as(msg: Any) -> str:
    status = getattr(msg, "committed", None)
    if status is AckStatus.NACKED:
        return "nacked"
    if status is AckStatus.REJECTED:
        return "rejected"
    return "ok"
