"""Logging, tracing and Prometheus metrics shared by every service."""

from atelier_telemetry.metrics import (
    MessageMetricsMiddleware,
    observe_stage_latency,
    provider_call_in_flight,
    record_generation_cost,
    record_generation_failure,
    render_metrics,
    set_queue_depth,
)
from atelier_telemetry.setup import configure_telemetry, instrument_fastapi

__all__ = [
    "MessageMetricsMiddleware",
    "configure_telemetry",
    "instrument_fastapi",
    "observe_stage_latency",
    "provider_call_in_flight",
    "record_generation_cost",
    "record_generation_failure",
    "render_metrics",
    "set_queue_depth",
]
