"""Translations between the Inkweld API and Atelier's own contracts, both ways. Pure: no I/O.

Every rule an Inkweld caller can observe lives here (docs/inkweld.md lists them): provider
names, sizes and aspect ratios, profile fields, project keys, the generate request and answer,
the audit and its statistics, media file names. Nothing here decides what Atelier allows: a
translated request is validated by the same code as a native one.
"""

from __future__ import annotations

import math
import mimetypes
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast, get_args

from pydantic import ValidationError

from atelier_contracts.errors import AtelierError, ErrorClass, InvalidInput
from atelier_contracts.jobs import (
    ContextElement,
    ElementImage,
    GenerationContext,
    JobStatus,
    JobView,
    SendToggles,
)
from atelier_contracts.media import MediaItem, ProjectFile
from atelier_contracts.profiles import (
    ALLOWED_COUNTS,
    SIZE_PATTERN,
    AuditListQuery,
    AuditPageReply,
    AuditRecord,
    AuditSummaryReply,
    GenerationSettings,
    OptionSpec,
    Profile,
    ProfileFields,
)
from atelier_contracts.providers import ProviderCapabilities, capabilities
from atelier_contracts.subjects import PROJECT_ID_PATTERN
from atelier_gateway.inkweld.models import (
    AdminImageModelProfile,
    CreateImageModelProfileRequest,
    GeneratedImage,
    GenerateRequestEcho,
    ImageAuditStats,
    ImageGenerateRequest,
    ImageGenerateResponse,
    ImageGenerationAudit,
    ImageGenerationStatus,
    ImageModelInfo,
    ImageProviderStatus,
    MediaEntry,
    PaginatedImageAudits,
    PasswordPolicy,
    ProfileUsage,
    ProviderEntry,
    ProviderType,
    PublicImageModelProfile,
    SystemFeatures,
    UpdateImageModelProfileRequest,
    UserUsage,
    WorldbuildingContext,
)
from atelier_gateway.models import GenerationRequestBody

# --- providers -------------------------------------------------------------------------------

# The app's providers, each the Atelier adapter of the same name (`stable-diffusion` is the
# AUTOMATIC1111 adapter). Atelier has more; those are shown only under an alias an operator
# chose (`InkweldSettings.provider_aliases`).
INKWELD_PROVIDERS: tuple[ProviderType, ...] = get_args(ProviderType)
_BY_NAME: dict[str, ProviderType] = {name: name for name in INKWELD_PROVIDERS}
PROVIDER_NAMES: dict[str, str] = {
    "openai": "OpenAI",
    "openrouter": "OpenRouter",
    "stable-diffusion": "Stable Diffusion (AUTOMATIC1111)",
    "falai": "fal.ai",
    "workersai": "Cloudflare Workers AI",
}


def inkweld_provider(provider: str, aliases: Mapping[str, str]) -> ProviderType | None:
    """The app's name for an Atelier provider; None when it has none (the profile is hidden)."""
    return _BY_NAME.get(provider) or _BY_NAME.get(aliases.get(provider, ""))


def atelier_provider(provider: ProviderType) -> str:
    """Atelier's adapter for one of the app's providers: the same name."""
    return provider


def provider_entries() -> list[ProviderEntry]:
    return [ProviderEntry(id=p, name=PROVIDER_NAMES[p]) for p in INKWELD_PROVIDERS]


def visible_profiles(
    profiles: Iterable[Profile], aliases: Mapping[str, str]
) -> list[tuple[Profile, ProviderType]]:
    """The profiles the app can show, each with its provider's name there, in Atelier's order."""
    shown = []
    for profile in profiles:
        provider = inkweld_provider(profile.provider, aliases)
        if provider is not None:
            shown.append((profile, provider))
    return sorted(shown, key=lambda pair: (pair[0].sort_order, pair[0].name.lower()))


# --- sizes -----------------------------------------------------------------------------------

