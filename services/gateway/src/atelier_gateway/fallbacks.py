"""The fallback chain planned at submission (issue 16): each profile after the request's own,
with the request as that profile would run it and a note for everything that changed."""

from __future__ import annotations

from collections.abc import Iterable

from atelier_contracts.jobs import MAX_FALLBACKS, FallbackPlan
from atelier_contracts.profiles import Profile, ProfileSnapshot, nearest_size
from atelier_gateway.validation import ResolvedRequest, option_value_problem


def _credits(amount: float) -> str:
    return f"{amount:g} credit{'' if amount == 1 else 's'}"


def plan_fallback(fallback: Profile, resolved: ResolvedRequest) -> FallbackPlan:
    """The request as `fallback` would run it: its size nearest the asked one, the options it
    accepts over its own defaults, and a note for everything that changed."""
    name = fallback.name
    notes: list[str] = []
    size = resolved.size
    if size not in fallback.sizes:
        size = nearest_size(resolved.size, fallback.sizes)
        notes.append(f"Profile {name!r} makes {size}, nearest to the asked {resolved.size}.")
    specs = {spec.name: spec for spec in fallback.options}
    options = {spec.name: spec.default for spec in fallback.options if spec.default is not None}
    for option, value in resolved.options.items():
        spec = specs.get(option)
        if spec is None:
            notes.append(f"Profile {name!r} has no option {option!r}: left out.")
            continue
        problem = option_value_problem(spec, value)
        if problem is not None:
            instead = (
                "left out" if spec.default is None else f"its default {spec.default!r} is used"
            )
            notes.append(
                f"On profile {name!r}, option {option!r} {problem} (got {value!r}): {instead}."
            )
            continue
        options[option] = value
    if fallback.credit_cost != resolved.profile.credit_cost:
        notes.append(
            f"Profile {name!r} costs {_credits(fallback.credit_cost)} an image, not "
            f"{_credits(resolved.profile.credit_cost)}."
        )
    return FallbackPlan(
        profile=ProfileSnapshot.model_validate(fallback, from_attributes=True),
        size=size,
        options=options,
        notes=notes,
    )


def plan_fallbacks(resolved: ResolvedRequest, profiles: Iterable[Profile]) -> list[FallbackPlan]:
    """The chain of `fallback_profile_id`s after the request's profile, planned for this request
    (`plan_fallback`), at most `MAX_FALLBACKS` of them.

    The chain is followed through the catalog as it is now: it ends at a profile that no longer
    exists or at one already passed (profiles refuses cycles when they are stored, but the
    catalog may be read between two edits). A disabled profile, and one whose prompt limit the
    prompt is over, is passed over and its own fallback tried. The provider's key and where it
    may be sent are not checked here, as for the request's own profile: the worker checks them
    when the task runs, and a failure there moves the task on along the chain.
    """
    by_id = {profile.id: profile for profile in profiles}
    seen = {resolved.profile.id}
    plans: list[FallbackPlan] = []
    next_id = resolved.profile.fallback_profile_id
    while next_id is not None and next_id not in seen and len(plans) < MAX_FALLBACKS:
        seen.add(next_id)
        fallback = by_id.get(next_id)
        if fallback is None:
            break
        next_id = fallback.fallback_profile_id
        if not fallback.enabled or len(resolved.prompt) > fallback.prompt_max_length:
            continue
        plans.append(plan_fallback(fallback, resolved))
    return plans
