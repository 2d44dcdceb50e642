"""The gateway's HTTP contract: request and response bodies of the public API.

These are deliberately separate from the NATS contracts they are built from (`JobView`,
`MediaItem`...): an internal field added there (object keys, provider detail for admins) must not
appear in the public API by accident, so every public field is listed here on purpose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
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
    computed_field,
    field_validator,
    model_validator,
)

from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.jobs import (
    ContextElement,
    ContextPreviewReply,
    ElementImage,
    ExcludedImage,
    GenerationContext,
    JobImage,
    JobProgress,
    JobStatus,
    JobView,
    ReferenceImagePreview,
    SendToggles,
    SentReferenceImage,
    Target,
)
from atelier_contracts.media import MediaAssigned, MediaItem, ProjectAssignmentsReply
from atelier_contracts.profiles import OptionSpec, Profile
from atelier_contracts.subjects import PROJECT_ID_PATTERN

PROMPT_MAX_LENGTH = 32_000


def generation_url(job_id: str) -> str:
    return f"/v1/generations/{job_id}"


def generation_events_url(job_id: str) -> str:
    return f"/v1/generations/{job_id}/events"


def media_content_url(media_id: str) -> str:
    return f"/v1/media/{media_id}/content"


def media_thumbnail_url(media_id: str) -> str:
    return f"/v1/media/{media_id}/thumbnail"


# --- the generation request ------------------------------------------------------------------
#
# The request models below are the contracts' (`GenerationContext`, `Target`...) made strict for
# what comes from outside: no unknown fields at any level, no `"2"` or `true` for a number, and
# free-form JSON (`data`, `options`) bounded in depth, keys, string length and bytes, so a request
# can neither hide typos nor carry what the services behind the gateway cannot serialize or
# should not store (issue 15). They subclass the contracts, so what validated here is handed on
# as it is; consumers keep parsing the (lenient, forward-compatible) contract models.


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


class MediaImage(ElementImage):
    """A picture from the project's media library."""

    model_config = ConfigDict(extra="forbid")

    media_id: str = Field(min_length=1, max_length=200)
    url: _Unset = None
    data_url: _Unset = None


class UrlImage(ElementImage):
    """A picture fetched from a public address (through the SSRF guard)."""

    model_config = ConfigDict(extra="forbid")

    media_id: _Unset = None
    url: str = Field(min_length=1, max_length=2048)
    data_url: _Unset = None


class DataUrlImage(ElementImage):
    """A picture sent in the request: a `data:image/...;base64,` URL."""

    model_config = ConfigDict(extra="forbid")

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


class Links(BaseModel):
    self: str
    events: str


class GenerationAccepted(BaseModel):
    id: str
    status: JobStatus
    project: str
    links: Links


class ContextPreview(BaseModel):
    """`POST /v1/context/preview`: exactly what a generation with the same body would send."""

    prompt: str = Field(description="The prompt as the model would get it")
    negative_prompt: str | None = None
    elements_used: list[str]
    notes: list[str] = Field(description="What was left out or shortened, and why")
    reference_images: list[ReferenceImagePreview]
    excluded_images: list[ExcludedImage] = Field(
        description="Element images that would not be sent, each with the reason"
    )

    @classmethod
    def of(cls, reply: ContextPreviewReply) -> ContextPreview:
        return cls.model_validate(reply.model_dump())


class FeatureProfile(BaseModel):
    id: str
    name: str
    provider: str
    model: str
    sizes: list[str]
    default_size: str
    counts: list[int]
    options: list[OptionSpec]
    max_reference_images: int
    supports_reference_images: bool
    prompt_max_length: int

    @classmethod
    def of(cls, profile: Profile) -> FeatureProfile:
        return cls(
            id=profile.id,
            name=profile.name,
            provider=profile.provider,
            model=profile.model,
            sizes=profile.sizes,
            default_size=profile.default_size,
            counts=profile.counts,
            options=profile.options,
            max_reference_images=profile.max_reference_images,
            supports_reference_images=profile.max_reference_images > 0,
            prompt_max_length=profile.prompt_max_length,
        )


class Features(BaseModel):
    enabled: bool
    reason: str | None = None
    profiles: list[FeatureProfile]


class JobError(BaseModel):
    """What went wrong, for the user; the provider's own detail stays in the admin audit."""

    error_class: ErrorClass = Field(examples=["content_blocked"])
    message: str
    stage: str | None = None
    retry_after_s: float | None = None

    # DESIGN.md §6 names the field `class`; the contracts (and clients written against them)
    # say `error_class`. Both are served until one is retired.
    @computed_field(alias="class")  # type: ignore[prop-decorator]
    @property
    def class_(self) -> ErrorClass:
        return self.error_class

    @classmethod
    def of(cls, error: ErrorInfo) -> JobError:
        return cls(
            error_class=error.error_class,
            message=error.message,
            stage=error.stage,
            retry_after_s=error.retry_after_s,
        )


