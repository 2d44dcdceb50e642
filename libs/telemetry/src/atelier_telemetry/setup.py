"""JSON logs carrying trace ids, and OpenTelemetry traces exported over OTLP when configured."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_telemetry(
    service: str, *, level: str = "INFO", json_logs: bool = True, otlp_endpoint: str | None = None
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO, which would drown the job lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    # With nowhere to send spans, none are recorded (ALWAYS_OFF): recording them cost ~0.15 ms
    # of CPU per message hop (bench/messaging_floor.py). Trace and span ids are still made and
    # propagated on every message and printed in every log line, so a job's lines correlate.
    resource = Resource.create({"service.name": f"atelier-{service}"})
    provider = TracerProvider(resource=resource, sampler=None if otlp_endpoint else ALWAYS_OFF)
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp_endpoint}/v1/traces"))
        )
    trace.set_tracer_provider(provider)

    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor().instrument()


def instrument_fastapi(app: Any, *, send_receive_spans: bool = True) -> None:
    """A server span per request; `send_receive_spans=False` leaves out the child span of every
    ASGI message the request receives and its response sends: on a long-lived response (an SSE
    stream) that is a span per event and per ping, for as long as the stream is open."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # Probes and Prometheus scrapes would otherwise be a trace every few seconds.
    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls="healthz,readyz,metrics",
        exclude_spans=None if send_receive_spans else ["receive", "send"],
    )
