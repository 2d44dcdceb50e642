"""Generation: the app's request as the native one; the ended job as its answer or error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from atelier_contracts.errors import AtelierError, ErrorClass, ErrorInfo, InvalidInput
from atelier_contracts.jobs import (
    ContextElement,
    ElementImage,
    GenerationContext,
    JobStatus,
    JobView,
    SendToggles,
)
from atelier_contracts.media import MediaItem
from atelier_contracts.profiles import OptionSpec, Profile
from atelier_gateway.inkweld.errors import validation_message
from atelier_gateway.inkweld.mapping.sizes import requested_size
from atelier_gateway.inkweld.models import (
    GeneratedImage,
    GenerateRequestEcho,
    ImageGenerateRequest,
    ImageGenerateResponse,
    ProviderType,
    WorldbuildingContext,
)
from atelier_gateway.models import GenerationRequestBody


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


class ContentBlocked(AtelierError):
    """A job the provider blocked: the app's error text says where, and `moderation` carries
    the same machine-readable (`{stage, category, input}`; issue 21) beside the app's field."""

    status_code = 400
    code = ErrorClass.CONTENT_BLOCKED.value

    def __init__(self, error: ErrorInfo) -> None:
        detail = {
            "stage": error.stage,
            "category": error.category,
            "input": error.input.model_dump(mode="json") if error.input else None,
        }
        # Only what is known: a block the provider said nothing more of keeps the app's shape.
        self.moderation: dict[str, Any] | None = (
            detail if any(value is not None for value in detail.values()) else None
        )
        said = [f"stage: {error.stage}"] if error.stage else []
        if error.category:
            said.append(f"category: {error.category}")
        if error.input is not None:
            said.append(
                "input: prompt"
                if error.input.kind == "prompt"
                else f"input: reference image of element {error.input.element_id or '?'}"
            )
        super().__init__(f"{error.message} ({'; '.join(said)})" if said else error.message)


def job_failure(job: JobView) -> AtelierError:
    """A job that ended without images, as the error the app shows (400 or 503)."""
    if job.error is not None and job.error.error_class == ErrorClass.CONTENT_BLOCKED:
        return ContentBlocked(job.error)
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
