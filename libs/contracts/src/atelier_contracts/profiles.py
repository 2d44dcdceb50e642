"""Model profiles and the global generation switch, as other services see them."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, StrictBool, field_validator

from atelier_contracts.envelope import Event
from atelier_contracts.errors import AtelierError
from atelier_contracts.receipts import JobReceipt
from atelier_contracts.subjects import PROVIDER_PATTERN

ALLOWED_COUNTS = (1, 2, 4)
SIZE_PATTERN = r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$"
# Bounds on what one profile may hold (docs/security.md, "Profile limits"): every list is short
# in real use, and a bound keeps each check cheap and the stored row small.
MAX_SIZES = 64
MAX_OPTIONS = 64
MAX_OPTION_VALUES = 100
MAX_SORT_ORDER = 1_000_000_000  # well inside the database's 32-bit integer
MAX_CREDIT_COST = 1_000_000_000
# Profiles a job may fall back to, in chain order (`jobs.JobRequested.fallbacks`): each is one
# more provider a failing task waits on, so a long chain would keep a job open for long.
MAX_FALLBACKS = 4
# `provider_config` is free-form JSON: bounded so it can always be serialized (pydantic stops at
# a few hundred levels), stored and checked cheaply. 64 KB holds a large ComfyUI workflow.
MAX_CONFIG_DEPTH = 10
MAX_CONFIG_KEYS = 200  # in any one object
MAX_CONFIG_BYTES = 64 * 1024


def _json_number(value: Any) -> Any:
    """Only what JSON Schema calls a number: `true` and `"2"` are refused (pydantic's lax mode
    would read them as 1 and 2), while `2.0` stays an integer, as JSON Schema's `integer` allows
    (StrictInt would refuse it though the OpenAPI document admits it)."""
    if isinstance(value, bool | str | bytes):
        raise ValueError("must be a JSON number, not a string or true/false")
    return value


# Bounds go before it, `Annotated[int, Field(ge=0), JSON_NUMBER]`: placed after a validator
# pydantic can still check them but no longer writes them into the JSON Schema.
JSON_NUMBER = BeforeValidator(_json_number)
JsonInt = Annotated[int, JSON_NUMBER]
JsonNumber = Annotated[float, JSON_NUMBER]


def config_shape_problem(config: dict[str, Any]) -> str | None:
    """Which bound `config` breaks (depth, keys in one object, size as JSON), or None; phrased
    to follow "provider_config ".

    Walks without recursion, so a value nested far deeper than allowed is refused, not a crash.
    """
    stack: list[tuple[Any, int]] = [(config, 1)]
    values = 0
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_CONFIG_DEPTH:
                return f"is nested more than {MAX_CONFIG_DEPTH} levels deep"
            if isinstance(value, dict) and len(value) > MAX_CONFIG_KEYS:
                return f"has an object with {len(value)} keys, more than {MAX_CONFIG_KEYS}"
            children = list(value.values() if isinstance(value, dict) else value)
            values += len(children)
            if values > MAX_CONFIG_BYTES // 2:  # each value takes at least two bytes ("0,")
                return f"is larger than {MAX_CONFIG_BYTES // 1024} KB as JSON"
            stack.extend((child, depth + 1) for child in children)
    size = len(json.dumps(config, default=str, ensure_ascii=False).encode())
    if size > MAX_CONFIG_BYTES:
        return f"is {size:,} bytes as JSON, more than {MAX_CONFIG_BYTES // 1024} KB"
    return None


def _dimensions(size: str) -> tuple[int, int]:
    width, _, height = size.lower().partition("x")
    return int(width), int(height)


def nearest_size(asked: str, sizes: Sequence[str]) -> str:
    """The size of `sizes` (`WxH`, as a profile lists them) nearest to `asked`: the closest in
    pixel area first, then in aspect ratio; the first listed wins a tie.

    Both are compared on a log scale, so twice and half the pixels are equally far, as are 2:1
    and 1:2 from 1:1 (the workers map sizes to a provider's ratios the same way). A fallback
    profile that lacks the asked size makes this one instead (`jobs.FallbackPlan`).
    """
    if not sizes:
        raise ValueError("no sizes to choose from")
    width, height = _dimensions(asked)

    def distance(size: str) -> tuple[float, float]:
        w, h = _dimensions(size)
        area = abs(math.log((w * h) / (width * height)))
        ratio = abs(math.log((w / h) / (width / height)))
        # Rounded, so mirror images (3:2 and 2:3 from 1:1) tie exactly despite float error.
        return round(area, 9), round(ratio, 9)

    return min(sizes, key=distance)


class OptionSpec(BaseModel):
    """One option a profile's model accepts (quality, style, negative_prompt, seed...)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", examples=["quality"])
    kind: Literal["enum", "string", "integer", "number", "boolean"] = Field(
        default="enum", description="Value type; `enum` takes one of `values`"
    )
    values: list[str] | None = Field(
        default=None, max_length=MAX_OPTION_VALUES, examples=[["low", "medium", "high"]]
    )
    default: Any = Field(default=None, description="Used when the request leaves it out")
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = Field(default=None, description="For `string` options")
    description: str | None = None


class ProfileFields(BaseModel):
    """What an admin sets on a profile."""

    name: str = Field(min_length=1, max_length=120, examples=["Sketch (offline)"])
    provider: str = Field(pattern=PROVIDER_PATTERN, examples=["offline"])
    model: str = Field(min_length=1, max_length=200, examples=["offline-sketch"])
    enabled: StrictBool = True
    sizes: list[str] = Field(
        min_length=1,
        max_length=MAX_SIZES,
        description="Allowed `WxH` sizes",
        examples=[["1024x1024", "512x512"]],
        json_schema_extra={
            "items": {"type": "string", "pattern": SIZE_PATTERN},
            "uniqueItems": True,
        },
    )
    default_size: str = Field(pattern=SIZE_PATTERN, examples=["1024x1024"])
    counts: list[JsonInt] = Field(
        default=[1],
        max_length=8,
        description="Allowed image counts, a subset of 1, 2, 4",
        json_schema_extra={
            "items": {"type": "integer", "enum": list(ALLOWED_COUNTS)},
            "minItems": 1,
            "uniqueItems": True,
        },
    )
    options: list[OptionSpec] = Field(default_factory=list, max_length=MAX_OPTIONS)
    max_reference_images: Annotated[int, Field(ge=0, le=16), JSON_NUMBER] = 0
    prompt_max_length: Annotated[int, Field(ge=1, le=32000), JSON_NUMBER] = 4000
    timeout_s: Annotated[float, Field(gt=0, le=3600), JSON_NUMBER] = 120.0
    sort_order: Annotated[int, Field(ge=-MAX_SORT_ORDER, le=MAX_SORT_ORDER), JSON_NUMBER] = 0
    credit_cost: Annotated[
        float, Field(ge=0, json_schema_extra={"maximum": MAX_CREDIT_COST}), JSON_NUMBER
    ] = Field(default=1.0, description="Credits per image")
    price_per_image_usd: Annotated[float | None, Field(ge=0, le=1000), JSON_NUMBER] = Field(
        default=None,
        description="What the provider charges per image, in US dollars, when the admin knows "
        "it; shown by the estimate (ADR 0024). Null: unknown",
        examples=[0.04],
    )
    base_url: str | None = Field(
        default=None,
        max_length=2000,
        description="Provider API base URL (proxies, self-hosted, regional); default is the "
        "provider's public endpoint. Its origin must be the provider's own or one an operator "
        'allowed for the provider\'s key (docs/security.md, "Provider keys and base URLs")',
        examples=["https://api.openai.com/v1"],
    )
    provider_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Provider-specific settings (never secrets: keys named like `api_key`, "
        "`token` or `password` are refused); at most 10 levels deep, 200 keys an object and "
        "64 KB as JSON",
    )

    @field_validator("provider_config")
    @classmethod
    def _bounded_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        problem = config_shape_problem(config)
        if problem is not None:
            raise ValueError(f"provider_config {problem}")
        return config

    fallback_profile_id: str | None = Field(
        default=None,
        max_length=36,
        description="The profile to try when this one's provider is unavailable after its "
        f"retries; its own fallback continues the chain (at most {MAX_FALLBACKS} steps, "
        "disabled profiles skipped). Never followed after a content block or an invalid "
        "request. Checked when stored (exists, no cycles); planned when a job is submitted.",
    )


class Profile(ProfileFields):
    id: str = Field(examples=["4f1c2a9e-3b7d-4c55-9a43-1d2e3f4a5b6c"])
    created_at: datetime
    updated_at: datetime


class ProfileSnapshot(BaseModel):
    """The part of a profile a job needs, frozen at submission so later edits don't change it."""

    id: str
    name: str
    provider: str
    model: str
    timeout_s: float
    prompt_max_length: int
    max_reference_images: int
    credit_cost: float
    base_url: str | None = None
    provider_config: dict[str, Any] = Field(default_factory=dict)


class GenerationSettings(BaseModel):
    enabled: StrictBool = Field(description="Global switch: is image generation on")
    reason: str | None = Field(
        default=None,
        description="Shown to users while generation is off",
        examples=["Image generation is paused for maintenance."],
    )


class ProfilesChanged(Event):
    type: Literal["profiles.changed"] = "profiles.changed"
    profile_id: str | None = Field(default=None, description="None when the settings changed")
    action: Literal["created", "updated", "deleted", "settings", "credentials"]
    provider: str | None = Field(
        default=None,
        description="For `credentials`: whose key was set, rotated or deleted (never the key)",
    )


# Request/reply queries answered by the profiles service.
class ProfileQuery(BaseModel):
    profile_id: str


class ProfileReply(BaseModel):
    profile: Profile | None


class ProfilesListQuery(BaseModel):
    include_disabled: bool = False


class ProfilesListReply(BaseModel):
    settings: GenerationSettings
    profiles: list[Profile]


# Provider credentials: a worker asks for its provider's key (`profiles.query.credentials`).
class CredentialQuery(BaseModel):
    provider: str = Field(pattern=PROVIDER_PATTERN, examples=["openai"])


class CredentialReply(BaseModel):
    """Never the plaintext: the key travels sealed with the shared transport key."""

    provider: str
    configured: bool = Field(description="Whether an admin stored a key for this provider")
    sealed_key: str | None = Field(
        default=None,
        description="The key, AES-GCM-sealed under `ATELIER_CREDENTIALS_TRANSPORT_KEY` "
        "(`v1.` + base64url(nonce + ciphertext); key HKDF-SHA256(transport key, info "
        "`atelier credentials transport v1`), associated data `provider:<name>`)",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (`scheme://host[:port]`) besides the provider's own endpoints that "
        "an operator allowed this provider's key to be sent to: those bound to the stored "
        "credential and those of `ATELIER_PROFILES_ALLOWED_BASE_URL_ORIGINS`",
        examples=[["http://10.0.0.5:7860"]],
    )


# Quotas: the gateway reserves credits before it accepts a job (`profiles.query.quota_*`).
class QuotaReserveRequest(BaseModel):
    job_id: str = Field(min_length=1, max_length=100)
    user_id: str = Field(min_length=1, max_length=200)
    project: str = Field(min_length=1, max_length=100)
    profile_id: str = Field(min_length=1, max_length=200)
    count: int = Field(ge=1, le=100)
    payload_bytes: int = Field(
        default=0,
        ge=0,
        description="Size of the job's request as queued: counted against the user's budget "
        "of bytes in flight until the job ends (one user cannot fill the shared queues)",
    )


class QuotaReserveReply(BaseModel):
    outcome: Literal["reserved", "quota_exceeded", "rate_limited", "too_much_in_flight"]
    message: str = Field(description="Phrased for the user")
    cost: float = Field(default=0.0, description="Credits this job holds (or would have held)")
    limit: float | None = Field(default=None, description="Credits per period; None: no limit")
    remaining: float | None = Field(
        default=None, description="Credits left in the period after this answer"
    )
    resets_at: datetime | None = Field(default=None, description="When the period starts anew")
    retry_after_s: float | None = Field(
        default=None, description="For `rate_limited`: when the next submission is accepted"
    )
    repeated: bool = Field(
        default=False,
        description=(
            "The job already held a reservation (an Idempotency-Key retry): nothing more was "
            "held, and the gateway asks dispatch for the job it made"
        ),
    )


class Money(BaseModel):
    amount: float = Field(ge=0, examples=[0.08])
    currency: str = Field(default="USD", pattern="^[A-Z]{3}$")


class QuotaEstimateRequest(BaseModel):
    """`profiles.query.quota_estimate`: what a reservation of this request would hold, read
    with the same terms (policy, override, price) and nothing held (ADR 0024)."""

    user_id: str = Field(min_length=1, max_length=200)
    profile_id: str = Field(min_length=1, max_length=200)
    count: int = Field(ge=1, le=100)


class QuotaEstimateReply(BaseModel):
    credits: float = Field(description="What a submission now would reserve")
    credits_per_image: float
    money: Money | None = Field(
        default=None,
        description="The provider's price for these images, when an admin gave the profile one "
        "(`price_per_image_usd`)",
    )
    limit: float | None = Field(default=None, description="Credits per period; None: no limit")
    remaining: float | None = Field(default=None, description="Credits left in the period now")
    fits: bool = Field(description="False when a submission now would be refused for quota")
    resets_at: datetime | None = None
    known_profile: bool = Field(default=True, description="False: no such profile")


# Reservations travel in batches: whatever a gateway has waiting while its previous batch is
# answered goes in one request (ADR 0016), so a burst costs profiles a few messages, not one each.
MAX_RESERVATIONS_PER_BATCH = 64


class QuotaReserveBatch(BaseModel):
    """`profiles.query.quota_reserve`: reservations to decide, each on its own."""

    requests: list[QuotaReserveRequest] = Field(min_length=1, max_length=MAX_RESERVATIONS_PER_BATCH)


class QuotaReserveBatchReply(BaseModel):
    """One answer per request, in the same order."""

    replies: list[QuotaReserveReply]


class QuotaReleaseRequest(BaseModel):
    """The job was never queued (its publish failed): give its credits back."""

    job_id: str = Field(min_length=1, max_length=100)


class QuotaReleaseReply(BaseModel):
    released: bool


# Admin commands and audit reads over NATS (`profiles.command.*`, `profiles.query.audit*`), for
# the gateway's Inkweld-compatible admin routes (docs/adr/0008-inkweld-facade.md). A refusal is
# answered in `error`, as the admin API would have said it: no reply means "profiles is down".
class RemoteError(BaseModel):
    code: str = Field(examples=["conflict"])
    status: int = Field(description="The HTTP status the admin API answers it with")
    message: str

    @classmethod
    def of(cls, error: AtelierError) -> RemoteError:
        return cls(code=error.code, status=error.status_code, message=error.message)

    def to_error(self) -> AtelierError:
        return AtelierError(self.message, code=self.code, status_code=self.status)


class ProfileCreateCommand(BaseModel):
    fields: ProfileFields
    requested_by: str = Field(description="User id of the admin, for the log")


class ProfileReplaceCommand(BaseModel):
    profile_id: str = Field(min_length=1, max_length=100)
    fields: ProfileFields
    requested_by: str


class ProfileDeleteCommand(BaseModel):
    profile_id: str = Field(min_length=1, max_length=100)
    requested_by: str


class ProfileCommandReply(BaseModel):
    profile: Profile | None = Field(default=None, description="None after a delete or a refusal")
    error: RemoteError | None = None


class AuditFilterQuery(BaseModel):
    """The admin API's audit filters (`GET /admin/v1/audits`); they combine (AND)."""

    user_id: str | None = Field(default=None, max_length=200)
    profile_id: str | None = Field(default=None, max_length=200)
    status: Literal["completed", "partial", "failed", "cancelled"] | None = None
    error_class: str | None = Field(default=None, max_length=40)
    since: datetime | None = Field(default=None, description="Finished at or after")
    until: datetime | None = Field(default=None, description="Finished before")
    text: str | None = Field(default=None, max_length=200, description="Text in the prompt")


class AuditListQuery(AuditFilterQuery):
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0)


