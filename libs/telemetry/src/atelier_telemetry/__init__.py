"""Logging, tracing and Prometheus metrics shared by every service."""

from atelier_telemetry.metrics import (
    MESSAGES_PUBLISHED,
    STATUS_SUBSCRIPTIONS_OPEN,
    MessageMetricsMiddleware,
    observe_stage_latency,
    provider_call_in_flight,
    record_dead_letter,
    record_generation_cost,
    record_generation_failure,
    record_generation_success,
    record_job_finished,
    render_metrics,
    set_queue_depth,
    set_ready,
    set_stream_usage,
    subject_label,
)
from atelier_telemetry.setup import configure_telemetry, instrument_fastapi

__all__ = [
    "MESSAGES_PUBLISHED",
    "STATUS_SUBSCRIPTIONS_OPEN",
    "MessageMetricsMiddleware",
    "configure_telemetry",
    "instrument_fastapi",
    "observe_stage_latency",
    "provider_call_in_flight",
    "record_dead_letter",
    "record_generation_cost",
    "record_generation_failure",
    "record_generation_success",
    "record_job_finished",
    "render_metrics",
    "set_queue_depth",
    "set_ready",
    "set_stream_usage",
    "subject_label",
]
