"""`/metrics` on a service app: HTTP latency per route template, NATS messages per outcome."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from faststream.nats import NatsBroker, TestNatsBroker
from prometheus_client import REGISTRY

from atelier_contracts.testing import QUERY_TIMEOUT_S
from atelier_messaging import make_broker
from atelier_web import create_service_app


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def http_count(route: str, status: str, method: str = "GET") -> float:
    return sample(
        "atelier_http_request_duration_seconds_count", method=method, route=route, status=status
    )


def handled(subject: str, outcome: str) -> float:
    return sample("atelier_messages_handled_total", subject=subject, outcome=outcome)


AppAndBroker = tuple[FastAPI, NatsBroker]


@pytest.fixture
def app_and_broker() -> AppAndBroker:
    broker = make_broker("nats://127.0.0.1:1", "metrics-test")

    @broker.subscriber("metrics-test.ok")
    async def fine(value: int) -> int:
        return value * 2

    @broker.subscriber("metrics-test.fail")
    async def broken(value: int) -> None:
        raise RuntimeError("handler failed")

    app = create_service_app("metrics test", broker=broker)

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unexpected")

    return app, broker


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_metrics_endpoint_serves_prometheus_text(app_and_broker: AppAndBroker) -> None:
    app, _ = app_and_broker
    async with client(app) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    for name in (
        "atelier_messages_handled_total",
        "atelier_message_handler_seconds",
        "atelier_http_request_duration_seconds",
        "atelier_provider_calls_in_flight",
        "atelier_generation_failures_total",
        "atelier_generation_cost_credits_total",
        "atelier_job_stage_seconds",
        "atelier_queue_depth",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in response.text, name
    assert "/metrics" not in app.openapi()["paths"]


async def test_http_requests_are_timed_by_route_template(app_and_broker: AppAndBroker) -> None:
    app, _ = app_and_broker
    before_item = http_count("/items/{item_id}", "200")
    before_unmatched = http_count("unmatched", "404")
    before_boom = http_count("/boom", "500")
    before_metrics = http_count("/metrics", "200")
    async with client(app) as http:
        assert (await http.get("/items/42")).status_code == 200
        assert (await http.get("/items/43")).status_code == 200
        assert (await http.get("/no/such/route")).status_code == 404
        assert (await http.get("/boom")).status_code == 500
        await http.get("/metrics")
    assert http_count("/items/{item_id}", "200") == before_item + 2
    assert (
        sample(  # ids never become label values
            "atelier_http_request_duration_seconds_count",
            method="GET",
            route="/items/42",
            status="200",
        )
        == 0
    )
    assert http_count("unmatched", "404") == before_unmatched + 1
    assert http_count("/boom", "500") == before_boom + 1
    assert http_count("/metrics", "200") == before_metrics  # scrapes are not counted


async def test_handled_messages_are_counted_by_subject_and_outcome(
    app_and_broker: AppAndBroker,
) -> None:
    _, broker = app_and_broker
    ok_before = handled("metrics-test.ok", "ok")
    error_before = handled("metrics-test.fail", "error")
    timed_before = sample("atelier_message_handler_seconds_count", subject="metrics-test.ok")
    async with TestNatsBroker(broker) as test_broker:
        reply = await test_broker.request(21, "metrics-test.ok", timeout=QUERY_TIMEOUT_S)
        assert await reply.decode() == 42
        with pytest.raises(RuntimeError):
            await test_broker.publish(1, "metrics-test.fail")
    assert handled("metrics-test.ok", "ok") == ok_before + 1
    assert handled("metrics-test.fail", "error") == error_before + 1
    assert sample("atelier_message_handler_seconds_count", subject="metrics-test.ok") == (
        timed_before + 1
    )


def test_the_message_middleware_is_installed_once_per_broker() -> None:
    broker = make_broker("nats://127.0.0.1:1", "metrics-once")
    create_service_app("first", broker=broker)
    create_service_app("second", broker=broker)
    names = [getattr(m, "__name__", type(m).__name__) for m in broker.config.broker_middlewares]
    assert names.count("MessageMetricsMiddleware") == 1
    assert names[0] == "MessageMetricsMiddleware"  # outermost: sees the final outcome


async def test_routes_of_included_routers_are_labelled_by_their_whole_template() -> None:
    """A prefix given when a router is included (`include_router(prefix=...)`, as the app's
    routes under `/api/v1`) is part of the label, as in the OpenAPI document; ids still not."""
    app = create_service_app("metrics test")
    inner = APIRouter(prefix="/projects/{project}")

    @inner.get("/files/{name}")
    async def file(project: str, name: str) -> dict[str, str]:
        return {"name": name}

    outer = APIRouter()
    outer.include_router(inner)
    app.include_router(outer, prefix="/api/v1")
    template = "/api/v1/projects/{project}/files/{name}"
    assert template in app.openapi()["paths"]
    before = http_count(template, "200")
    async with client(app) as http:
        assert (await http.get("/api/v1/projects/alpha/files/a.png")).status_code == 200
        assert (await http.get("/api/v1/projects/beta/files/b.png")).status_code == 200
    assert http_count(template, "200") == before + 2
