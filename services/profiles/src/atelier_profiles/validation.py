"""The rules a profile must follow beyond its field types, each problem phrased so an admin knows
what to change: sizes, counts and options, secrets kept out of `provider_config`, a ComfyUI
workflow its worker can fill in, what the provider and model can do (`capabilities()`) and a
fallback chain without loops. Pure functions: the rules that need stored data get it passed in.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from atelier_contracts import comfyui
from atelier_contracts.errors import InvalidInput
from atelier_contracts.profiles import (
    ALLOWED_COUNTS,
    MAX_CREDIT_COST,
    SIZE_PATTERN,
    OptionSpec,
    ProfileFields,
)
from atelier_contracts.providers import KNOWN_PROVIDERS, ProviderCapabilities, capabilities
from atelier_security.origins import OriginError, origin_of

_SIZE_RE = re.compile(SIZE_PATTERN)
_ALLOWED = ", ".join(str(c) for c in ALLOWED_COUNTS)


def _listed(values: list[str]) -> str:
    return ", ".join(values) if values else "none"


def _repeated(values: Iterable[str]) -> list[str]:
    """The values listed more than once, sorted; linear (a profile's lists can be long)."""
    return sorted(value for value, n in Counter(values).items() if n > 1)


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but `true` is not a sensible default for a numeric option.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _option_problems(option: OptionSpec) -> list[str]:
    where = f"options.{option.name}"
    problems: list[str] = []
    default = option.default
    if option.kind == "enum":
        if not option.values:
            problems.append(f"{where}: an enum option needs `values`, the choices users pick from")
        else:
            repeated = _repeated(option.values)
            if repeated:
                problems.append(f"{where}: values listed more than once: {_listed(repeated)}")
            if default is not None and default not in option.values:
                problems.append(
                    f"{where}: default {default!r} is not one of its values "
                    f"({_listed(option.values)})"
                )
    if option.kind in ("integer", "number"):
        low, high = option.minimum, option.maximum
        if low is not None and high is not None and low > high:
            problems.append(f"{where}: minimum {low:g} is above maximum {high:g}")
        if default is not None:
            wanted = "a whole number" if option.kind == "integer" else "a number"
            integral = isinstance(default, int) or option.kind == "number"
            if not _is_number(default) or not integral:
                problems.append(f"{where}: default {default!r} is not {wanted}")
            elif low is not None and default < low:
                problems.append(f"{where}: default {default!r} is below the minimum {low:g}")
            elif high is not None and default > high:
                problems.append(f"{where}: default {default!r} is above the maximum {high:g}")
    if option.kind == "string" and default is not None:
        if not isinstance(default, str):
            problems.append(f"{where}: default {default!r} is not a string")
        elif option.max_length is not None and len(default) > option.max_length:
            problems.append(
                f"{where}: default is {len(default)} characters, longer than max_length "
                f"{option.max_length}"
            )
    if option.kind == "boolean" and default is not None and not isinstance(default, bool):
        problems.append(f"{where}: default {default!r} is not true or false")
    return problems


def profile_problems(fields: ProfileFields) -> list[str]:
    """Every rule the input breaks, each phrased so an admin knows what to change."""
    problems: list[str] = []
    if not fields.name.strip():
        problems.append("name: must not be blank")
    if "\\u0000" in fields.model_dump_json():
        # PostgreSQL text cannot hold NUL; no real name, model or option needs one.
        problems.append("text fields must not contain NUL characters")

    for size in fields.sizes:
        if not _SIZE_RE.match(size):
            problems.append(f"sizes: {size!r} is not a size like '1024x1024' (width x height)")
    repeated = _repeated(fields.sizes)
    if repeated:
        problems.append(f"sizes: listed more than once: {_listed(repeated)}")
    if fields.default_size not in fields.sizes:
        problems.append(
            f"default_size: {fields.default_size!r} is not one of sizes "
            f"({_listed(fields.sizes[:8])}{', ...' if len(fields.sizes) > 8 else ''})"
        )

    if not fields.counts:
        problems.append(f"counts: list at least one of {_ALLOWED}")
    for count in sorted(set(fields.counts) - set(ALLOWED_COUNTS)):
        problems.append(f"counts: {count} images per request is not supported; use {_ALLOWED}")
    if len(set(fields.counts)) != len(fields.counts):
        problems.append("counts: each count may be listed once")

    names = [o.name for o in fields.options]
    repeated = _repeated(names)
    if repeated:
        problems.append(f"options: more than one option named {_listed(repeated)}")
    for option in fields.options:
        problems.extend(_option_problems(option))

    if fields.base_url is not None:
        try:
            origin_of(fields.base_url)
        except OriginError as exc:
            problems.append(f"base_url: {exc}")
    problems.extend(provider_config_problems(fields.provider_config))
    problems.extend(workflow_problems(fields))
    if fields.credit_cost > MAX_CREDIT_COST:
        problems.append(f"credit_cost: at most {MAX_CREDIT_COST:,} credits per image")
    problems.extend(capability_problems(fields))
    return problems


# `provider_config` never holds secrets (keys are stored encrypted, as credentials): a key named
# like one, at any depth, or a value shaped like one is refused rather than stored in the clear.
_SECRET_NAMES = frozenset(
    {"key", "auth", "authorization", "bearer", "cookie", "pwd", "xkey", "xapikey"}
)
_SECRET_SUFFIXES = (
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "credentials",
    "privatekey",
    "accesskey",
    "secretkey",
    "sessionkey",
)
_SECRET_VALUE = re.compile(
    r"^(?:(?:bearer|basic)\s+\S{8,}|(?:sk|r8|xai|hf|fal)[-_][A-Za-z0-9_-]{16,}|AIza[A-Za-z0-9_-]{30,})$",
    re.IGNORECASE,
)


def _secret_name(key: str) -> bool:
    name = re.sub(r"[^a-z0-9]", "", key.lower())
    return (
        name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES) or name.startswith("authorization")
    )