# The app's aspect-ratio presets and the pixel size each stands for (its own size list pairs
# them: `16:9` is `1344x768`). A profile stores pixel sizes only.
ASPECT_RATIO_SIZES: dict[str, str] = {
    "1:1": "1024x1024",
    "2:3": "832x1248",
    "3:2": "1248x832",
    "3:4": "864x1184",
    "4:3": "1184x864",
    "4:5": "896x1152",
    "5:4": "1152x896",
    "9:16": "768x1344",
    "16:9": "1344x768",
    "21:9": "1536x672",
}
_RATIO_OF_SIZE = {size: ratio for ratio, size in ASPECT_RATIO_SIZES.items()}
AUTO_SIZE = "auto"
_SIZE_RE = re.compile(SIZE_PATTERN)
_PAIR_RE = re.compile(r"^([1-9][0-9]*)[:x]([1-9][0-9]*)$")
# The presets themselves are only near their names (1344x768 is 1.75, 16:9 is 1.78).
_RATIO_TOLERANCE = 0.05


def _proportion(value: str) -> float | None:
    """Width over height of `W:H` or `WxH`."""
    match = _PAIR_RE.match(value)
    return int(match.group(1)) / int(match.group(2)) if match else None


def profile_size(value: str) -> str | None:
    """An app size as a profile size: `WxH` as it is, a ratio as its preset, `auto` as None."""
    size = value.strip().lower()
    if size == AUTO_SIZE:
        return None
    if size in ASPECT_RATIO_SIZES:
        return ASPECT_RATIO_SIZES[size]
    if _SIZE_RE.match(size):
        return size
    raise InvalidInput(
        f"{value!r} is not a size: use WIDTHxHEIGHT (1024x1024), an aspect ratio "
        f"({', '.join(ASPECT_RATIO_SIZES)}) or auto."
    )


def requested_size(value: str | None, profile: Profile | None) -> str | None:
    """The size a generation asks for: None (the profile's default) for `auto`; for a ratio, the
    profile's size nearest to it (within 5%), else the ratio's preset, which the profile's own
    check may then refuse, listing what it makes."""
    if value is None or value == AUTO_SIZE:
        return None
    if value not in ASPECT_RATIO_SIZES:
        return value
    wanted = _proportion(value)
    assert wanted is not None
    if profile is not None:
        nearest = min(
            ((abs((_proportion(s) or 0) / wanted - 1), i, s) for i, s in enumerate(profile.sizes)),
            default=None,
        )
        if nearest is not None and nearest[0] <= _RATIO_TOLERANCE:
            return nearest[2]
    return ASPECT_RATIO_SIZES[value]


def inkweld_size(size: str, aspect_ratio_only: bool) -> str:
    """A profile size as the app shows it: its ratio for aspect-ratio-only profiles."""
    return _RATIO_OF_SIZE.get(size, size) if aspect_ratio_only else size


# --- profiles --------------------------------------------------------------------------------

# Where the app's presentation fields that Atelier has no column for are kept: a key of the
# profile's `provider_config`, which workers read by name and so never see.
INKWELD_CONFIG_KEY = "inkweld"
# `modelConfig` is the profile's `provider_config` (minus the key above) plus this key for
# `base_url`, so an admin can point a profile at a proxy or a self-hosted server from the app,
# but only at an origin an operator approved for the provider's key: profiles refuses any other
# (docs/adr/0014-keys-only-to-approved-origins.md); the app's admin role cannot approve one.
BASE_URL_KEY = "baseUrl"
# Reference images a profile created from the app takes when its model's limit is unknown.
DEFAULT_REFERENCE_IMAGES = 4
# The app's prompt limit; a profile created from it takes that much unless its model takes less.
INKWELD_PROMPT_MAX_LENGTH = 16000
# The app's per-request options, declared on a profile created from it when the model takes them
# with the app's values; `negative_prompt` for the adapters that send one.
_ENUM_OPTIONS = {"quality": ("standard", "hd"), "style": ("vivid", "natural")}
NEGATIVE_PROMPT_PROVIDERS = frozenset({"stable-diffusion", "falai", "workersai"})
_CUSTOM_RESOLUTIONS = (
    "supportsCustomResolutions: Atelier makes only the sizes a profile lists; list the sizes "
    "in supportedSizes instead."
)


def _inkweld_config(profile: Profile) -> dict[str, Any]:
    config = profile.provider_config.get(INKWELD_CONFIG_KEY)
    return dict(config) if isinstance(config, dict) else {}


