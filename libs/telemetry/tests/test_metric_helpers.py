"""The metric helpers other code calls: in-flight provider calls, failures, cost, stages, queues."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from atelier_telemetry import (
    observe_stage_latency,
    provider_call_in_flight,
    record_generation_cost,
    record_generation_failure,
    render_metrics,
    set_queue_depth,
)
from atelier_telemetry.metrics import subject_label


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_in_flight_goes_up_inside_the_block_and_down_after_even_on_error() -> None:
    assert sample("atelier_provider_calls_in_flight", provider="t-inflight") == 0
    with provider_call_in_flight("t-inflight"), provider_call_in_flight("t-inflight"):
        assert sample("atelier_provider_calls_in_flight", provider="t-inflight") == 2
    with pytest.raises(TimeoutError), provider_call_in_flight("t-inflight"):
        raise TimeoutError
    assert sample("atelier_provider_calls_in_flight", provider="t-inflight") == 0


def test_failures_and_cost_are_counted_per_provider() -> None:
    record_generation_failure("t-prov", "rate_limited")
    record_generation_failure("t-prov", "rate_limited")
    record_generation_failure("t-prov", "content_blocked")
    assert (
        sample("atelier_generation_failures_total", provider="t-prov", error_class="rate_limited")
        == 2
    )
    record_generation_cost("t-prov", "model-a", 1.5)
    record_generation_cost("t-prov", "model-a", 2)
    assert (
        sample("atelier_generation_cost_credits_total", provider="t-prov", model="model-a") == 3.5
    )
    with pytest.raises(ValueError, match="negative"):
        record_generation_cost("t-prov", "model-a", -1)


def test_stage_latency_and_queue_depth() -> None:
    observe_stage_latency("t-stage", 0.2)
    observe_stage_latency("t-stage", 90)
    assert sample("atelier_job_stage_seconds_count", stage="t-stage") == 2
    # Provider calls last minutes: the buckets reach far enough to tell 90 s from 5 min.
    assert sample("atelier_job_stage_seconds_bucket", stage="t-stage", le="120.0") == 2
    set_queue_depth("ATELIER_TASKS", "t-consumer", 7)
    set_queue_depth("ATELIER_TASKS", "t-consumer", 3)
    assert sample("atelier_queue_depth", stream="ATELIER_TASKS", consumer="t-consumer") == 3


def test_render_metrics_is_prometheus_text() -> None:
    body, content_type = render_metrics()
    assert content_type.startswith("text/plain")
    assert b"atelier_provider_calls_in_flight" in body


def test_subject_labels_stay_bounded_when_subjects_carry_ids() -> None:
    assert subject_label("jobs.status.demo.3f2a") == "jobs.status.>"
    assert subject_label("jobs.finished.demo.3f2a") == "jobs.finished.>"
    # Fixed subjects keep their name: the label says which stream or query it was.
    for fixed in ("jobs.requested", "gen.openai.requested", "profiles.query.quota_reserve"):
        assert subject_label(fixed) == fixed