class JobImageOut(JobImage):
    """A job's image with the gateway URLs of its bytes."""

    content_url: str
    thumbnail_url: str

    @classmethod
    def of(cls, image: JobImage) -> JobImageOut:
        return cls(
            **image.model_dump(),
            content_url=media_content_url(image.media_id),
            thumbnail_url=media_thumbnail_url(image.media_id),
        )


class JobOut(BaseModel):
    id: str
    project: str
    user_id: str
    profile_id: str
    profile_name: str
    provider: str
    model: str
    status: JobStatus
    prompt: str
    assembled_prompt: str | None
    assembly_notes: list[str]
    reference_images: list[SentReferenceImage] = Field(
        description="The reference images sent with the prompt, in order, as sent"
    )
    excluded_images: list[ExcludedImage] = Field(
        description="Element images that were not sent, each with the reason"
    )
    size: str
    count: int
    options: dict[str, Any]
    target: Target
    progress: JobProgress
    images: list[JobImageOut]
    error: JobError | None
    created_at: datetime
    updated_at: datetime
    links: Links

    @classmethod
    def of(cls, job: JobView) -> JobOut:
        return cls.model_validate(
            {
                **job.model_dump(exclude={"images", "error"}),
                "images": [JobImageOut.of(image) for image in job.images],
                "error": JobError.of(job.error) if job.error else None,
                "links": Links(self=generation_url(job.id), events=generation_events_url(job.id)),
            }
        )


class JobList(BaseModel):
    jobs: list[JobOut]


class MediaOut(BaseModel):
    """A landed image and its provenance; storage keys stay inside Atelier."""

    id: str
    project: str
    job_id: str
    index: int
    content_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    profile_id: str
    provider: str
    model: str
    prompt: str
    size: str
    seed: int | None
    revised_prompt: str | None
    created_at: datetime
    content_url: str
    thumbnail_url: str

    @classmethod
    def of(cls, item: MediaItem) -> MediaOut:
        # Only the fields declared here: the storage keys and task id stay inside Atelier.
        shown = item.model_dump(include=set(cls.model_fields) & set(MediaItem.model_fields))
        return cls(
            **shown,
            content_url=media_content_url(item.id),
            thumbnail_url=media_thumbnail_url(item.id),
        )


class MediaPage(BaseModel):
    items: list[MediaOut]
    total: int


def project_assignments_url(project: str) -> str:
    return f"/v1/projects/{project}/assignments"


class AssignBody(BaseModel):
    """`POST /v1/media/{id}/assign`: use this image as the project's cover or an element's."""

    # The validator's rule, said in the schema too, so a client generated from the document
    # (or schemathesis) knows an element_id goes with `element` and only with it.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "properties": {"target": {"const": "cover"}, "element_id": {"type": "null"}},
                },
                {
                    "properties": {
                        "target": {"const": "element"},
                        "element_id": {"type": "string"},
                    },
                    "required": ["element_id"],
                },
            ]
        },
    )

    target: Literal["cover", "element"] = Field(examples=["cover"])
    element_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The worldbuilding element whose image this becomes (target `element`)",
        examples=["mara-vell"],
    )

    @model_validator(mode="after")
    def _element_id_for_elements_only(self) -> AssignBody:
        if self.target == "element" and not self.element_id:
            raise ValueError("target 'element' needs an element_id")
        if self.target == "cover" and self.element_id is not None:
            raise ValueError("target 'cover' takes no element_id")
        return self


class AssignmentLinks(BaseModel):
    assignments: str


class AssignmentAccepted(BaseModel):
    """The choice is stored as a durable `media.assigned` event; media records it moments later
    (newest choice per slot wins), after which `links.assignments` shows it."""

    media_id: str
    project: str
    target: Literal["cover", "element"]
    element_id: str | None
    assigned_at: datetime
    event_id: str
    links: AssignmentLinks

    @classmethod
    def of(cls, event: MediaAssigned) -> AssignmentAccepted:
        return cls(
            media_id=event.media_id,
            project=event.project,
            target=event.target,
            element_id=event.element_id,
            assigned_at=event.occurred_at,
            event_id=str(event.event_id),
            links=AssignmentLinks(assignments=project_assignments_url(event.project)),
        )


class ProjectAssignments(BaseModel):
    """A project's cover and the images chosen for its elements (by element id)."""

    project: str
    cover: MediaOut | None
    elements: dict[str, MediaOut]

    @classmethod
    def of(cls, project: str, reply: ProjectAssignmentsReply) -> ProjectAssignments:
        return cls(
            project=project,
            cover=MediaOut.of(reply.cover) if reply.cover else None,
            elements={element: MediaOut.of(item) for element, item in reply.elements.items()},
        )
