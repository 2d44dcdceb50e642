"""The test factories build valid contract objects and refuse a field the model lacks."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from atelier_contracts.testing import (
    generation_task,
    job_enriched,
    job_requested,
    job_view,
    media_item,
    media_landed,
    profile_snapshot,
)


def test_every_factory_builds_a_valid_object_that_survives_the_wire() -> None:
    request = job_requested()
    task = generation_task()
    built: list[BaseModel] = [
        profile_snapshot(),
        request,
        job_enriched(request),
        task,
        media_item(),
        media_landed(task),
        job_view(),
    ]
    for model in built:
        assert type(model).model_validate_json(model.model_dump_json()) == model


def test_an_override_naming_no_field_is_refused() -> None:
    # Events ignore unknown fields, so a misspelt override would otherwise pass unnoticed.
    with pytest.raises(TypeError, match="JobRequested has no field cuont"):
        job_requested(cuont=2)


def test_derived_defaults_follow_the_fields_given() -> None:
    request = job_requested(prompt="An owl", count=2)
    assert job_enriched(request).assembled.prompt == "An owl"
    assert job_enriched(request, prompt="An owl!").assembled.prompt == "An owl!"
    assert job_requested().job_id != job_requested().job_id
    task = generation_task(job_id="j1", profile=profile_snapshot(id="paint", provider="falai"))
    assert task.task_id == "j1.0"
    [item] = media_landed(task).media
    assert (item.id, item.job_id, item.task_id) == ("m-j1.0", "j1", "j1.0")
    assert (item.profile_id, item.provider) == ("paint", "falai")
    assert media_item(id="m7").original_key == "originals/m7.png"
    view = job_view(count=4, profile=profile_snapshot(name="Paint"))
    assert (view.progress.total, view.profile_name) == (4, "Paint")
