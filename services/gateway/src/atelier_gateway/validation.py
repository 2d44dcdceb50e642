"""A generation request checked against the global switch and its profile: the first problem
wins, and each message names what is allowed, so the dialog can show it as it is.

Plain functions over the contracts, shared by submitting, previewing and estimating (and the
OpenAI-compatible mapping's option checks).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from atelier_contracts.errors import Forbidden, InvalidInput
from atelier_contracts.profiles import GenerationSettings, OptionSpec, Profile
from atelier_gateway.models import GenerationRequestBody


@dataclass(frozen=True)
class ResolvedRequest:
    """A request that passed validation, with the profile's defaults filled in."""

    profile: Profile
    prompt: str
    size: str
    count: int
    options: dict[str, Any]


def _listing(values: Iterable[object]) -> str:
    items = [str(v) for v in values]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} or {items[-1]}"


@dataclass(frozen=True)
class RequestLimits:
    """Limits on what a request may carry that are settings (`ATELIER_GATEWAY_*`); the fixed
    ones (element count, element data, options) are in `models`."""

    max_data_url_bytes: int = 3 * 1024 * 1024


def data_url_bytes(data_url: str) -> int:
    """The decoded size of a data URL's payload (base64 or percent-encoded), without decoding."""
    header, _, payload = data_url.partition(",")
    if header.lower().endswith(";base64"):
        payload = payload.strip()
        return max(0, len(payload) * 3 // 4 - payload[-2:].count("="))
    return len(payload)


def _pictures(count: int) -> str:
    return f"{count} picture{'' if count == 1 else 's'}"


def check_reference_images(
    request: GenerationRequestBody, profile: Profile, limits: RequestLimits
) -> None:
    """Pictures the request carries (`data_url`) or makes the gateway's services fetch (`url`)
    are limited to what the profile can use, and each one's size; library images (`media_id`)
    travel as an id, and context leaves out those over the profile's maximum, with the reason."""
    carried = 0
    for element in request.context.elements:
        image = element.image
        if image is None:
            continue
        if image.data_url:
            size = data_url_bytes(image.data_url)
            if size > limits.max_data_url_bytes:
                raise InvalidInput(
                    f"The picture of element {element.id!r} is {size:,} bytes; a picture sent "
                    f"in the request may be at most {limits.max_data_url_bytes:,} bytes "
                    "(ATELIER_GATEWAY_MAX_DATA_URL_BYTES). Add it to the media library and send "
                    "its media_id instead.",
                    code="reference_image_too_large",
                )
        if element.send.image and (image.data_url or image.url):
            carried += 1
    limit = profile.max_reference_images
    if carried > limit:
        takes = (
            "takes no reference images"
            if limit == 0
            else f"takes at most {_pictures(limit)} as reference (its max_reference_images)"
        )
        raise InvalidInput(
            f"{profile.name!r} {takes}, and this request sends {_pictures(carried)} by data_url "
            "or url; turn off sending the image of the others.",
            code="too_many_reference_images",
        )


def validate_generation(
    request: GenerationRequestBody,
    profile: Profile | None,
    settings: GenerationSettings,
    limits: RequestLimits | None = None,
) -> ResolvedRequest:
    """Check a request against the global switch and its profile; first problem wins.

    Messages name the allowed values, so the dialog can show them as they are.
    """
    if not settings.enabled:
        reason = settings.reason or "an admin has paused it."
        raise Forbidden(f"Image generation is turned off: {reason}", code="generation_disabled")
    if profile is None:
        raise InvalidInput(
            f"There is no profile {request.profile_id!r}; GET /v1/features lists the ones "
            "available.",
            code="unknown_profile",
        )
    if not profile.enabled:
        raise InvalidInput(
            f"The profile {profile.name!r} is disabled; choose another one.",
            code="profile_disabled",
        )
    if not request.prompt.strip():
        raise InvalidInput("The prompt is empty; describe the image to make.", code="empty_prompt")
    if len(request.prompt) > profile.prompt_max_length:
        raise InvalidInput(
            f"The prompt is {len(request.prompt)} characters long; {profile.name!r} takes at "
            f"most {profile.prompt_max_length}.",
            code="prompt_too_long",
        )

    size = profile.default_size if request.size is None else request.size.strip().lower()
    if size not in profile.sizes:
        raise InvalidInput(
            f"{profile.name!r} does not make {request.size!r} images; choose "
            f"{_listing(profile.sizes)}.",
            code="size_not_allowed",
        )
    if request.count not in profile.counts:
        raise InvalidInput(
            f"{profile.name!r} makes {_listing(sorted(profile.counts))} images at a time, "
            f"not {request.count}.",
            code="count_not_allowed",
        )

    options = resolve_options(profile, request.options)
    check_reference_images(request, profile, limits or RequestLimits())
    return ResolvedRequest(
        profile=profile,
        prompt=request.prompt,
        size=size,
        count=request.count,
        options=options,
    )


def resolve_options(profile: Profile, requested: dict[str, Any]) -> dict[str, Any]:
    """The profile's defaults overlaid with the request's values, each checked against its spec.

    A `null` value means "the default", which is what a form sends for an untouched field.
    """
    specs = {spec.name: spec for spec in profile.options}
    resolved = {spec.name: spec.default for spec in profile.options if spec.default is not None}
    for name, value in requested.items():
        spec = specs.get(name)
        if spec is None:
            known = f"it knows {_listing(sorted(specs))}" if specs else "it takes no options"
            raise InvalidInput(
                f"{profile.name!r} has no option {name!r}; {known}.", code="unknown_option"
            )
        if value is None:
            continue
        problem = option_value_problem(spec, value)
        if problem is not None:
            raise InvalidInput(f"Option {name!r} {problem} (got {value!r}).", code="invalid_option")
        resolved[name] = value
    return resolved


def option_value_problem(spec: OptionSpec, value: Any) -> str | None:
    """Why `value` does not fit `spec`, as the end of a sentence; None when it fits."""
    # bool is an int in Python, and JSON `true` must not pass as the number 1.
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if spec.kind == "enum":
        if not isinstance(value, str):
            return "must be a string"
        if spec.values is not None and value not in spec.values:
            return f"must be one of {_listing(spec.values)}"
        return None
    if spec.kind == "string":
        if not isinstance(value, str):
            return "must be a string"
        if spec.max_length is not None and len(value) > spec.max_length:
            return f"must be at most {spec.max_length} characters long"
        return None
    if spec.kind == "boolean":
        return None if isinstance(value, bool) else "must be true or false"
    if spec.kind == "integer" and not is_int:
        return "must be a whole number"
    if spec.kind == "number" and not (
        is_int or (isinstance(value, float) and math.isfinite(value))
    ):
        return "must be a number"
    if spec.minimum is not None and value < spec.minimum:
        return f"must be at least {spec.minimum:g}"
    if spec.maximum is not None and value > spec.maximum:
        return f"must be at most {spec.maximum:g}"
    return None