def provider_config_problems(config: dict[str, Any]) -> list[str]:
    """Keys that look like secrets anywhere in `provider_config` (its depth is bounded by the
    contract, so this walk is short)."""
    found: list[str] = []
    stack: list[tuple[str, Any]] = [("provider_config", config)]
    while stack and len(found) < 5:
        where, value = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                path = f"{where}.{key}"
                if _secret_name(str(key)):
                    found.append(f"{path} (its name)")
                else:
                    stack.append((path, child))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(value))
        elif isinstance(value, str) and _SECRET_VALUE.match(value.strip()):
            found.append(f"{where} (its value looks like a key)")
    if not found:
        return []
    return [
        f"{', '.join(sorted(found))}: provider_config never holds secrets (it is stored and "
        "shown in the clear); an operator stores the provider's key with PUT "
        "/admin/v1/providers/{name}/credentials"
    ]


def workflow_problems(fields: ProfileFields) -> list[str]:
    """What in a ComfyUI profile's workflow and node map its worker could not fill in: every
    node the node map names must be in the workflow and have the input it writes, and the
    prompt must go somewhere unless `"prompt": null` says the workflow takes no text. Checked
    here so a bad profile is refused when saved, not on each of its jobs; the worker parses the
    same settings with the same code (`atelier_contracts.comfyui`)."""
    if fields.provider != comfyui.PROVIDER:
        return []
    return comfyui.config_problems(fields.provider_config)


def _pixels(size: str) -> int | None:
    if not _SIZE_RE.match(size):
        return None
    width, height = size.split("x")
    return int(width) * int(height)


