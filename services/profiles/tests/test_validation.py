"""Every rule beyond field types: each bad input gives InvalidInput naming the field and the fix."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from atelier_contracts.errors import InvalidInput
from atelier_profiles.service import ProfilePatch, apply_patch
from atelier_profiles.validation import validate_profile

from .conftest import profile_fields


def _option(**fields: Any) -> dict[str, Any]:
    return {"name": "opt", **fields}


BAD_INPUTS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("blank name", {"name": "   "}, ["name: must not be blank"]),
    (
        "size not WxH",
        {"sizes": ["1024X1024", "512x512"], "default_size": "512x512"},
        ["sizes: '1024X1024' is not a size like '1024x1024'"],
    ),
    ("size with zero width", {"sizes": ["0x512"], "default_size": "512x512"}, ["'0x512'"]),
    (
        "duplicate size",
        {"sizes": ["512x512", "512x512"], "default_size": "512x512"},
        ["sizes: listed more than once: 512x512"],
    ),
    (
        "default size not offered",
        {"default_size": "256x256"},
        ["default_size: '256x256' is not one of sizes (1024x1024, 512x512)"],
    ),
    ("no counts", {"counts": []}, ["counts: list at least one of 1, 2, 4"]),
    (
        "unsupported count",
        {"counts": [1, 3]},
        ["counts: 3 images per request is not supported; use 1, 2, 4"],
    ),
    ("duplicate count", {"counts": [2, 2]}, ["counts: each count may be listed once"]),
    (
        "duplicate option names",
        {"options": [_option(kind="string"), _option(kind="boolean")]},
        ["options: more than one option named opt"],
    ),
    (
        "enum without values",
        {"options": [_option(kind="enum")]},
        ["options.opt: an enum option needs `values`"],
    ),
    (
        "enum with empty values",
        {"options": [_option(kind="enum", values=[])]},
        ["options.opt: an enum option needs `values`"],
    ),
    (
        "enum default not a value",
        {"options": [_option(kind="enum", values=["low", "high"], default="ultra")]},
        ["options.opt: default 'ultra' is not one of its values (low, high)"],
    ),
    (
        "enum repeats a value",
        {"options": [_option(kind="enum", values=["low", "low"])]},
        ["options.opt: values listed more than once: low"],
    ),
    (
        "integer default below minimum",
        {"options": [_option(kind="integer", minimum=1, maximum=50, default=0)]},
        ["options.opt: default 0 is below the minimum 1"],
    ),
    (
        "number default above maximum",
        {"options": [_option(kind="number", minimum=0, maximum=1.5, default=2.5)]},
        ["options.opt: default 2.5 is above the maximum 1.5"],
    ),
    (
        "integer default not an integer",
        {"options": [_option(kind="integer", default=2.5)]},
        ["options.opt: default 2.5 is not a whole number"],
    ),
    (
        "number default is text",
        {"options": [_option(kind="number", default="fast")]},
        ["options.opt: default 'fast' is not a number"],
    ),
    (
        "minimum above maximum",
        {"options": [_option(kind="integer", minimum=10, maximum=5)]},
        ["options.opt: minimum 10 is above maximum 5"],
    ),
    (
        "string default too long",
        {"options": [_option(kind="string", max_length=3, default="abcd")]},
        ["options.opt: default is 4 characters, longer than max_length 3"],
    ),
    (
        "boolean default not a boolean",
        {"options": [_option(kind="boolean", default="yes")]},
        ["options.opt: default 'yes' is not true or false"],
    ),
    (
        "base_url not http",
        {"base_url": "ftp://files.example.com"},
        ["base_url: 'ftp://files.example.com' must be an http:// or https:// URL with a host"],
    ),
    ("base_url without host", {"base_url": "https://"}, ["base_url: 'https://' must be"]),
]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [pytest.param(o, e, id=case) for case, o, e in BAD_INPUTS],
)
def test_bad_input_is_refused_with_an_actionable_message(
    overrides: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_profile(profile_fields(**overrides))
    assert caught.value.status_code == 422
    assert caught.value.code == "invalid_input"
    for fragment in expected:
        assert fragment in caught.value.message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_profile(profile_fields(default_size="256x256", counts=[3], base_url="x"))
    message = caught.value.message
    assert "default_size:" in message
    assert "counts:" in message
    assert "base_url:" in message


def test_a_valid_profile_passes_with_its_name_trimmed() -> None:
    fields = validate_profile(
        profile_fields(
            name="  Sketch  ",
            options=[
                {"name": "quality", "values": ["low", "high"], "default": "high"},
                {"name": "seed", "kind": "integer", "minimum": 0, "default": 7},
                {"name": "strength", "kind": "number", "maximum": 1, "default": 1},
                {"name": "negative_prompt", "kind": "string", "max_length": 10, "default": "blur"},
                {"name": "hd", "kind": "boolean", "default": False},
                {"name": "style", "kind": "string"},
            ],
        )
    )
    assert fields.name == "Sketch"


def test_base_url_may_be_left_out() -> None:
    assert validate_profile(profile_fields(base_url=None)).base_url is None


def test_patch_keeps_fields_it_does_not_mention() -> None:
    current = profile_fields()
    merged = apply_patch(current, ProfilePatch.model_validate({"enabled": False}))
    assert merged.enabled is False
    assert merged.model_dump(exclude={"enabled"}) == current.model_dump(exclude={"enabled"})


def test_patch_null_clears_base_url() -> None:
    merged = apply_patch(profile_fields(), ProfilePatch.model_validate({"base_url": None}))
    assert merged.base_url is None


def test_patch_breaking_a_field_constraint_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as caught:
        apply_patch(profile_fields(), ProfilePatch.model_validate({"name": None}))
    assert "name:" in caught.value.message
    # The patch states the field constraints itself (so the OpenAPI document shows them).
    with pytest.raises(ValidationError, match="timeout_s"):
        ProfilePatch.model_validate({"timeout_s": 0})
