from pathlib import Path

import pytest
from pydantic import ValidationError

from atelier_contracts.envelope import derived_event_id
from atelier_contracts.export import MESSAGES, export
from atelier_contracts.jobs import (
    MAX_FALLBACKS,
    ElementImage,
    FallbackPlan,
    JobImage,
    Target,
)
from atelier_contracts.profiles import nearest_size
from atelier_contracts.subjects import job_status
from atelier_contracts.testing import job_requested, profile_snapshot


def test_every_message_exports_a_schema(tmp_path: Path) -> None:
    assert len(export(tmp_path)) == len(MESSAGES)


def test_derived_ids_are_stable_and_distinct() -> None:
    source = "9f0c4d8e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
    assert derived_event_id(source, "x") == derived_event_id(source, "x")
    assert derived_event_id(source, "x") != derived_event_id(source, "y")


def test_project_ids_must_be_subject_safe() -> None:
    with pytest.raises(ValueError):
        job_status("a.b", "j")


def test_element_image_needs_exactly_one_source() -> None:
    with pytest.raises(ValidationError):
        ElementImage()
    with pytest.raises(ValidationError):
        ElementImage(media_id="m", url="https://x/y.png")
    assert ElementImage(url="https://x/y.png").url


def test_element_target_needs_an_element_id() -> None:
    with pytest.raises(ValidationError):
        Target(kind="element")


def test_nearest_size_goes_by_pixel_area_then_aspect_ratio() -> None:
    sizes = ["512x512", "1024x1024", "1536x1024", "1024x1536"]
    assert nearest_size("1024x1024", sizes) == "1024x1024"  # made as asked
    assert nearest_size("1000x1000", sizes) == "1024x1024"
    # 1536x1024 and 1024x1536 hold as many pixels; the ratio decides.
    assert nearest_size("1792x1024", sizes) == "1536x1024"
    assert nearest_size("1024x1792", sizes) == "1024x1536"
    # Area on a log scale: 724x724 is just under half way from 512x512 to 1024x1024.
    assert nearest_size("724x724", ["1024x1024", "512x512"]) == "512x512"
    assert nearest_size("725x725", ["512x512", "1024x1024"]) == "1024x1024"
    # A tie in both (3:2 and 2:3 from a square): the first listed wins.
    assert nearest_size("1024x1024", ["1024x1536", "1536x1024"]) == "1024x1536"
    assert nearest_size("1024x1024", ["1536x1024", "1024x1536"]) == "1536x1024"
    assert nearest_size("256X256", ["1024x1024", "512x512"]) == "512x512"
    with pytest.raises(ValueError):
        nearest_size("1024x1024", [])


def test_a_job_carries_at_most_max_fallbacks_and_images_say_who_made_them() -> None:
    snapshot = profile_snapshot(id="b", name="B", credit_cost=2)
    plan = FallbackPlan(profile=snapshot, size="1024x1024")
    assert (plan.options, plan.notes) == ({}, [])
    assert job_requested().fallbacks == []  # a publisher that plans none
    assert len(job_requested(fallbacks=[plan] * MAX_FALLBACKS).fallbacks) == 4
    with pytest.raises(ValidationError):
        job_requested(fallbacks=[plan] * (MAX_FALLBACKS + 1))
    # Images from an older dispatch carry no producer: all four fields are optional.
    image = JobImage(media_id="m", index=0, width=1, height=1, content_type="image/png")
    assert (image.profile_id, image.credit_cost, image.fallback_reason) == (None, None, None)
