"""The admin API: the global switch and model profiles, under `/admin/v1`.

Every route needs `Authorization: Bearer <admin token>`. Errors have one shape,
`{"error": {"code", "message"}}` (mapped by `atelier_web`).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from atelier_contracts.errors import Unauthorized
from atelier_contracts.profiles import GenerationSettings, Profile, ProfileFields
from atelier_profiles.service import ProfilePatch, ProfileService

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
    401: "The admin token is missing or wrong",
    404: "No profile has this id",
    409: "Another profile already has this name",
    422: "The input breaks a rule; the message says which and how to fix it",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give (all in the one error shape)."""
    return {code: {"model": ErrorResponse, "description": _ERROR_MEANINGS[code]} for code in codes}


ProfileId = Annotated[
    str, Path(description="The profile's id", examples=["4f1c2a9e-3b7d-4c55-9a43-1d2e3f4a5b6c"])
]


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The admin token (`ATELIER_PROFILES_ADMIN_TOKEN`)",
)


class AdminGuard:
    """Dependency admitting only requests that carry the admin token.

    A class at module level rather than a closure: FastAPI resolves the string annotations
    (`from __future__ import annotations`) in the module's namespace.
    """

    def __init__(self, admin_token: str) -> None:
        self._expected = admin_token.encode()

    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> None:
        # Missing and wrong tokens get the same answer, so a caller learns nothing from it;
        # compare_digest keeps the comparison time independent of how much of the token matched.
        if credentials is None or not hmac.compare_digest(
            credentials.credentials.encode(), self._expected
        ):
            raise Unauthorized(
                "A valid admin token is required: send 'Authorization: Bearer <admin token>'."
            )


def build_admin_router(service: ProfileService, admin_token: str) -> APIRouter:
    router = APIRouter(
        prefix=PREFIX, dependencies=[Depends(AdminGuard(admin_token))], responses=_errors(401)
    )

    @router.get(
        "/settings",
        tags=["settings"],
        summary="Read the global generation switch",
    )
    async def get_settings() -> GenerationSettings:
        return await service.get_settings()

    @router.put(
        "/settings",
        tags=["settings"],
        summary="Turn image generation on or off for everyone",
        description="While `enabled` is false, users see `reason` and cannot start generations.",
        responses=_errors(422),
    )
    async def put_settings(settings: GenerationSettings) -> GenerationSettings:
        return await service.set_settings(settings)

    @router.get(
        "/profiles",
        tags=["profiles"],
        summary="List model profiles",
        description="Ordered by `sort_order`, then name.",
        responses=_errors(422),
    )
    async def list_profiles(
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
        responses=_errors(409, 422),
    )
    async def create_profile(fields: ProfileFields, response: Response) -> Profile:
        profile = await service.create_profile(fields)
        response.headers["Location"] = f"{PREFIX}/profiles/{profile.id}"
        return profile

    @router.get(
        "/profiles/{profile_id}",
        tags=["profiles"],
        summary="Read one model profile",
        responses=_errors(404, 422),
    )
    async def get_profile(profile_id: ProfileId) -> Profile:
        return await service.get_profile(profile_id)

    @router.put(
        "/profiles/{profile_id}",
        tags=["profiles"],
        summary="Replace a model profile",
        description="Every field is set from the body; fields left out take their defaults.",
        responses=_errors(404, 409, 422),
    )
    async def replace_profile(profile_id: ProfileId, fields: ProfileFields) -> Profile:
        return await service.replace_profile(profile_id, fields)

    @router.patch(
        "/profiles/{profile_id}",
        tags=["profiles"],
        summary="Change some fields of a model profile",
        description="Only the fields in the body change; the result must still be a valid "
        "profile (e.g. `default_size` one of `sizes`).",
        responses=_errors(404, 409, 422),
    )
    async def patch_profile(profile_id: ProfileId, patch: ProfilePatch) -> Profile:
        return await service.patch_profile(profile_id, patch)

    @router.delete(
        "/profiles/{profile_id}",
        tags=["profiles"],
        summary="Delete a model profile",
        description="Jobs already submitted keep the snapshot they were given.",
        status_code=status.HTTP_204_NO_CONTENT,
        responses=_errors(404, 422),
    )
    async def delete_profile(profile_id: ProfileId) -> None:
        await service.delete_profile(profile_id)

    return router
