"""`validate_generation`: every way a request can be wrong, and what the user is told."""

from typing import Any
from uuid import UUID, uuid4, uuid5

import pytest
from gateway_testkit import make_profile
from pydantic import ValidationError

from atelier_contracts.errors import AtelierError
from atelier_contracts.profiles import GenerationSettings, Profile
from atelier_gateway.job_requests import JobIds, build_job_requested
from atelier_gateway.models import GenerationRequestBody
from atelier_gateway.validation import validate_generation

ON = GenerationSettings(enabled=True)


job_id_for = JobIds("test-job-id-secret").new


def body(**overrides: Any) -> GenerationRequestBody:
    fields: dict[str, Any] = {"project": "alpha", "profile_id": "sketch", "prompt": "A lighthouse"}
    fields.update(overrides)
    return GenerationRequestBody.model_validate(fields)


def rejected(
    request: GenerationRequestBody,
    profile: Profile | None = None,
    settings: GenerationSettings = ON,
) -> AtelierError:
    with pytest.raises(AtelierError) as caught:
        validate_generation(request, profile, settings)
    return caught.value


def test_a_valid_request_gets_the_profile_defaults() -> None:
    resolved = validate_generation(body(), make_profile(), ON)
    assert resolved.size == "1024x1024"
    assert resolved.count == 1
    assert resolved.prompt == "A lighthouse"
    # Defaults that are set (quality, guidance, transparent=False) apply; seed has none.
    assert resolved.options == {"quality": "medium", "guidance": 7.5, "transparent": False}


def test_request_options_override_defaults_and_null_means_default() -> None:
    resolved = validate_generation(
        body(
            size="512X512 ",
            count=4,
            options={"quality": "high", "seed": 42, "guidance": None, "negative_prompt": "fog"},
        ),
        make_profile(),
        ON,
    )
    assert resolved.size == "512x512"
    assert resolved.count == 4
    assert resolved.options == {
        "quality": "high",
        "seed": 42,
        "guidance": 7.5,
        "transparent": False,
        "negative_prompt": "fog",
    }


def test_generation_switched_off_is_403_with_the_admins_reason() -> None:
    error = rejected(
        body(), make_profile(), GenerationSettings(enabled=False, reason="Back at noon.")
    )
    assert (error.status_code, error.code) == (403, "generation_disabled")
    assert "Back at noon." in error.message


def test_generation_switched_off_without_reason_still_explains() -> None:
    error = rejected(body(), make_profile(), GenerationSettings(enabled=False))
    assert error.code == "generation_disabled"
    assert "turned off" in error.message


def test_unknown_profile() -> None:
    error = rejected(body(profile_id="nope"), None)
    assert (error.status_code, error.code) == (422, "unknown_profile")
    assert "'nope'" in error.message
    assert "/v1/features" in error.message


def test_disabled_profile() -> None:
    error = rejected(body(), make_profile(enabled=False))
    assert (error.status_code, error.code) == (422, "profile_disabled")
    assert "Sketch" in error.message


def test_size_not_allowed_lists_the_allowed_sizes() -> None:
    error = rejected(body(size="999x999"), make_profile())
    assert (error.status_code, error.code) == (422, "size_not_allowed")
    assert "1024x1024" in error.message and "512x512" in error.message
    assert "999x999" in error.message


@pytest.mark.parametrize("count", [0, 3, 5, -1, 100])
def test_count_not_allowed_lists_the_allowed_counts(count: int) -> None:
    error = rejected(body(count=count), make_profile())
    assert (error.status_code, error.code) == (422, "count_not_allowed")
    assert "1, 2 or 4" in error.message
    assert str(count) in error.message


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt(prompt: str) -> None:
    error = rejected(body(prompt=prompt), make_profile())
    assert (error.status_code, error.code) == (422, "empty_prompt")


def test_prompt_too_long_states_the_limit() -> None:
    error = rejected(body(prompt="x" * 101), make_profile(prompt_max_length=100))
    assert (error.status_code, error.code) == (422, "prompt_too_long")
    assert "100" in error.message and "101" in error.message


def test_prompt_at_the_limit_is_fine() -> None:
    validate_generation(body(prompt="x" * 100), make_profile(prompt_max_length=100), ON)


def test_unknown_option_lists_the_known_ones() -> None:
    error = rejected(body(options={"style": "vivid"}), make_profile())
    assert (error.status_code, error.code) == (422, "unknown_option")
    assert "'style'" in error.message
    for known in ("quality", "seed", "negative_prompt", "guidance", "transparent"):
        assert known in error.message


def test_unknown_option_on_a_profile_without_options() -> None:
    error = rejected(body(options={"quality": "high"}), make_profile(options=[]))
    assert error.code == "unknown_option"
    assert "no options" in error.message


