"""The admin API's models of governance: provider status and credentials, quotas and the audit.

What an admin sends and reads; `GovernanceService` (`governance.py`) turns them into rows and back.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from atelier_contracts.clock import as_utc
from atelier_contracts.profiles import JSON_NUMBER, AuditRecord, AuditRecordError
from atelier_contracts.receipts import JobReceipt
from atelier_profiles.money import from_milli
from atelier_profiles.tables import AuditRow
from atelier_security.origins import ORIGIN_PATTERN, OriginError, parse_origin

Period = Literal["day", "week", "month"]
MAX_CREDITS = 1_000_000_000_000  # per period; milli-credits of it still fit a BIGINT easily
MAX_ALLOWED_ORIGINS = 32
_ORIGIN_RE = re.compile(ORIGIN_PATTERN)

# The quota policy of a fresh install: no credit limit, a generous submission rate limit.
DEFAULT_PERIOD: Period = "month"
DEFAULT_RATE_LIMIT = 120
DEFAULT_RATE_WINDOW_S = 60.0


class CredentialInput(BaseModel):
    api_key: str = Field(
        min_length=8,
        max_length=4096,
        # Visible ASCII only: real keys are, and a stray newline or space from a copy-paste
        # would otherwise be stored and fail at the provider much later.
        pattern=r"^[\x21-\x7e]+$",
        description="The provider's API key; stored encrypted, never shown again",
        examples=["sk-proj-0123456789abcdef"],
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        max_length=MAX_ALLOWED_ORIGINS,
        description="Origins (`scheme://host[:port]`, no path) this key may be sent to besides "
        "the provider's own endpoint: a proxy, a regional endpoint, a self-hosted server "
        "(`http://10.0.0.5:7860`). Exact origins only: private, loopback and link-local "
        "addresses are reachable only when listed here (or in "
        "`ATELIER_PROFILES_ALLOWED_BASE_URL_ORIGINS`). Replaced with the key; profiles whose "
        "`base_url` is elsewhere are refused",
        examples=[["http://10.0.0.5:7860"]],
        json_schema_extra={"items": {"type": "string", "pattern": ORIGIN_PATTERN}},
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        try:
            parsed = list(dict.fromkeys(parse_origin(origin) for origin in origins))
        except OriginError as exc:
            raise ValueError(f"allowed_origins: {exc}") from exc
        # The document's pattern is the rule too (it is what clients validate against): it
        # refuses the few spellings the parser would have tolerated, e.g. surrounding spaces.
        for origin in origins:
            if not _ORIGIN_RE.match(origin):
                raise ValueError(
                    f"allowed_origins: write {origin!r} as scheme://host[:port], with an ASCII "
                    "host (xn-- for international names) and nothing around it"
                )
        return parsed


class ProviderStatus(BaseModel):
    name: str = Field(examples=["openai"])
    known: bool = Field(description="Atelier has a worker (adapter) for this provider")
    credential_set: bool
    credential_masked: str | None = Field(
        default=None, description="The key's last four characters at most", examples=["••••cdef"]
    )
    credential_updated_at: datetime | None = None
    default_origins: list[str] = Field(
        default_factory=list,
        description="The provider's own endpoint, where its key always may go (none for "
        "self-hosted servers)",
        examples=[["https://api.openai.com"]],
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins the operator bound to the stored key",
        examples=[["http://10.0.0.5:7860"]],
    )
    deployment_origins: list[str] = Field(
        default_factory=list,
        description="Origins `ATELIER_PROFILES_ALLOWED_BASE_URL_ORIGINS` allows for this "
        "provider's keys",
    )
    profiles: int = Field(default=0, description="Profiles using this provider")


class QuotaPolicy(BaseModel):
    """The default every user gets unless an override says otherwise."""

    credits_per_period: Annotated[float, Field(ge=0, le=MAX_CREDITS), JSON_NUMBER] | None = Field(
        default=None,
        description="Credits each user may spend per period; null: no limit",
        examples=[500],
    )
    period: Period = Field(default=DEFAULT_PERIOD, description="Periods start at 00:00 UTC")
    rate_limit_count: Annotated[int, Field(ge=1, le=100_000), JSON_NUMBER] | None = Field(
        default=DEFAULT_RATE_LIMIT,
        description="Submissions per user within `rate_limit_window_s`; null: no rate limit",
    )
    rate_limit_window_s: Annotated[float, Field(gt=0, le=86_400), JSON_NUMBER] = (
        DEFAULT_RATE_WINDOW_S
    )


class QuotaOverrideInput(BaseModel):
    credits_per_period: Annotated[float, Field(ge=0, le=MAX_CREDITS), JSON_NUMBER] | None = Field(
        description="This user's credits per period; null: no limit"
    )
    note: str | None = Field(default=None, max_length=500, description="Why, for other admins")


class QuotaOverride(QuotaOverrideInput):
    user_id: str
    updated_at: datetime


class QuotaOverview(BaseModel):
    policy: QuotaPolicy
    overrides: list[QuotaOverride]


class UserQuota(BaseModel):
    user_id: str
    limit: float | None = Field(description="Credits per period; null: no limit")
    overridden: bool = Field(description="The limit comes from a per-user override")
    used: float = Field(description="Credits reserved or spent in this period")
    remaining: float | None
    period: Period
    period_start: datetime
    resets_at: datetime


# The audit record's error with the provider's own detail: admins see it, users never do.
# (Comments, not docstrings, on these two: a docstring would become the document's description.)
class AuditError(AuditRecordError):
    error_class: str = Field(examples=["content_blocked"])
    stage: str | None = Field(default=None, description="For content blocks: input or output")
    detail: str | None = Field(default=None, description="The provider's detail, for admins")


# The audit record (`atelier_contracts.profiles.AuditRecord`) as the admin API shows it: the
# error with the provider's detail. The fields re-declared here say more in the admin API's
# document than in the message; a re-declared field keeps its place.
class AuditEntry(AuditRecord):
    status: str = Field(examples=["partial"])
    moderated: bool = Field(description="The provider refused the prompt or its result")
    error: AuditError | None
    prompt: str = Field(description="The prompt exactly as sent to the provider")
    user_prompt: str = Field(description="What the user typed")
    cost: float = Field(
        description="Credits charged: each landed image at the price of the profile that made "
        "it (a fallback's may differ from the job's own)"
    )
    receipt: JobReceipt | None = Field(
        default=None,
        description="Each image charged or not and why, as the job showed it (ADR 0024); null "
        "for jobs recorded before receipts",
    )

    @classmethod
    def of(cls, row: AuditRow) -> AuditEntry:
        error = (
            AuditError(
                error_class=row.error_class,
                stage=row.error_stage,
                message=row.error_message,
                detail=row.error_detail,
            )
            if row.error_class
            else None
        )
        # The columns named as the fields are taken as they are; the rest is worked out.
        return cls.model_validate(
            {
                **row.model_dump(),
                "moderated": row.error_class == "content_blocked",
                "error": error,
                "cost": from_milli(row.cost_milli),
                "created_at": as_utc(row.job_created_at),
                "finished_at": as_utc(row.finished_at),
                "fallbacks": row.fallbacks or [],
            }
        )


class AuditPage(BaseModel):
    items: list[AuditEntry]
    total: int
    limit: int
    offset: int


class Tally(BaseModel):
    jobs: int
    images: int = Field(description="Images landed")
    cost: float


class UserTally(Tally):
    user_id: str


class ProfileTally(Tally):
    profile_id: str
    profile_name: str


class AuditSummary(BaseModel):
    total: Tally
    by_status: dict[str, int]
    by_error_class: dict[str, int]
    by_user: list[UserTally] = Field(description="Highest cost first")
    by_profile: list[ProfileTally] = Field(description="Highest cost first")
