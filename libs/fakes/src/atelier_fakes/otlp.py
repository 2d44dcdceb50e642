"""A minimal OTLP/HTTP trace receiver, so tests can see the spans real service processes export.

It speaks the collector's wire format (protobuf `ExportTraceServiceRequest` on `POST /v1/traces`)
and keeps `(service, span name, trace id)` for every span received.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    kind: int


@dataclass
class FakeCollectorState:
    spans: list[ReceivedSpan] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def services_by_trace(self) -> dict[str, set[str]]:
        with self.lock:
            grouped: dict[str, set[str]] = defaultdict(set)
            for span in self.spans:
                grouped[span.trace_id].add(span.service)
            return dict(grouped)


def create_otlp_fake(state: FakeCollectorState) -> FastAPI:
    app = FastAPI(title="Fake OTLP collector")

    @app.post("/v1/traces")
    async def receive_traces(request: Request) -> Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        received: list[ReceivedSpan] = []
        for resource_spans in message.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "unknown",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(service, span.name, span.trace_id.hex(), span.kind)
                    )
        with state.lock:
            state.spans.extend(received)
        return Response(
            ExportTraceServiceResponse().SerializeToString(),
            media_type="application/x-protobuf",
        )

    return app
