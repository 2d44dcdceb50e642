"""Configuration and status: the app's features, provider status, profiles and custom sizes, all
from the same catalog as `GET /v1/features`."""

# No `from __future__ import annotations`: FastAPI resolves the route annotations at run time.
from fastapi import APIRouter

from atelier_contracts.errors import InvalidInput
from atelier_gateway.inkweld.auth import AdminCaller, AnyCaller
from atelier_gateway.inkweld.errors import InkweldRoute
from atelier_gateway.inkweld.facade import FacadeDep
from atelier_gateway.inkweld.mapping.features import generation_status, system_features
from atelier_gateway.inkweld.mapping.profiles import public_profile
from atelier_gateway.inkweld.models import (
    CustomSizesResponse,
    CustomSizesUpdate,
    ImageGenerationStatus,
    PublicImageModelProfile,
    SystemFeatures,
)

router = APIRouter(route_class=InkweldRoute)


@router.get("/config/features", operation_id="getSystemFeatures")
async def get_features(ink: FacadeDep) -> SystemFeatures:
    """Public, as in the app: it is read before anyone signs in."""
    switch, shown = await ink.shown_catalog()
    usable = any(profile.enabled for profile, _ in shown)
    return system_features(switch, usable, ink.inkweld.app_mode)


@router.get("/ai/image/status", operation_id="getImageGenerationStatus")
async def get_status(caller: AnyCaller, ink: FacadeDep) -> ImageGenerationStatus:
    switch, shown = await ink.shown_catalog()
    return generation_status(switch, shown)


@router.get("/ai/image-profiles", operation_id="listImageProfiles")
async def list_profiles(caller: AnyCaller, ink: FacadeDep) -> list[PublicImageModelProfile]:
    _, shown = await ink.shown_catalog()
    return [public_profile(p, name) for p, name in shown if p.enabled]


@router.get("/ai/image/custom-sizes", operation_id="getCustomImageSizes")
async def get_custom_sizes(caller: AnyCaller) -> CustomSizesResponse:
    """Atelier has no custom sizes: every profile lists the sizes it makes."""
    return CustomSizesResponse(sizes=[])


@router.put("/ai/image/custom-sizes", operation_id="updateCustomImageSizes")
async def put_custom_sizes(caller: AdminCaller, body: CustomSizesUpdate) -> CustomSizesResponse:
    raise InvalidInput(
        "Atelier has no custom sizes: each profile lists the sizes it makes. Add the size "
        "to a profile's supportedSizes instead."
    )
