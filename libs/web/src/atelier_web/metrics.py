"""`/metrics` on every service app: HTTP latency per route, NATS handling per subject.

`/metrics` shares the service's port. In front of the public services (gateway, profiles admin)
the ingress routes only their API paths, so Prometheus scrapes it from inside the cluster.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier_telemetry.metrics import (
    MessageMetricsMiddleware,
    observe_http_request,
    render_metrics,
    set_ready,
)

METRICS_PATH = "/metrics"
UNMATCHED_ROUTE = "unmatched"


class HttpMetricsMiddleware:
    """Times each HTTP request to its response's headers, labelled by the route *template*
    (`/v1/generations/{job_id}`), so ids never become label values."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            observe_http_request(
                scope["method"], route_template(scope), status, time.perf_counter() - start
            )

        async def send_and_time(message: Message) -> None:
            if message["type"] == "http.response.start":
                record(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_and_time)
        except Exception:
            record(500)
            raise


def route_template(scope: Scope) -> str:
    """The matched route's whole template, as the OpenAPI document names it.

    The router stores the matched route in the scope it was given (this one). Its `path` has
    the prefix of the router that declared it, not a prefix given when a router is included in
    another (`include_router(prefix=...)`, e.g. the app's routes under `/api/v1`): that part is
    the request path's start before where the route's pattern matches. Prefixes given at
    inclusion are constant, so this never puts an id into the label."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not template:
        return UNMATCHED_ROUTE
    pattern = getattr(route, "path_regex", None)
    path: str = scope["path"]
    if pattern is None or pattern.match(path):
        return str(template)
    for at in range(1, len(path)):
        if path[at] == "/" and pattern.match(path[at:]):
            return path[:at] + str(template)
    return str(template)


def install_metrics(
    app: FastAPI, broker: Any | None, is_ready: Callable[[], Awaitable[bool]] | None = None
) -> None:
    """Serve `/metrics`, time HTTP requests and count the broker's handled messages. With
    `is_ready`, each scrape first evaluates readiness into `atelier_ready` (what `/readyz` would
    answer), so an alert sees a service that is up but not ready."""

    @app.get(METRICS_PATH, include_in_schema=False)
    async def metrics() -> Response:
        if is_ready is not None:
            set_ready(await is_ready())
        body, content_type = render_metrics()
        return Response(body, media_type=content_type)

    app.add_middleware(HttpMetricsMiddleware)
    # Outermost, so the outcome counted is the one the message finally got.
    if broker is not None and not getattr(broker, "_atelier_message_metrics", False):
        broker.insert_middleware(MessageMetricsMiddleware)
        broker._atelier_message_metrics = True