def aspect_ratio_only(profile: Profile) -> bool:
    return _inkweld_config(profile).get("usesAspectRatioOnly") is True


def public_profile(profile: Profile, provider: ProviderType) -> PublicImageModelProfile:
    ratio_only = aspect_ratio_only(profile)
    description = _inkweld_config(profile).get("description")
    return PublicImageModelProfile(
        id=profile.id,
        name=profile.name,
        description=description if isinstance(description, str) else None,
        provider=provider,
        modelId=profile.model,
        enabled=profile.enabled,
        supportsImageInput=profile.max_reference_images > 0,
        supportsCustomResolutions=False,
        usesAspectRatioOnly=ratio_only,
        supportedSizes=[inkweld_size(size, ratio_only) for size in profile.sizes],
        defaultSize=inkweld_size(profile.default_size, ratio_only),
        sortOrder=profile.sort_order,
        creditCost=profile.credit_cost,
    )


def model_config_of(profile: Profile) -> dict[str, Any]:
    config = {k: v for k, v in profile.provider_config.items() if k != INKWELD_CONFIG_KEY}
    if profile.base_url is not None:
        config[BASE_URL_KEY] = profile.base_url
    return config


def admin_profile(profile: Profile, provider: ProviderType) -> AdminImageModelProfile:
    return AdminImageModelProfile(
        **public_profile(profile, provider).model_dump(),
        modelConfig=model_config_of(profile),
        createdAt=profile.created_at,
        updatedAt=profile.updated_at,
    )


