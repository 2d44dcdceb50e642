"""The admin API under `/admin/v1`: the global switch, model profiles, provider credentials,
quotas, provider budgets and the audit (the webhooks: `webhooks_api.py`).

One module-level router; each route names the service it calls in its signature
(`dependencies.py`). Every route needs `Authorization: Bearer <admin token>`. Errors have one
shape, `{"error": {"code", "message"}}` (mapped by `atelier_web`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response, status
from pydantic import BaseModel, BeforeValidator, Field

from atelier_contracts.errors import ErrorClass
from atelier_contracts.profiles import GenerationSettings, Profile, ProfileFields
from atelier_contracts.subjects import PROVIDER_PATTERN
from atelier_profiles.budgets import BudgetInput, ProviderBudget
from atelier_profiles.dependencies import Budgets, Governance, Profiles, require_admin
from atelier_profiles.governance_models import (
    AuditPage,
    AuditSummary,
    CredentialInput,
    ProviderStatus,
    QuotaOverride,
    QuotaOverrideInput,
    QuotaOverview,
    QuotaPolicy,
    UserQuota,
)
from atelier_profiles.governance_repository import AuditFilter
from atelier_profiles.service import ProfilePatch
from atelier_web.dependencies import on_the_loop

PREFIX = "/admin/v1"


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable slug", examples=["invalid_input"])
    message: str = Field(
        description="What went wrong, phrased for the admin",
        examples=["default_size: '256x256' is not one of sizes (1024x1024, 512x512)"],
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


_ERROR_MEANINGS = {
    400: "The body is not valid JSON (or not UTF-8)",
    401: "The admin token is missing or wrong",
    404: "No profile has this id",
    409: "Another profile already has this name (or, on delete, other profiles fall back to "
    "this one)",
    422: "The input breaks a rule; the message says which and how to fix it",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give (all in the one error shape)."""
    return {code: {"model": ErrorResponse, "description": _ERROR_MEANINGS[code]} for code in codes}


ProfileId = Annotated[
    str,
    Path(
        max_length=100,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The profile's id",
        examples=["4f1c2a9e-3b7d-4c55-9a43-1d2e3f4a5b6c"],
    ),
]


ProviderName = Annotated[
    str, Path(pattern=PROVIDER_PATTERN, description="Provider name", examples=["openai"])
]
UserIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The user id (the `sub` claim of their gateway token)",
        examples=["demo-user"],
    ),
]