def capability_problems(fields: ProfileFields) -> list[str]:
    """What the profile asks that its provider and model cannot do (`capabilities()`)."""
    if fields.provider not in KNOWN_PROVIDERS:
        return [
            f"provider: {fields.provider!r} has no worker in Atelier; use "
            f"{_listed(list(KNOWN_PROVIDERS))}"
        ]
    caps = capabilities(fields.provider, fields.model)
    who = f"{fields.provider} model {fields.model!r}"
    problems: list[str] = []
    if caps.sizes is not None:
        unknown = [size for size in fields.sizes if size not in caps.sizes]
        if unknown:
            problems.append(
                f"sizes: {who} does not make {_listed(unknown)}; it makes "
                f"{_listed(sorted(caps.sizes))}"
            )
    if caps.max_pixels is not None:
        huge = [size for size in fields.sizes if (_pixels(size) or 0) > caps.max_pixels]
        if huge:
            problems.append(
                f"sizes: {_listed(huge)} exceed the {caps.max_pixels:,} pixels a worker accepts"
            )
    if caps.max_count is not None:
        for count in sorted(c for c in set(fields.counts) if c > caps.max_count):
            problems.append(f"counts: {who} makes at most {caps.max_count} images, not {count}")
    for option in fields.options:
        problems.extend(_option_capability_problems(option, caps, who))
    limit = caps.max_reference_images
    if limit is not None and fields.max_reference_images > limit:
        problems.append(
            f"max_reference_images: {who} takes "
            + (f"at most {limit} reference images" if limit else "no reference images")
            + f", not {fields.max_reference_images}"
        )
    if caps.prompt_max_length is not None and fields.prompt_max_length > caps.prompt_max_length:
        problems.append(
            f"prompt_max_length: {who} takes prompts of at most {caps.prompt_max_length} "
            f"characters, not {fields.prompt_max_length}"
        )
    return problems


def _option_capability_problems(
    option: OptionSpec, caps: ProviderCapabilities, who: str
) -> list[str]:
    where = f"options.{option.name}"
    refused = caps.refused_options.get(option.name)
    if refused is not None:
        return [f"{where}: {refused}"]
    if caps.options is None:
        return []
    rule = caps.options.get(option.name)
    if rule is None:
        return [f"{where}: {who} has no such option; it takes {_listed(sorted(caps.options))}"]
    problems: list[str] = []
    if option.kind not in rule.kinds:
        problems.append(
            f"{where}: declare it as {' or '.join(sorted(rule.kinds))}, not {option.kind}"
        )
    if rule.values is not None and option.values:
        unknown = [value for value in option.values if value not in rule.values]
        if unknown:
            problems.append(
                f"{where}: {who} does not accept {_listed(unknown)}; it accepts "
                f"{_listed(sorted(rule.values))}"
            )
    low_ok = rule.minimum is None or (option.minimum is not None and option.minimum >= rule.minimum)
    high_ok = rule.maximum is None or (
        option.maximum is not None and option.maximum <= rule.maximum
    )
    if not (low_ok and high_ok):
        problems.append(
            f"{where}: set minimum and maximum within {rule.minimum:g}..{rule.maximum:g}, the "
            f"range {who} accepts"
            if rule.minimum is not None and rule.maximum is not None
            else f"{where}: bound it to the range {who} accepts"
        )
    return problems


def validate_profile(fields: ProfileFields, more_problems: Sequence[str] = ()) -> ProfileFields:
    """The profile to store (name trimmed), or InvalidInput listing every problem (those of
    `profile_problems`, then `more_problems`: the rules that need stored data)."""
    problems = [*profile_problems(fields), *more_problems]
    if problems:
        raise InvalidInput("; ".join(problems))
    return fields.model_copy(update={"name": fields.name.strip()})


def fallback_problems(
    profile_id: str | None, fallback_id: str | None, links: dict[str, str | None]
) -> list[str]:
    """Whether `fallback_id` may follow `profile_id`: it exists and the chain has no cycle.

    `links` maps every stored profile to its fallback; `profile_id` is None for a new profile.
    """
    if fallback_id is None:
        return []
    where = "fallback_profile_id"
    if fallback_id == profile_id:
        return [f"{where}: a profile cannot fall back to itself"]
    if fallback_id not in links:
        return [f"{where}: there is no profile with id {fallback_id!r}"]
    # Follow the chain from the new fallback; reaching this profile would close a loop. `seen`
    # stops at loops that do not involve this profile (none can be stored, but be safe).
    seen: set[str] = set()
    current: str | None = fallback_id
    while current is not None and current not in seen:
        if current == profile_id:
            return [f"{where}: {fallback_id!r} falls back (through its chain) to this profile"]
        seen.add(current)
        current = links.get(current)
    return []
