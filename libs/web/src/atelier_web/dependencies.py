"""Dependencies that run on the event loop, and a check that no route hops to a thread.

FastAPI runs every plain callable of a route (a `def` endpoint, a `def` dependency, a class
given to `Depends()`) in Starlette's thread pool, once per request. For a dependency that only
reads `app.state` that hop is all its cost: a thread hand-over, and the GIL taken back after
it, which on a busy process waits up to `sys.getswitchinterval()` (5 ms). Under a burst of
submissions it made every request queue for the pool's 40 threads. Services write their
dependencies as `async def`; `on_the_loop` does it for a class, and `threaded_calls` lists what
a built app would still run in a thread (tests assert it is nothing).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

T = TypeVar("T")


def on_the_loop(cls: type[T]) -> Callable[..., Awaitable[T]]:
    """A dependency building `cls` from the same parameters as `Depends(cls)` would, on the
    event loop: `Annotated[Cls, Depends(on_the_loop(Cls))]`."""

    async def build(**values: Any) -> T:
        return cls(**values)

    # FastAPI reads the parameters from the signature; eval_str resolves the class's own
    # string annotations (`from __future__ import annotations`) in its module.
    build.__signature__ = inspect.signature(cls, eval_str=True)  # type: ignore[attr-defined]
    build.__name__ = build.__qualname__ = f"on_the_loop({cls.__name__})"
    return build


def _runs_on_the_loop(call: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        return True
    if inspect.isclass(call):
        return False  # FastAPI builds it in a thread
    method = getattr(type(call), "__call__", None)  # noqa: B004
    # An instance with an async __call__, e.g. HTTPBearer(), is awaited on the loop.
    return inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)


def threaded_calls(app: FastAPI) -> list[str]:
    """Every endpoint and dependency of `app`'s routes (included routers' too, with the
    dependencies of their inclusion) that FastAPI would run in a thread, as "METHODS path:
    name"."""
    found: list[str] = []

    def visit(where: str, dependant: Dependant) -> None:
        call = dependant.call
        if call is not None and not _runs_on_the_loop(call):
            found.append(f"{where}: {getattr(call, '__qualname__', type(call).__name__)}")
        for sub in dependant.dependencies:
            visit(where, sub)

    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute):
            visit(f"{','.join(sorted(route.methods or ()))} {route.path}", route.dependant)
    return found
