"""The generation request: `POST /v1/generations`, `POST /v1/generations/estimate` and
`POST /v1/context/preview` take the same body.

These are the contracts' models (`GenerationContext`, `Target`...) made strict for what comes
from outside: no unknown fields at any level, no `"2"` or `true` for a number, and free-form JSON
(`data`, `options`) bounded in depth, keys, string length and bytes, so a request can neither
hide typos nor carry what the services behind the gateway cannot serialize or should not store
(issue 15). They subclass the contracts, so what validated here is handed on as it is; consumers
keep parsing the (lenient, forward-compatible) contract models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema

from atelier_contracts.jobs import (
    ContextElement,
    ElementImage,
    GenerationContext,
    SendToggles,
    Target,
)
from atelier_contracts.subjects import PROJECT_ID_PATTERN

PROMPT_MAX_LENGTH = 32_000


@dataclass(frozen=True)
class JsonLimits:
    """Bounds on a free-form JSON value: how deep, how many keys in all, how long a string (keys
    included), how many bytes serialized."""

    what: str
    max_depth: int
    max_keys: int
    max_string: int
    max_bytes: int

    def problem(self, value: object) -> str | None:
        """What is over a limit, as a sentence; None when `value` fits. Walks iteratively and
        stops at the first problem, so a value nested thousands deep costs nothing."""
        keys = items = 0
        stack: list[tuple[object, int]] = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            if isinstance(item, dict | list):
                if depth > self.max_depth:
                    return f"{self.what} is nested more than {self.max_depth} levels deep"
                if isinstance(item, dict):
                    keys += len(item)
                    if keys > self.max_keys:
                        return f"{self.what} has more than {self.max_keys} keys in all"
                    for key in item:
                        if isinstance(key, str) and len(key) > self.max_string:
                            return f"{self.what} has a key longer than {self.max_string} characters"
                    stack.extend((v, depth + 1) for v in item.values())
                else:
                    items += len(item)
                    # Each item takes at least two bytes ("0,"): a list longer than that is
                    # too large without serializing it.
                    if items > self.max_bytes // 2:
                        return f"{self.what} is larger than {self.max_bytes:,} bytes as JSON"
                    stack.extend((v, depth + 1) for v in item)
            elif isinstance(item, str) and len(item) > self.max_string:
                return f"{self.what} has a text longer than {self.max_string:,} characters"
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        if size > self.max_bytes:
            return f"{self.what} is {size:,} bytes as JSON; at most {self.max_bytes:,} are allowed"
        return None

    def check(self, value: dict[str, Any]) -> dict[str, Any]:
        problem = self.problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def json_schema(self) -> dict[str, Any]:
        """The limits as JSON Schema, for the OpenAPI document: values nest at most `max_depth`
        levels, no object has more keys or a string more characters than allowed. The totals
        (keys in all, bytes) have no JSON Schema keyword; the description states them."""
        scalars = ["string", "number", "boolean", "null"]
        # Innermost first: at the deepest level only scalars; above it, arrays and objects of
        # the level below. One node per level (each keyword applies to its own type only).
        node: dict[str, Any] = {"type": scalars, "maxLength": self.max_string}
        for _ in range(self.max_depth - 1):
            node = {
                "type": [*scalars, "array", "object"],
                "maxLength": self.max_string,
                "items": node,
                "maxProperties": self.max_keys,
                "propertyNames": {"maxLength": self.max_string},
                "additionalProperties": node,
            }
        return {
            "type": "object",
            "maxProperties": self.max_keys,
            "propertyNames": {"maxLength": self.max_string},
            "additionalProperties": node,
            "description": f"Free-form JSON: at most {self.max_depth} levels deep, "
            f"{self.max_keys} keys in all, texts of at most {self.max_string:,} characters, "
            f"{self.max_bytes:,} bytes as JSON",
        }


# An element's fields: a character sheet is a few levels and a few dozen keys at most.
ELEMENT_DATA_LIMITS = JsonLimits(
    "element data", max_depth=8, max_keys=200, max_string=10_000, max_bytes=64 * 1024
)
# Options are scalars the profile declares; nesting is only allowed so the profile's own check
# can say what is wrong with it.
OPTIONS_LIMITS = JsonLimits(
    "options", max_depth=3, max_keys=50, max_string=PROMPT_MAX_LENGTH, max_bytes=64 * 1024
)
MAX_ELEMENTS = 16  # as the contract's `GenerationContext` allows

ElementData = Annotated[
    dict[str, Any],
    AfterValidator(ELEMENT_DATA_LIMITS.check),
    WithJsonSchema(ELEMENT_DATA_LIMITS.json_schema()),
]
Options = Annotated[
    dict[str, Any],
    AfterValidator(OPTIONS_LIMITS.check),
    WithJsonSchema(OPTIONS_LIMITS.json_schema()),
]


# Where the other two kinds are named, they may only be left empty (`null` or `""`), as the
# contract has always read them.
_Unset = Literal[""] | None
# The contract's event-only kinds (ADR 0017): a staged object's key is written by the gateway,
# never named by a user. Only their empty values are taken (the facade hands over contract
# models), they are left out of the schema and of every dump (the request digest included).
_EventOnlyStaged = Annotated[SkipJsonSchema[None], Field(exclude=True)]
_EventOnlyWithheld = Annotated[SkipJsonSchema[Literal[False]], Field(exclude=True)]


class _RequestImage(ElementImage):
    """What the three kinds below share: nothing unknown, and the event-only kinds left empty."""

    model_config = ConfigDict(extra="forbid")

    staged: _EventOnlyStaged = None
    withheld: _EventOnlyWithheld = False


class MediaImage(_RequestImage):
    """A picture from the project's media library."""

    media_id: str = Field(min_length=1, max_length=200)
    url: _Unset = None
    data_url: _Unset = None


