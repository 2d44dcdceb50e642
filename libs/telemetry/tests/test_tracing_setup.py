"""`configure_telemetry`'s tracing: without an OTLP endpoint nothing is recorded, yet trace ids
are made, propagated and logged. Run in a fresh interpreter: a process sets its tracer provider
once."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, logging
from opentelemetry import propagate, trace
from atelier_telemetry import configure_telemetry

configure_telemetry("probe")
tracer = trace.get_tracer("probe")
with tracer.start_as_current_span("outer") as outer:
    carrier = {}
    propagate.inject(carrier)
    logging.getLogger("probe").warning("inside")
    ctx = outer.get_span_context()
    print(json.dumps({
        "recording": outer.is_recording(),
        "trace_id": format(ctx.trace_id, "032x"),
        "valid": ctx.is_valid,
        "traceparent": carrier.get("traceparent", ""),
    }))
"""


def test_without_an_endpoint_spans_are_not_recorded_but_trace_ids_still_flow() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["recording"] is False
    assert probe["valid"] is True
    assert probe["trace_id"] in probe["traceparent"]  # what the next service will continue
    log_line = json.loads(done.stderr.strip().splitlines()[-1])
    assert log_line["trace_id"] == probe["trace_id"]
