"""No route of the gateway hops to a thread for its dependencies (issue 14: under a burst of
submissions every request waited for the thread pool and the GIL, for a read of app.state)."""

from __future__ import annotations

from gateway_testkit import test_settings

from atelier_gateway.main import create_app
from atelier_web.dependencies import threaded_calls


def test_every_route_of_the_gateway_runs_on_the_event_loop() -> None:
    assert threaded_calls(create_app(test_settings())) == []
