"""Every service is a FastAPI app: HTTP APIs where it has them, `/healthz` and `/readyz` always.

The broker starts and stops with the app's lifespan, so an event-only service (context, dispatch,
workers, media) has the same shape and the same probes as the HTTP ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from atelier_contracts.errors import AtelierError
from atelier_telemetry.metrics import set_ready
from atelier_web.background import Background
from atelier_web.metrics import install_metrics

log = logging.getLogger("atelier.web")

# A process supervisor (`make run`, the end-to-end tests) may give each process it starts a random
# id in this variable; the probes then repeat it, and the supervisor trusts a probe's answer only
# when it carries that id. A server that merely answers on the port (another process that took it
# between the supervisor's check and our bind) cannot, so it is never taken for the service, nor
# handed a token. Unset (deployments, unit tests): the probes answer as before.
INSTANCE_ID_ENV = "ATELIER_INSTANCE_ID"

ReadinessCheck = Callable[[], Awaitable[bool]]
# Every readiness check gets at most this long (Kubernetes' probe timeout defaults to 1 s; ours
# set 3 s in deploy/): a hung dependency is "not ready", never a probe that hangs.
READINESS_TIMEOUT_S = 2.0
Hook = Callable[[], Awaitable[None]]


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _describe_validation_error(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
    where = ".".join(loc) or "request body"
    return f"{where}: {err.get('msg', 'is invalid')}"


# What FastAPI raises (400) when reading a JSON body fails for another reason than a JSON syntax
# error, e.g. a body that is not UTF-8.
_BODY_NOT_PARSED = "There was an error parsing the body"


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at the request's path.

    FastAPI adds one route per method; Starlette answers a wrong method with the `Allow` of the
    first route whose path matched, which lists only that route's methods (`GET` where the path
    also takes `PUT` and `DELETE`). A client, and the OpenAPI document, expect all of them. Each
    method is tried through the routes' own matching (which also sees into included routers).
    A literal path the OpenAPI document names is its own resource: its methods are the
    document's, not those of a parameterised path it also fits (`POST /v1/generations/estimate`
    is not `GET /v1/generations/{job_id}`).
    """
    documented = app.openapi().get("paths", {}).get(request.url.path)
    if documented:
        return [method for method in _METHODS if method.lower() in documented]
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in app.router.routes
        )
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AtelierError)
    async def _atelier_error(_: Request, exc: AtelierError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse(
                error_body("malformed_json", "The request body is not valid JSON."),
                status_code=400,
            )
        messages = [_describe_validation_error(e) for e in errors]
        return JSONResponse(
            error_body("invalid_input", "; ".join(messages), fields=messages), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _BODY_NOT_PARSED:
            # FastAPI's answer to a body it could not decode at all (invalid UTF-8, nesting
            # deeper than the parser goes): as malformed as JSON that does not parse.
            return JSONResponse(
                error_body("malformed_json", "The request body is not valid JSON (UTF-8)."),
                status_code=400,
            )
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            allowed = allowed_methods(app, request)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            error_body("internal", "Something went wrong inside Atelier; it was logged."),
            status_code=500,
        )


def create_service_app(
    title: str,
    *,
    broker: Any | None = None,
    readiness: Sequence[ReadinessCheck] = (),
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
    background: Sequence[Background] = (),
    state: Mapping[str, object] | None = None,
    description: str = "",
    version: str = "0.1.0",
) -> FastAPI:
    """on_startup hooks run before the broker starts consuming (declare streams, migrate, make
    buckets). `background` coroutines (watches of key-value buckets, sweeps) start once it is
    connected and run until the app stops: they are cancelled, and waited for, after the broker
    has stopped and before the on_shutdown hooks (dispose of the database, close clients).
    `state` is set on `app.state`, and so is the broker (tests and the docs reach them there)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for hook in on_startup:
            await hook()
        if broker is not None:
            await broker.start()
        tasks = [asyncio.create_task(work()) for work in background]
        try:
            yield
        finally:
            if broker is not None:
                await broker.stop()
            await _cancel(tasks)
            for hook in on_shutdown:
                await hook()

    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan)
    install_error_handlers(app)
    if broker is not None:
        app.state.broker = broker
    for name, value in (state or {}).items():
        setattr(app.state, name, value)

    instance_id = os.environ.get(INSTANCE_ID_ENV)
    identity = {"service": title, "instance": instance_id} if instance_id else {}

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", **identity}

    checks = list(readiness)
    if broker is not None:
        checks.insert(0, _broker_ready(broker))

    async def is_ready() -> bool:
        results = await asyncio.gather(*(_bounded(check) for check in checks))
        return all(results)

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        ok = await is_ready()
        set_ready(ok)
        return JSONResponse({"ready": ok, **identity}, status_code=200 if ok else 503)

    install_metrics(app, broker, is_ready)
    return app


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, Exception):
            log.error("a background task had failed", exc_info=outcome)


async def _bounded(check: ReadinessCheck) -> bool:
    """A probe answers before the orchestrator's own timeout even when a dependency hangs (the
    MinIO SDK, for one, retries for a long time by default): a check past its time is not
    ready, and so is one that raises."""
    try:
        return await asyncio.wait_for(check(), READINESS_TIMEOUT_S)
    except Exception:
        log.warning("a readiness check failed or ran past %s s", READINESS_TIMEOUT_S, exc_info=True)
        return False


def _broker_ready(broker: Any) -> ReadinessCheck:
    async def check() -> bool:
        try:
            return bool(await broker.ping(timeout=2.0))
        except Exception:
            return False

    return check


def serve(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), access_log=False)