def described_errors(**meanings: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error answers, each with its own meaning (`e404="No such provider"`)."""
    return {
        int(code.removeprefix("e")): {"model": ErrorResponse, "description": meaning}
        for code, meaning in meanings.items()
    }


# No NUL in a filter: PostgreSQL text cannot hold one, and no user id, profile id or prompt has.
NO_NUL = r"^[^\x00]*$"


def _iso_8601_only(value: object) -> object:
    """Refuse what pydantic would otherwise read as a Unix time (`until=0.5`): the document says
    ISO 8601 (`format: date-time`), and a number passed by mistake should not mean 1970."""
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("must be an ISO 8601 date and time, e.g. 2026-01-31T12:00:00Z")
    return value


_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_8601_only)]


class AuditQuery:
    """The audit filters, shared by the list and the summary."""

    def __init__(
        self,
        user: Annotated[
            str | None, Query(max_length=200, pattern=NO_NUL, description="Only this user's jobs")
        ] = None,
        profile: Annotated[
            str | None,
            Query(max_length=200, pattern=NO_NUL, description="Only jobs of this profile id"),
        ] = None,
        status: Annotated[
            Literal["completed", "partial", "failed", "cancelled"] | None,
            Query(description="Only jobs that ended so"),
        ] = None,
        error_class: Annotated[
            ErrorClass | None,
            Query(description="Only jobs that failed (wholly or partly) for this reason"),
        ] = None,
        since: Annotated[
            IsoDateTime | None,
            Query(description="Finished at or after (ISO 8601; UTC if no zone)"),
        ] = None,
        until: Annotated[
            IsoDateTime | None,
            Query(
                description="Finished before (ISO 8601; UTC if no zone); a window that ends "
                "before it starts selects nothing"
            ),
        ] = None,
        q: Annotated[
            str | None,
            Query(
                max_length=200,
                pattern=NO_NUL,
                description="Text in the prompt (as sent or as typed), case-insensitive",
            ),
        ] = None,
    ) -> None:
        self.filter = AuditFilter(
            user_id=user,
            profile_id=profile,
            status=status,
            error_class=error_class.value if error_class else None,
            since=since,
            until=until,
            text=q or None,
        )


AuditFilters = Annotated[AuditQuery, Depends(on_the_loop(AuditQuery))]

router = APIRouter(prefix=PREFIX, dependencies=[Depends(require_admin)], responses=_errors(401))


# --- the switch and the profiles ---------------------------------------------------------------


@router.get(
    "/settings",
    tags=["settings"],
    summary="Read the global generation switch",
)
async def get_settings(service: Profiles) -> GenerationSettings:
    return await service.get_settings()


@router.put(
    "/settings",
    tags=["settings"],
    summary="Turn image generation on or off for everyone",
    description="While `enabled` is false, users see `reason` and cannot start generations.",
    responses=_errors(400, 422),
)
async def put_settings(service: Profiles, settings: GenerationSettings) -> GenerationSettings:
    return await service.set_settings(settings)


@router.get(
    "/profiles",
    tags=["profiles"],
    summary="List model profiles",
    description="Ordered by `sort_order`, then name.",
    responses=_errors(422),
)
async def list_profiles(
    service: Profiles,
    include_disabled: Annotated[
        bool, Query(description="Also list profiles that are switched off")
    ] = True,
) -> list[Profile]:
    return await service.list_profiles(include_disabled=include_disabled)


@router.post(
    "/profiles",
    tags=["profiles"],
    summary="Create a model profile",
    status_code=status.HTTP_201_CREATED,
    responses=_errors(400, 409, 422),
)
async def create_profile(service: Profiles, fields: ProfileFields, response: Response) -> Profile:
    profile = await service.create_profile(fields)
    response.headers["Location"] = f"{PREFIX}/profiles/{profile.id}"
    return profile


@router.get(
    "/profiles/{profile_id}",
    tags=["profiles"],
    summary="Read one model profile",
    responses=_errors(404, 422),
)
async def get_profile(service: Profiles, profile_id: ProfileId) -> Profile:
    return await service.get_profile(profile_id)


@router.put(
    "/profiles/{profile_id}",
    tags=["profiles"],
    summary="Replace a model profile",
    description="Every field is set from the body; fields left out take their defaults.",
    responses=_errors(400, 404, 409, 422),
)
async def replace_profile(
    service: Profiles, profile_id: ProfileId, fields: ProfileFields
) -> Profile:
    return await service.replace_profile(profile_id, fields)


@router.patch(
    "/profiles/{profile_id}",
    tags=["profiles"],
    summary="Change some fields of a model profile",
    description="Only the fields in the body change; the result must still be a valid "
    "profile (e.g. `default_size` one of `sizes`).",
    responses=_errors(400, 404, 409, 422),
)
async def patch_profile(service: Profiles, profile_id: ProfileId, patch: ProfilePatch) -> Profile:
    return await service.patch_profile(profile_id, patch)


@router.delete(
    "/profiles/{profile_id}",
    tags=["profiles"],
    summary="Delete a model profile",
    description="Jobs already submitted keep the snapshot they were given.",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_errors(404, 409, 422),
)
async def delete_profile(service: Profiles, profile_id: ProfileId) -> None:
    await service.delete_profile(profile_id)


# --- provider credentials, quotas and the audit ------------------------------------------------


@router.get(
    "/providers",
    tags=["providers"],
    summary="List providers and whether a credential is stored",
    description="Known providers, and any named by a profile or a stored credential. Keys "
    "are never returned: at most their last four characters.",
)
async def list_providers(governance: Governance) -> list[ProviderStatus]:
    return await governance.list_providers()


@router.get(
    "/providers/{name}",
    tags=["providers"],
    summary="Read one provider's credential status",
    responses=described_errors(e404="No such provider", e422="The name is malformed"),
)
async def get_provider(governance: Governance, name: ProviderName) -> ProviderStatus:
    return await governance.get_provider(name)


@router.put(
    "/providers/{name}/credentials",
    tags=["providers"],
    summary="Set or rotate a provider's API key",
    description="Stored encrypted (AES-GCM); workers pick the new key up at once "
    "(`profiles.changed`). The answer shows the key masked.",
    responses=_errors(400)
    | described_errors(e404="Atelier has no worker for this provider", e422="Bad input"),
)
async def put_credential(
    governance: Governance, name: ProviderName, credential: CredentialInput
) -> ProviderStatus:
    return await governance.set_credential(name, credential)


@router.delete(
    "/providers/{name}/credentials",
    tags=["providers"],
    summary="Delete a provider's stored API key",
    description="Workers fall back to their own `ATELIER_WORKERS_API_KEY`, if any.",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=described_errors(e404="No key is stored for this provider", e422="Bad name"),
)
async def delete_credential(governance: Governance, name: ProviderName) -> None:
    await governance.delete_credential(name)


@router.get("/quotas", tags=["quotas"], summary="The default quota and every override")
async def get_quotas(governance: Governance) -> QuotaOverview:
    return await governance.overview()


@router.put(
    "/quotas",
    tags=["quotas"],
    summary="Set the default quota and the submission rate limit",
    responses=_errors(400, 422),
)
async def put_quotas(governance: Governance, policy: QuotaPolicy) -> QuotaPolicy:
    return await governance.set_policy(policy)


@router.get(
    "/quotas/users/{user_id}",
    tags=["quotas"],
    summary="A user's limit and what they used this period",
    responses=_errors(422),
)
async def get_user_quota(governance: Governance, user_id: UserIdPath) -> UserQuota:
    return await governance.user_quota(user_id)


@router.put(
    "/quotas/users/{user_id}",
    tags=["quotas"],
    summary="Give one user their own credit limit",
    responses=_errors(400, 422),
)
async def put_user_quota(
    governance: Governance, user_id: UserIdPath, override: QuotaOverrideInput
) -> QuotaOverride:
    return await governance.set_override(user_id, override)


@router.delete(
    "/quotas/users/{user_id}",
    tags=["quotas"],
    summary="Remove a user's override (the default applies again)",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=described_errors(e404="The user has no override", e422="Bad user id"),
)
async def delete_user_quota(governance: Governance, user_id: UserIdPath) -> None:
    await governance.delete_override(user_id)


@router.get(
    "/audits",
    tags=["audit"],
    summary="Finished jobs: who, what was sent, what it cost, how it ended",
    description="Newest first. Filters combine (AND).",
    responses=_errors(422),
)
async def list_audits(
    governance: Governance,
    filters: AuditFilters,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> AuditPage:
    return await governance.audits(filters.filter, limit=limit, offset=offset)


@router.get(
    "/audits/summary",
    tags=["audit"],
    summary="Counts per status and failure class, cost per user and profile",
    description="Over the jobs the filters select.",
    responses=_errors(422),
)
async def audit_summary(governance: Governance, filters: AuditFilters) -> AuditSummary:
    return await governance.audit_summary(filters.filter)


# --- provider budgets (`budgets.py`) -----------------------------------------------------------


@router.get(
    "/provider-budgets",
    tags=["providers"],
    summary="Every provider's budget of calls at once",
    description="Across every worker replica; `null`: no limit (tasks go to the provider's "
    "queue at once). With a budget, dispatch holds the rest and hands them over one user "
    "at a time.",
    responses=described_errors(e503="The budgets cannot be read (NATS)"),
)
async def list_budgets(budgets: Budgets) -> list[ProviderBudget]:
    return await budgets.list()


@router.get(
    "/providers/{name}/budget",
    tags=["providers"],
    summary="Read one provider's budget of calls at once",
    responses=described_errors(e404="No such provider", e422="The name is malformed", e503="NATS"),
)
async def get_budget(budgets: Budgets, name: ProviderName) -> ProviderBudget:
    return await budgets.get(name)


@router.put(
    "/providers/{name}/budget",
    tags=["providers"],
    summary="Set (or with null remove) a provider's budget of calls at once",
    description="Takes effect within a second: a raised or removed budget lets waiting "
    "tasks go at once; a lowered one lets calls already running finish.",
    responses=described_errors(
        e400="The body is not valid JSON (or not UTF-8)",
        e404="No such provider",
        e422="Not 1 to 10,000 or null",
        e503="Not stored (NATS)",
    ),
)
async def put_budget(budgets: Budgets, name: ProviderName, budget: BudgetInput) -> ProviderBudget:
    return await budgets.set(name, budget)


@router.delete(
    "/providers/{name}/budget",
    tags=["providers"],
    summary="Remove a provider's budget (no limit)",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=described_errors(e404="No such provider", e503="Not stored (NATS)"),
)
async def delete_budget(budgets: Budgets, name: ProviderName) -> None:
    await budgets.set(name, BudgetInput(max_concurrent=None))
