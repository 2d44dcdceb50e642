"""The fallback chain, planned at submission (issue 16): which profiles a job may move to when
its provider is unavailable, and what each changes about the request."""

from typing import Any

from gateway_testkit import World, auth, make_profile, make_token, running_gateway

from atelier_contracts.jobs import MAX_FALLBACKS
from atelier_contracts.profiles import GenerationSettings, OptionSpec, Profile
from atelier_gateway.fallbacks import plan_fallback, plan_fallbacks
from atelier_gateway.models import GenerationRequestBody
from atelier_gateway.validation import ResolvedRequest, validate_generation

ON = GenerationSettings(enabled=True)


def resolved(profile: Profile, **overrides: Any) -> ResolvedRequest:
    fields: dict[str, Any] = {"project": "alpha", "profile_id": profile.id, "prompt": "A fox"}
    fields.update(overrides)
    return validate_generation(GenerationRequestBody.model_validate(fields), profile, ON)


def chain(*names: str, **overrides: Any) -> list[Profile]:
    """Profiles named `names`, each falling back to the next (ids are the lower-case names)."""
    return [
        make_profile(
            id=name.lower(),
            name=name,
            fallback_profile_id=names[i + 1].lower() if i + 1 < len(names) else None,
            **overrides,
        )
        for i, name in enumerate(names)
    ]


def test_a_profile_without_a_fallback_plans_none() -> None:
    [a] = chain("A")
    assert plan_fallbacks(resolved(a), [a]) == []


def test_the_chain_is_followed_in_order_with_each_profile_frozen() -> None:
    profiles = chain("A", "B", "C")
    plans = plan_fallbacks(resolved(profiles[0]), profiles)
    assert [plan.profile.id for plan in plans] == ["b", "c"]
    assert plans[0].profile.name == "B" and plans[0].profile.provider == "offline"
    # The same sizes, options and price as the asked profile: nothing to say.
    assert plans[0].size == "1024x1024" and plans[0].notes == []
    assert plans[0].options == {"quality": "medium", "guidance": 7.5, "transparent": False}


def test_disabled_profiles_and_those_the_prompt_is_too_long_for_are_passed_over() -> None:
    a, b, c, d, e = chain("A", "B", "C", "D", "E")
    b = b.model_copy(update={"enabled": False})
    d = d.model_copy(update={"prompt_max_length": 3})
    plans = plan_fallbacks(resolved(a), [a, b, c, d, e])
    assert [plan.profile.id for plan in plans] == ["c", "e"]


def test_the_chain_stops_at_a_missing_profile_a_cycle_or_max_fallbacks() -> None:
    a, b, c = chain("A", "B", "C")
    assert [p.profile.id for p in plan_fallbacks(resolved(a), [a, b])] == ["b"]  # c is gone
    # A cycle (profiles refuses one when it is stored; the catalog may be read mid-edit).
    looping = c.model_copy(update={"fallback_profile_id": "a"})
    assert [p.profile.id for p in plan_fallbacks(resolved(a), [a, b, looping])] == ["b", "c"]
    back_to_b = c.model_copy(update={"fallback_profile_id": "b"})
    assert [p.profile.id for p in plan_fallbacks(resolved(a), [a, b, back_to_b])] == ["b", "c"]
    names = [chr(ord("A") + i) for i in range(MAX_FALLBACKS + 3)]
    long = chain(*names)
    plans = plan_fallbacks(resolved(long[0]), long)
    assert [p.profile.name for p in plans] == names[1 : MAX_FALLBACKS + 1]


def test_the_fallback_makes_its_size_nearest_the_asked_one() -> None:
    a = make_profile(id="a", name="A", sizes=["1792x1024", "1024x1024"], fallback_profile_id="b")
    b = make_profile(
        id="b", name="B", sizes=["1024x1024", "1536x1024", "1024x1536"], default_size="1024x1024"
    )
    [plan] = plan_fallbacks(resolved(a, size="1792x1024"), [a, b])
    assert plan.size == "1536x1024"
    assert plan.notes == ["Profile 'B' makes 1536x1024, nearest to the asked 1792x1024."]
    [same] = plan_fallbacks(resolved(a, size="1024x1024"), [a, b])
    assert (same.size, same.notes) == ("1024x1024", [])


def test_options_the_fallback_lacks_or_refuses_are_left_out_with_a_note() -> None:
    a = make_profile(
        id="a",
        name="A",
        options=[
            OptionSpec(name="style", values=["vivid", "natural"]),
            OptionSpec(name="quality", values=["low", "medium", "high"], default="medium"),
            OptionSpec(name="seed", kind="integer", minimum=0, maximum=2**31 - 1),
            OptionSpec(name="steps", kind="integer", minimum=1, maximum=100),
        ],
        fallback_profile_id="b",
    )
    b = make_profile(
        id="b",
        name="B",
        options=[
            OptionSpec(name="quality", values=["standard", "hd"], default="standard"),
            OptionSpec(name="seed", kind="integer", minimum=0, maximum=2**31 - 1),
            OptionSpec(name="steps", kind="integer", minimum=1, maximum=50),
            OptionSpec(name="transparent", kind="boolean", default=False),
        ],
    )
    request = resolved(a, options={"style": "vivid", "seed": 7, "steps": 80})
    [plan] = plan_fallbacks(request, [a, b])
    # Its own defaults, with the values it accepts from the job.
    assert plan.options == {"quality": "standard", "transparent": False, "seed": 7}
    assert plan.notes == [
        "On profile 'B', option 'quality' must be one of standard or hd (got 'medium'): "
        "its default 'standard' is used.",
        "Profile 'B' has no option 'style': left out.",
        "On profile 'B', option 'steps' must be at most 50 (got 80): left out.",
    ]


def test_a_different_price_is_noted() -> None:
    a = make_profile(id="a", name="A", credit_cost=1, fallback_profile_id="b")
    b = make_profile(id="b", name="B", credit_cost=2.5)
    plan = plan_fallback(b, resolved(a))
    assert plan.profile.credit_cost == 2.5
    assert plan.notes == ["Profile 'B' costs 2.5 credits an image, not 1 credit."]


async def test_a_submitted_job_carries_its_planned_fallbacks() -> None:
    a, b, c = chain("A", "B", "C")
    c = c.model_copy(update={"sizes": ["512x512"], "default_size": "512x512"})
    world = World(profiles=[a, b.model_copy(update={"enabled": False}), c])
    async with running_gateway(world) as gateway:
        response = await gateway.client.post(
            "/v1/generations",
            json={"project": "alpha", "profile_id": "a", "prompt": "A lighthouse"},
            headers=auth(make_token("alice", ["alpha"])),
        )
    assert response.status_code == 202, response.text
    [event] = world.published
    [plan] = event.fallbacks
    assert (plan.profile.id, plan.size) == ("c", "512x512")
    assert plan.notes == ["Profile 'C' makes 512x512, nearest to the asked 1024x1024."]