@pytest.mark.parametrize(
    ("options", "hint"),
    [
        ({"quality": "ultra"}, "low, medium or high"),
        ({"quality": 3}, "string"),
        ({"seed": "42"}, "whole number"),
        ({"seed": 1.5}, "whole number"),
        ({"seed": True}, "whole number"),
        ({"seed": -1}, "at least 0"),
        ({"guidance": 20.5}, "at most 20"),
        ({"guidance": "high"}, "number"),
        ({"guidance": False}, "number"),
        ({"transparent": "yes"}, "true or false"),
        ({"transparent": 1}, "true or false"),
        ({"negative_prompt": "x" * 51}, "at most 50 characters"),
        ({"negative_prompt": 7}, "string"),
    ],
)
def test_invalid_option_values(options: dict[str, Any], hint: str) -> None:
    error = rejected(body(options=options), make_profile())
    assert (error.status_code, error.code) == (422, "invalid_option")
    assert hint in error.message
    assert repr(next(iter(options))) in error.message


def test_whole_numbers_are_fine_for_number_options() -> None:
    resolved = validate_generation(body(options={"guidance": 3}), make_profile(), ON)
    assert resolved.options["guidance"] == 3


def test_checks_run_in_order_switch_first() -> None:
    # Everything is wrong; the user hears about the most fundamental problem.
    error = rejected(
        body(prompt="", size="1x1", count=3, options={"nope": 1}),
        None,
        GenerationSettings(enabled=False),
    )
    assert error.code == "generation_disabled"


def test_request_body_shape_is_checked_by_the_model() -> None:
    with pytest.raises(ValidationError):
        body(project="has spaces")  # would break the status subject
    with pytest.raises(ValidationError):
        body(prompt="x" * 32_001)
    with pytest.raises(ValidationError):
        body(promt="typo")  # misspelt fields are refused, not ignored
    with pytest.raises(ValidationError):
        body(target={"kind": "element"})  # an element target needs its id


def test_job_ids_are_random_without_a_key_and_stable_with_one() -> None:
    assert job_id_for("alice", None) != job_id_for("alice", None)
    UUID(job_id_for("alice", None))
    keyed = job_id_for("alice", "k-1")
    assert keyed == job_id_for("alice", "k-1")
    assert keyed != job_id_for("bob", "k-1")  # keys are per user
    assert keyed != job_id_for("alice", "k-2")


def test_keyed_job_ids_cannot_be_predicted_without_the_secret() -> None:
    # The uuid5 of user and key, as ids were made before: anyone could compute it.
    old = uuid5(UUID("e8c86d62-46f0-4a31-b9bb-893879e0e384"), "alice:k-1")
    ours, theirs = JobIds("one secret"), JobIds("another secret")
    assert ours.new("alice", "k-1") not in (str(old), theirs.new("alice", "k-1"))
    assert UUID(ours.new("alice", "k-1")).version == 8


def test_a_gateway_knows_the_ids_it_made_for_a_user() -> None:
    ids = JobIds("test-job-id-secret")
    for key in (None, "k-1"):
        job_id = ids.new("alice", key)
        assert ids.made_for("alice", job_id)
        assert not ids.made_for("bob", job_id)
        assert not JobIds("another secret").made_for("alice", job_id)
    assert not ids.made_for("alice", str(uuid4()))
    assert not ids.made_for("alice", "job-a")


@pytest.mark.parametrize("key", ["", "k" * 201])
def test_idempotency_key_length_is_checked(key: str) -> None:
    with pytest.raises(AtelierError) as caught:
        job_id_for("alice", key)
    assert (caught.value.status_code, caught.value.code) == (422, "invalid_idempotency_key")


def test_the_event_carries_the_snapshot_and_resolved_values() -> None:
    request = body(options={"seed": 7})
    profile = make_profile()
    resolved = validate_generation(request, profile, ON)
    event = build_job_requested(
        resolved, request, job_id="j-1", user_id="alice", idempotency_key=None
    )
    assert event.type == "jobs.requested"
    assert (event.job_id, event.user_id, event.project) == ("j-1", "alice", "alpha")
    assert event.profile.id == "sketch" and event.profile.model == "offline-sketch"
    assert event.size == "1024x1024"
    assert event.options["seed"] == 7 and event.options["quality"] == "medium"


def test_keyed_requests_publish_a_stable_event_id() -> None:
    request = body()
    resolved = validate_generation(request, make_profile(), ON)
    job_id = job_id_for("alice", "k")
    first, again = (
        build_job_requested(resolved, request, job_id=job_id, user_id="alice", idempotency_key="k")
        for _ in range(2)
    )
    assert first.event_id == again.event_id
    assert first.idempotency_key == "k"
    unkeyed = [
        build_job_requested(resolved, request, job_id="j", user_id="alice", idempotency_key=None)
        for _ in range(2)
    ]
    assert unkeyed[0].event_id != unkeyed[1].event_id
