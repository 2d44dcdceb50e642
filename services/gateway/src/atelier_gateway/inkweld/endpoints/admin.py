"""Admin: image profiles and the generation audit, the profiles service's own methods over NATS
(`profiles.command.*`, `profiles.query.audits`, `profiles.query.audit_summary`)."""

# No `from __future__ import annotations`: FastAPI resolves the route annotations at run time.
import re
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from atelier_contracts.errors import NotFound
from atelier_contracts.jobs import FINAL_STATUSES
from atelier_contracts.profiles import AuditFilterQuery, AuditListQuery
from atelier_gateway.inkweld.auth import AdminCaller
from atelier_gateway.inkweld.errors import InkweldRoute
from atelier_gateway.inkweld.facade import FacadeDep
from atelier_gateway.inkweld.mapping.audits import (
    audit_page,
    audit_query,
    audit_stats,
    inkweld_audit,
)
from atelier_gateway.inkweld.mapping.profiles import (
    admin_profile,
    profile_fields_for_create,
    profile_fields_for_update,
)
from atelier_gateway.inkweld.mapping.providers import (
    inkweld_provider,
    provider_entries,
    visible_profiles,
)
from atelier_gateway.inkweld.models import (
    AdminImageModelProfile,
    CreateImageModelProfileRequest,
    ImageAuditStats,
    ImageGenerationAudit,
    MessageBody,
    PaginatedImageAudits,
    ProviderEntry,
    UpdateImageModelProfileRequest,
)

_JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
# Audit-by-id reads the audits of the job's user and profile; this many pages at most.
_AUDIT_PAGES = 10
_AUDIT_PAGE_SIZE = 500

ProfileId = Annotated[str, Path(min_length=1, max_length=200)]

router = APIRouter(route_class=InkweldRoute)

# --- profiles ----------------------------------------------------------------------------------


@router.get("/admin/image-profiles", operation_id="adminListImageProfiles")
async def admin_list_profiles(caller: AdminCaller, ink: FacadeDep) -> list[AdminImageModelProfile]:
    catalog = await ink.service.backends.profiles(include_disabled=True)  # fresh, not cached
    shown = visible_profiles(catalog.profiles, ink.inkweld.provider_aliases)
    return [admin_profile(p, name) for p, name in shown]


@router.post("/admin/image-profiles", operation_id="adminCreateImageProfile", status_code=201)
async def admin_create_profile(
    caller: AdminCaller, ink: FacadeDep, body: CreateImageModelProfileRequest
) -> AdminImageModelProfile:
    fields = profile_fields_for_create(body)
    profile = await ink.admin.create_profile(fields, caller.user.id)
    ink.service.forget_profiles()
    return admin_profile(profile, body.provider)


@router.get("/admin/image-profiles/providers", operation_id="adminListImageProviders")
async def admin_list_providers(caller: AdminCaller) -> list[ProviderEntry]:
    return provider_entries()


@router.get("/admin/image-profiles/{profileId}", operation_id="adminGetImageProfile")
async def admin_get_profile(
    caller: AdminCaller, ink: FacadeDep, profileId: ProfileId
) -> AdminImageModelProfile:
    return admin_profile(*await ink.shown_profile(profileId))


@router.patch("/admin/image-profiles/{profileId}", operation_id="adminUpdateImageProfile")
async def admin_update_profile(
    caller: AdminCaller, ink: FacadeDep, profileId: ProfileId, body: UpdateImageModelProfileRequest
) -> AdminImageModelProfile:
    current, shown_as = await ink.shown_profile(profileId)
    fields = profile_fields_for_update(current, body, shown_as)
    profile = await ink.admin.replace_profile(current.id, fields, caller.user.id)
    ink.service.forget_profiles()
    provider = inkweld_provider(profile.provider, ink.inkweld.provider_aliases) or shown_as
    return admin_profile(profile, provider)


@router.delete("/admin/image-profiles/{profileId}", operation_id="adminDeleteImageProfile")
async def admin_delete_profile(
    caller: AdminCaller, ink: FacadeDep, profileId: ProfileId
) -> MessageBody:
    current, _ = await ink.shown_profile(profileId)
    await ink.admin.delete_profile(current.id, caller.user.id)
    ink.service.forget_profiles()
    return MessageBody(message=f"Profile {current.name!r} deleted.")


# --- audits ------------------------------------------------------------------------------------


@router.get("/admin/image-audits", operation_id="adminListImageAudits")
async def admin_list_audits(
    caller: AdminCaller,
    ink: FacadeDep,
    userId: str | None = None,
    profileId: str | None = None,
    status: Literal["success", "moderated"] | None = None,
    startDate: str | None = None,
    endDate: str | None = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> PaginatedImageAudits:
    filters = audit_query(
        user_id=userId,
        profile_id=profileId,
        status=status,
        start_date=startDate,
        end_date=endDate,
        search=search,
        page=page,
        limit=limit,
    )
    reply = await ink.admin.audits(filters)
    return audit_page(reply, page=page, limit=limit)


@router.get("/admin/image-audits/stats/summary", operation_id="adminGetImageAuditStats")
async def admin_audit_stats(
    caller: AdminCaller, ink: FacadeDep, startDate: str | None = None, endDate: str | None = None
) -> ImageAuditStats:
    window = audit_query(start_date=startDate, end_date=endDate)
    filters = AuditFilterQuery(since=window.since, until=window.until)
    return audit_stats(await ink.admin.audit_summary(filters))


@router.get("/admin/image-audits/{auditId}", operation_id="adminGetImageAudit")
async def admin_get_audit(
    caller: AdminCaller, ink: FacadeDep, auditId: Annotated[str, Path(max_length=200)]
) -> ImageGenerationAudit:
    """An audit entry is a finished job (its id is the job's). The audit is read by the
    job's user and profile, from when it was made: dispatch says which job that is."""
    missing = NotFound(f"There is no audit record {auditId!r}.")
    job = await ink.service.backends.job(auditId) if _JOB_ID_RE.match(auditId) else None
    if job is None or job.status not in FINAL_STATUSES:
        raise missing
    filters = AuditListQuery(
        user_id=job.user_id,
        profile_id=job.profile_id,
        since=job.created_at,
        until=job.updated_at + timedelta(hours=1),
        limit=_AUDIT_PAGE_SIZE,
    )
    for page in range(_AUDIT_PAGES):
        offset = page * _AUDIT_PAGE_SIZE
        reply = await ink.admin.audits(filters.model_copy(update={"offset": offset}))
        found = next((r for r in reply.items if r.job_id == auditId), None)
        if found is not None:
            return inkweld_audit(found)
        if offset + _AUDIT_PAGE_SIZE >= reply.total:
            break
    raise missing