class AuditRecordError(BaseModel):
    error_class: str
    stage: str | None = None
    message: str | None = None


class AuditFallback(BaseModel):
    """An image of the job that a fallback profile made (issue 16): which one, and why."""

    index: int = Field(description="The image's place in the job, from 0")
    media_id: str
    profile_id: str | None = None
    profile_name: str | None = Field(default=None, examples=["Sketch (offline)"])
    credit_cost: float | None = Field(
        default=None, description="What the image was charged: the producing profile's price"
    )
    reason: str | None = Field(
        default=None,
        description="Why the job's own profile did not make it",
        examples=["'A' (openai) was unavailable after 3 attempts: provider_unavailable"],
    )


class AuditRecord(BaseModel):
    """One finished job as the audit shows it (the provider's raw detail stays in profiles)."""

    job_id: str
    user_id: str
    project: str
    profile_id: str
    profile_name: str
    provider: str
    model: str
    status: str
    moderated: bool
    error: AuditRecordError | None = None
    prompt: str = Field(description="As sent to the provider")
    user_prompt: str = Field(description="As typed")
    requested: int
    landed: int
    failed: int
    cost: float
    created_at: datetime
    finished_at: datetime
    fallbacks: list[AuditFallback] = Field(
        default_factory=list,
        description="The images fallback profiles made, each with its profile and the reason; "
        "empty when the job's own profile made them all",
    )
    receipt: JobReceipt | None = Field(
        default=None,
        description="Each image charged or not and why, and the totals, as the job showed it "
        "(ADR 0024); null for jobs recorded before receipts",
    )


class AuditPageReply(BaseModel):
    items: list[AuditRecord] = Field(default_factory=list)
    total: int = 0
    limit: int = 50
    offset: int = 0
    error: RemoteError | None = None


class AuditTally(BaseModel):
    jobs: int = 0
    images: int = 0
    cost: float = 0.0


class AuditUserTally(AuditTally):
    user_id: str


class AuditProfileTally(AuditTally):
    profile_id: str
    profile_name: str


class AuditSummaryReply(BaseModel):
    total: AuditTally = Field(default_factory=AuditTally)
    by_status: dict[str, int] = Field(default_factory=dict)
    by_error_class: dict[str, int] = Field(default_factory=dict)
    by_user: list[AuditUserTally] = Field(default_factory=list)
    by_profile: list[AuditProfileTally] = Field(default_factory=list)
    error: RemoteError | None = None