class UrlImage(_RequestImage):
    """A picture fetched from a public address (through the SSRF guard)."""

    media_id: _Unset = None
    url: str = Field(min_length=1, max_length=2048)
    data_url: _Unset = None


class DataUrlImage(_RequestImage):
    """A picture sent in the request: a `data:image/...;base64,` URL."""

    media_id: _Unset = None
    url: _Unset = None
    data_url: str = Field(
        min_length=1,
        max_length=5_000_000,
        description="A `data:image/...;base64,` URL; its decoded size is limited by "
        "`ATELIER_GATEWAY_MAX_DATA_URL_BYTES` (3 MiB). Larger pictures should be uploaded to the "
        "media library and referenced by `media_id`",
    )


_IMAGE_KINDS = ("media_id", "url", "data_url")


def _image_kind(value: Any) -> str | None:
    """Which of the three an element image is; None (refused) unless exactly one is given."""
    if isinstance(value, dict):
        given = [kind for kind in _IMAGE_KINDS if value.get(kind)]
    else:
        given = [kind for kind in _IMAGE_KINDS if getattr(value, kind, None)]
    return given[0] if len(given) == 1 else None


# `oneOf` in the schema: exactly one of media_id, url or data_url.
AnyElementImage = Annotated[
    Annotated[MediaImage, Tag("media_id")]
    | Annotated[UrlImage, Tag("url")]
    | Annotated[DataUrlImage, Tag("data_url")],
    Discriminator(
        _image_kind,
        custom_error_type="invalid_image",
        custom_error_message="an element image needs exactly one of media_id, url or data_url",
    ),
]


class StrictSendToggles(SendToggles):
    model_config = ConfigDict(extra="forbid")

    image: StrictBool = True
    description: StrictBool = True
    data: StrictBool = True


class ContextElementIn(ContextElement):
    """A worldbuilding element picked as context; `image` is exactly one of its three kinds."""

    model_config = ConfigDict(extra="forbid")

    data: ElementData = Field(default_factory=dict)
    image: AnyElementImage | None = None
    send: StrictSendToggles = Field(default_factory=StrictSendToggles)


class GenerationContextIn(GenerationContext):
    model_config = ConfigDict(extra="forbid")

    # Narrowed to the strict element (a list is invariant for mypy; validated, it is only read).
    elements: list[ContextElementIn] = Field(  # type: ignore[assignment]
        default_factory=list, max_length=MAX_ELEMENTS
    )


class TargetIn(Target):
    # The contract's rule (kind `element` needs an element_id) said in the schema too, so a
    # client (or schemathesis) keeping to the document is not refused.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"properties": {"kind": {"enum": ["media", "cover"]}}},
                {
                    "properties": {"kind": {"const": "element"}, "element_id": {"type": "string"}},
                    "required": ["kind", "element_id"],
                },
            ]
        },
    )

    element_id: str | None = Field(default=None, min_length=1, max_length=200)


class GenerationRequestBody(BaseModel):
    """`POST /v1/generations` and `POST /v1/context/preview`."""

    # A misspelt field ("sizes", "promt") would otherwise be ignored silently and the user would
    # get defaults they did not ask for; the nested models refuse unknown fields too.
    model_config = ConfigDict(extra="forbid")

    project: str = Field(pattern=PROJECT_ID_PATTERN, examples=["my-novel"])
    profile_id: str = Field(min_length=1, max_length=200)
    prompt: str = Field(max_length=PROMPT_MAX_LENGTH, examples=["A lighthouse in a storm"])
    size: str | None = Field(
        default=None,
        max_length=40,
        description="`WxH`; the profile's default size when left out",
    )
    # Not range-checked here: the profile says which counts it allows, and its error lists them.
    # Strict: `"2"` and `true` are not counts.
    count: StrictInt = 1
    options: Options = Field(default_factory=dict, examples=[{"quality": "high"}])
    context: GenerationContextIn = Field(default_factory=GenerationContextIn)
    target: TargetIn = Field(default_factory=TargetIn)
    apply_style: StrictBool = Field(
        default=True,
        description="Apply the project's style (`/v1/projects/{project}/style`); false leaves "
        "it out of this request, and the job says so",
    )

    @field_validator("context", "target", mode="before")
    @classmethod
    def _revalidate_contract_models(cls, value: Any) -> Any:
        # The Inkweld facade builds its requests from the contract models; they are checked
        # here as strictly as a JSON body is.
        if isinstance(value, ContextElement | GenerationContext | Target) and not isinstance(
            value, GenerationContextIn | TargetIn
        ):
            return value.model_dump()
        return value