def _split_model_config(config: Mapping[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """`modelConfig` as (`provider_config`, `base_url`)."""
    provider_config = dict(config or {})
    provider_config.pop(INKWELD_CONFIG_KEY, None)  # ours; an admin cannot set it by hand
    base_url = provider_config.pop(BASE_URL_KEY, None)
    if base_url is not None and not isinstance(base_url, str):
        raise InvalidInput(f"modelConfig.{BASE_URL_KEY}: must be a URL string.")
    return provider_config, base_url


def _sizes(values: Sequence[str]) -> list[str]:
    sizes: list[str] = []
    for value in values:
        size = profile_size(value)
        if size is not None and size not in sizes:
            sizes.append(size)
    return sizes


def _default_sizes(caps: ProviderCapabilities) -> list[str]:
    return sorted(caps.sizes) if caps.sizes else ["1024x1024"]


def _reference_images(caps: ProviderCapabilities) -> int:
    # A model known to take none keeps the default, so the profile check says so plainly.
    return caps.max_reference_images or DEFAULT_REFERENCE_IMAGES


def inkweld_options(provider: str, caps: ProviderCapabilities) -> list[OptionSpec]:
    specs: list[OptionSpec] = []
    for name, values in _ENUM_OPTIONS.items():
        rule = (caps.options or {}).get(name)
        if rule is not None and "enum" in rule.kinds and set(values) <= (rule.values or set()):
            specs.append(OptionSpec(name=name, kind="enum", values=list(values)))
    if provider in NEGATIVE_PROMPT_PROVIDERS and "negative_prompt" not in caps.refused_options:
        specs.append(OptionSpec(name="negative_prompt", kind="string", max_length=2000))
    return specs


def _profile_fields(data: dict[str, Any]) -> ProfileFields:
    try:
        return ProfileFields.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(validation_message(exc)) from exc


def profile_fields_for_create(request: CreateImageModelProfileRequest) -> ProfileFields:
    """A new profile from the app's form; what the form has no field for gets what the model
    can do (counts, reference images, prompt limit, the app's options)."""
    if request.supportsCustomResolutions:
        raise InvalidInput(_CUSTOM_RESOLUTIONS)
    provider = atelier_provider(request.provider)
    caps = capabilities(provider, request.modelId)
    sizes = _sizes(request.supportedSizes or []) or _default_sizes(caps)
    default_size = profile_size(request.defaultSize) if request.defaultSize else None
    provider_config, base_url = _split_model_config(request.modelConfig)
    provider_config[INKWELD_CONFIG_KEY] = {
        "description": request.description,
        "usesAspectRatioOnly": request.usesAspectRatioOnly,
    }
    return _profile_fields(
        {
            "name": request.name,
            "provider": provider,
            "model": request.modelId,
            "enabled": request.enabled,
            "sizes": sizes,
            "default_size": default_size or sizes[0],
            "counts": [c for c in ALLOWED_COUNTS if caps.max_count is None or c <= caps.max_count],
            "options": inkweld_options(provider, caps),
            "max_reference_images": _reference_images(caps) if request.supportsImageInput else 0,
            "prompt_max_length": min(
                INKWELD_PROMPT_MAX_LENGTH, caps.prompt_max_length or INKWELD_PROMPT_MAX_LENGTH
            ),
            "sort_order": round(request.sortOrder),
            "credit_cost": float(request.creditCost),
            "base_url": base_url,
            "provider_config": provider_config,
        }
    )


_NULLABLE_UPDATES = frozenset({"description", "supportedSizes", "defaultSize", "modelConfig"})


def profile_fields_for_update(
    current: Profile, request: UpdateImageModelProfileRequest, shown_provider: ProviderType
) -> ProfileFields:
    """The whole profile after the app's partial update (sent as a full replacement)."""
    given = request.model_fields_set
    for name in sorted(given - _NULLABLE_UPDATES):
        if getattr(request, name) is None:
            raise InvalidInput(f"{name}: must not be null.")
    if request.supportsCustomResolutions:
        raise InvalidInput(_CUSTOM_RESOLUTIONS)

    data = current.model_dump(include=set(ProfileFields.model_fields))
    presentation = _inkweld_config(current)
    # A profile shown under an alias keeps its own provider unless the admin picks another.
    if request.provider is not None and request.provider != shown_provider:
        data["provider"] = atelier_provider(request.provider)
    if request.modelId is not None:
        data["model"] = request.modelId
    caps = capabilities(data["provider"], data["model"])
    if request.name is not None:
        data["name"] = request.name
    if "description" in given:
        presentation["description"] = request.description
    if request.enabled is not None:
        data["enabled"] = request.enabled
    if request.supportsImageInput is not None:
        if not request.supportsImageInput:
            data["max_reference_images"] = 0
        elif current.max_reference_images == 0:
            data["max_reference_images"] = _reference_images(caps)
    if request.usesAspectRatioOnly is not None:
        presentation["usesAspectRatioOnly"] = request.usesAspectRatioOnly
    if "supportedSizes" in given:
        data["sizes"] = _sizes(request.supportedSizes or []) or _default_sizes(caps)
    if "defaultSize" in given:
        chosen = profile_size(request.defaultSize) if request.defaultSize else None
        data["default_size"] = chosen or data["sizes"][0]
    elif data["default_size"] not in data["sizes"]:
        data["default_size"] = data["sizes"][0]  # the old default was taken off the list
    if "modelConfig" in given:
        data["provider_config"], data["base_url"] = _split_model_config(request.modelConfig)
    data["provider_config"] = {**data["provider_config"], INKWELD_CONFIG_KEY: presentation}
    if request.sortOrder is not None:
        data["sort_order"] = round(request.sortOrder)
    if request.creditCost is not None:
        data["credit_cost"] = float(request.creditCost)
    return _profile_fields(data)


# --- projects --------------------------------------------------------------------------------

# The app names a project `username/slug`; Atelier's project ids are one NATS subject token.
PROJECT_KEY_SEPARATOR = "__"
_KEY_PART_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_PROJECT_RE = re.compile(PROJECT_ID_PATTERN)


def project_of(username: str, slug: str) -> str | None:
    """`alice`, `my-novel` → `alice__my-novel`; None when they cannot make a project id."""
    project = f"{username}{PROJECT_KEY_SEPARATOR}{slug}"
    if not (_KEY_PART_RE.match(username) and _KEY_PART_RE.match(slug)):
        return None
    return project if _PROJECT_RE.match(project) else None


def project_of_key(key: str) -> str | None:
    """A `projectKey`: `username/slug` as above, or an Atelier project id as it is."""
    if "/" in key:
        username, _, slug = key.partition("/")
        return project_of(username, slug)
    return key if _PROJECT_RE.match(key) else None


def generation_project(project_key: str | None, granted: Iterable[str]) -> str:
    """The project a generation lands in: the key's, or the caller's only project."""
    if project_key is not None:
        project = project_of_key(project_key)
        if project is None:
            raise InvalidInput(
                f"projectKey {project_key!r} is not a project: use username/slug, letters, "
                "digits, '-' and '_' only."
            )
        return project
    projects = sorted(granted)
    if len(projects) != 1:
        raise InvalidInput(
            "Name the project the images go to: projectKey (username/slug)"
            + ("." if projects else "; your account has no project.")
        )
    return projects[0]


# --- generation ------------------------------------------------------------------------------


def context_element(element: WorldbuildingContext, media_id: str | None) -> ContextElement:
    """A worldbuilding element as context; its role is written into its data, so it shows in
    the prompt that is sent (nothing hidden). A `reference` element sends its image: the one
    chosen for it in the project (`media_id`), if any."""
    data = dict(element.data)
    description = data.pop("description", None)
    data["role"] = element.roleDescription or element.role
    return ContextElement(
        id=element.elementId,
        name=element.name.strip() or element.elementId,
        type=element.type.strip() or "element",
        description=description if isinstance(description, str) else None,
        data=data,
        image=ElementImage(media_id=media_id) if media_id else None,
        send=SendToggles(image=element.role == "reference"),
    )


def _takes(spec: OptionSpec, value: str) -> bool:
    return spec.kind != "enum" or spec.values is None or value in spec.values


def generation_request(
    body: ImageGenerateRequest,
    project: str,
    profile: Profile | None,
    element_images: Mapping[str, str],
) -> GenerationRequestBody:
    """The native request the app's one stands for. `quality`, `style` and `negativePrompt`
    become options where the profile declares them and takes the value (gpt-image's quality is
    low..high, never the app's standard/hd); elsewhere they are left out and the profile's
    default applies, as the app leaves out what a model does not take."""
    specs = {option.name: option for option in profile.options} if profile is not None else {}
    wanted = {"quality": body.quality, "style": body.style, "negative_prompt": body.negativePrompt}
    options = {
        name: value
        for name, value in wanted.items()
        if value is not None and name in specs and _takes(specs[name], value)
    }
    try:
        elements = [
            context_element(element, element_images.get(element.elementId))
            for element in body.worldbuildingContext or []
        ]
        return GenerationRequestBody(
            project=project,
            profile_id=body.profileId,
            prompt=body.prompt,
            size=requested_size(body.size, profile),
            count=body.n or 1,
            options=options,
            context=GenerationContext(elements=elements),
        )
    except ValidationError as exc:
        raise InvalidInput(validation_message(exc)) from exc


def generated_image(index: int, item: MediaItem, data: str | None) -> GeneratedImage:
    return GeneratedImage(
        index=index,
        b64Json=data,
        mimeType=item.content_type,
        revisedPrompt=item.revised_prompt,
    )


def generate_response(
    job: JobView,
    images: list[GeneratedImage],
    provider: ProviderType,
    body: ImageGenerateRequest,
) -> ImageGenerateResponse:
    return ImageGenerateResponse(
        created=int(job.created_at.timestamp()),
        data=images,
        provider=provider,
        model=job.model,
        request=GenerateRequestEcho(
            prompt=body.prompt, size=body.size or job.size, quality=body.quality, style=body.style
        ),
    )


# The caller must change the request; every other failure is Atelier's or the provider's side.
_REFUSED = frozenset({ErrorClass.INVALID_REQUEST, ErrorClass.CONTENT_BLOCKED, ErrorClass.CANCELLED})


def job_failure(job: JobView) -> AtelierError:
    """A job that ended without images, as the error the app shows (400 or 503)."""
    if job.error is not None:
        error_class, message = job.error.error_class, job.error.message
    elif job.status == JobStatus.CANCELLED:
        error_class, message = ErrorClass.CANCELLED, "The generation was cancelled."
    else:
        error_class, message = (
            ErrorClass.NO_IMAGE_RETURNED,
            "The provider answered without an image.",
        )
    status = 400 if error_class in _REFUSED else 503
    return AtelierError(message, code=error_class.value, status_code=status)


# --- features and status ---------------------------------------------------------------------


def system_features(settings: GenerationSettings, usable: bool, app_mode: str) -> SystemFeatures:
    """Image generation from the admin's switch; the rest are not Atelier's to decide and are
    fixed (docs/inkweld.md)."""
    return SystemFeatures(
        # The switch is Atelier's admin API's, not the app's admin screen's: "locked".
        aiKillSwitch=not settings.enabled,
        aiKillSwitchLockedByEnv=True,
        aiAutoReview=False,
        aiImageGeneration=settings.enabled and usable,
        appMode=cast(Any, app_mode),
        userApprovalRequired=False,
        emailEnabled=False,
        requireEmail=False,
        passwordPolicy=PasswordPolicy(
            minLength=8,
            requireUppercase=True,
            requireLowercase=True,
            requireNumber=True,
            requireSymbol=False,
        ),
        passkeysEnabled=False,
        passwordLoginEnabled=True,
        emailRecoveryEnabled=False,
        legacyMcpEnabled=False,
        mcpEnabled=False,
    )


def _model_info(profile: Profile, provider: ProviderType) -> ImageModelInfo:
    names = {option.name for option in profile.options}
    shown = public_profile(profile, provider)
    return ImageModelInfo(
        id=profile.model,
        name=profile.name,
        provider=provider,
        supportedSizes=shown.supportedSizes or [],
        supportsQuality="quality" in names,
        supportsStyle="style" in names,
        maxImages=max(profile.counts),
        description=shown.description,
    )


def generation_status(
    settings: GenerationSettings, shown: Sequence[tuple[Profile, ProviderType]]
) -> ImageGenerationStatus:
    """One entry per provider that has a profile; its models are its enabled profiles."""
    providers: list[ImageProviderStatus] = []
    for provider in INKWELD_PROVIDERS:
        mine = [profile for profile, name in shown if name == provider]
        if not mine:
            continue
        enabled = [profile for profile in mine if profile.enabled]
        error = None
        if not settings.enabled:
            error = f"Image generation is turned off: {settings.reason or 'an admin paused it.'}"
        elif not enabled:
            error = "No profile of this provider is enabled."
        providers.append(
            ImageProviderStatus(
                type=provider,
                name=PROVIDER_NAMES[provider],
                available=settings.enabled and bool(enabled),
                enabled=bool(enabled),
                models=[_model_info(profile, provider) for profile in enabled],
                error=error,
            )
        )
    default = next((name for profile, name in shown if profile.enabled), None)
    return ImageGenerationStatus(
        available=any(p.available for p in providers), providers=providers, defaultProvider=default
    )


# --- audits ----------------------------------------------------------------------------------


def _date(name: str, value: str | None) -> datetime | None:
    if value is None or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name}: {value!r} is not an ISO 8601 date.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _text(name: str, value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise InvalidInput(f"{name}: must not contain NUL characters.")
    return value or None


def audit_query(
    *,
    user_id: str | None = None,
    profile_id: str | None = None,
    status: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    search: str | None = None,
    page: int = 1,
    limit: int = 50,
) -> AuditListQuery:
    """The app's filters: `success` is a job that completed, `moderated` one the provider
    refused (content blocked); `endDate` is inclusive to the second given."""
    end = _date("endDate", end_date)
    try:
        return AuditListQuery(
            user_id=_text("userId", user_id),
            profile_id=_text("profileId", profile_id),
            status="completed" if status == "success" else None,
            error_class=ErrorClass.CONTENT_BLOCKED.value if status == "moderated" else None,
            since=_date("startDate", start_date),
            until=end + timedelta(seconds=1) if end is not None else None,
            text=_text("search", search),
            limit=limit,
            offset=(page - 1) * limit,
        )
    except ValidationError as exc:
        raise InvalidInput(validation_message(exc)) from exc


def inkweld_audit(record: AuditRecord) -> ImageGenerationAudit:
    """`moderated` when the provider refused; otherwise `success`, with what really happened in
    `message` when the job did not simply complete (the app knows no other outcome)."""
    error = record.error.message if record.error is not None else None
    if record.moderated or record.status == "completed":
        message = error
    else:
        message = f"{record.status}: {record.landed} of {record.requested} images landed" + (
            f"; {error}" if error else ""
        )
    return ImageGenerationAudit(
        id=record.job_id,
        userId=record.user_id,
        username=None,  # Atelier knows users by token subject only
        profileId=record.profile_id,
        profileName=record.profile_name,
        prompt=record.prompt,
        referenceImageUrls=None,
        outputImageUrls=None,
        creditCost=record.cost,
        status="moderated" if record.moderated else "success",
        message=message,
        createdAt=record.finished_at,
    )


def audit_page(reply: AuditPageReply, *, page: int, limit: int) -> PaginatedImageAudits:
    return PaginatedImageAudits(
        audits=[inkweld_audit(record) for record in reply.items],
        total=reply.total,
        page=page,
        limit=limit,
        totalPages=math.ceil(reply.total / limit),
    )


def audit_stats(summary: AuditSummaryReply) -> ImageAuditStats:
    return ImageAuditStats(
        totalRequests=summary.total.jobs,
        totalCredits=summary.total.cost,
        successCount=summary.by_status.get("completed", 0),
        moderatedCount=summary.by_error_class.get(ErrorClass.CONTENT_BLOCKED.value, 0),
        byProfile=[
            ProfileUsage(profileName=t.profile_name, count=t.jobs, credits=t.cost)
            for t in summary.by_profile
        ],
        byUser=[
            UserUsage(userId=t.user_id, username=None, count=t.jobs, credits=t.cost)
            for t in summary.by_user
        ],
    )


# --- media -----------------------------------------------------------------------------------

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
}


def media_filename(item: MediaItem) -> str:
    """A landed image's file name: its id, with the extension of its type."""
    return f"{item.id}{_EXTENSIONS.get(item.content_type, '')}"


def media_id_of(filename: str) -> str:
    stem, dot, extension = filename.rpartition(".")
    return stem if dot and f".{extension.lower()}" in _EXTENSIONS.values() else filename


def media_entry(item: MediaItem) -> MediaEntry:
    return MediaEntry(
        filename=media_filename(item),
        size=item.size_bytes,
        mimeType=item.content_type,
        uploadedAt=item.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    )


# The types the app's media sync lists (reference §3); other files are kept but not listed.
_LISTED_PREFIXES = ("image/", "audio/", "video/")
_LISTED_TYPES = frozenset(
    {"application/pdf", "application/epub+zip", "text/html", "text/markdown", "text/x-markdown"}
)


def is_listed_type(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind.startswith(_LISTED_PREFIXES) or kind in _LISTED_TYPES


def file_entry(file: ProjectFile) -> MediaEntry:
    return MediaEntry(
        filename=file.filename,
        size=file.size_bytes,
        mimeType=file.content_type,
        uploadedAt=file.uploaded_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    )


def sync_listing(
    files: Iterable[ProjectFile],
    items: Iterable[MediaItem],
    *,
    now: datetime,
    grace_s: float,
    prefix: str = "",
) -> list[MediaEntry]:
    """What the app's media sync sees, so that it converges (docs/inkweld.md, "Media sync").

    Every file under the exact name, size and type it was uploaded with (media types only, as
    the app's backend lists); and each generated image the app has no copy of yet, as
    `<media id>.<ext>`. A generated image is the app's own once a file holds its bytes (the app
    uploads its copy as `generated-<ms>-<i>.png`): it is listed under that name only. One handed
    to the app by a synchronous generate waits `grace_s` for that upload before it is offered as
    `<media id>.<ext>` (the app lost it: a closed tab), so the app never downloads a second copy.
    """
    files = list(files)
    entries = [file_entry(f) for f in files if is_listed_type(f.content_type)]
    owned = {f.media_id for f in files if f.media_id}
    for item in items:
        if item.source != "generated" or item.id in owned:
            continue
        delivered = item.delivered_at
        if delivered is not None and (now - delivered).total_seconds() < grace_s:
            continue
        entries.append(media_entry(item))
    return sorted((e for e in entries if e.filename.startswith(prefix)), key=lambda e: e.filename)


def served_type(filename: str, stored: str) -> str:
    """The type a file is served with: from its extension, as the app's backend does (the media
    tab shows an item as an image only when it starts with `image/`), else the stored one."""
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    if filename.lower().endswith(".md"):
        guessed = "text/markdown"
    return guessed or stored


# --- errors ----------------------------------------------------------------------------------


def validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"] if p != "body")
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)
