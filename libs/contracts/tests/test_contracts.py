from pathlib import Path

import pytest
from pydantic import ValidationError

from atelier_contracts.envelope import derived_event_id
from atelier_contracts.export import MESSAGES, export
from atelier_contracts.jobs import ElementImage, Target
from atelier_contracts.subjects import job_status


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
