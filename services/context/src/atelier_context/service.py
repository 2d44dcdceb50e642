"""Turns the worldbuilding elements a writer picked into what the model is sent: the prompt
(`composition`) and the reference images (`references`, `images`, `ssrf`).

No broker and no HTTP here: the media lookup, the fetchers and the object store come in from
the composition root. A job's reference images are staged under `refs/<job_id>/<n>.<ext>` in
the staging bucket, so a redelivered `jobs.requested` writes the same keys again and publishes the
same `jobs.enriched`; once the job is final they are deleted (`discard_references`). A preview runs
the same assembly and stages nothing.

What the gateway staged for a request (ADR 0017, `inputs`) is read from `refs/<job_id>/in/` for a
job (so the same clean-up takes it) and from `previews/<id>/in/` for a preview, which is deleted
as soon as the preview is answered. A staged context is deleted as soon as `jobs.enriched` is
stored (`discard_staged_context`): nothing reads it again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol, TypeVar

from atelier_context.composition import AssemblyInput, assemble_prompt
from atelier_context.inputs import StagedInputs, job_inputs_prefix, preview_prefix_of
from atelier_context.references import ReferenceProblem, ResolvedReference
from atelier_context.styles import ProjectStyles
from atelier_contracts.jobs import (
    AssembledPrompt,
    ContextElement,
    ContextPreviewQuery,
    ContextPreviewReply,
    ElementImage,
    ExcludedImage,
    JobEnriched,
    JobRequested,
    ReferenceImagePreview,
    ReferenceImageRef,
)
from atelier_contracts.staging import StagedInput
from atelier_contracts.style import STYLE_ELEMENT_ID, AppliedStyle, ProjectStyle

log = logging.getLogger("atelier.context")


class Resolver(Protocol):
    async def resolve(
        self, element: ContextElement, project: str, inputs_prefix: str | None = None
    ) -> ResolvedReference: ...


class Store(Protocol):
    async def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None: ...

    async def remove_prefix(self, bucket: str, prefix: str) -> int: ...


class AssemblySource(AssemblyInput, Protocol):
    @property
    def project(self) -> str: ...

    @property
    def staged_context(self) -> StagedInput | None: ...


def references_prefix(job_id: str) -> str:
    """Where a job's reference images are staged; the trailing slash keeps job `ab` from
    matching job `abc`."""
    return f"refs/{job_id}/"


def reference_key(job_id: str, index: int, extension: str) -> str:
    return f"{references_prefix(job_id)}{index}.{extension}"


def _preview_of(reference: ResolvedReference) -> ReferenceImagePreview:
    """A reference image as it is sent: where it came from and its size after downscaling."""
    return ReferenceImagePreview(
        element_id=reference.element_id,
        source=reference.source,
        media_id=reference.media_id,
        content_type=reference.image.content_type,
        width=reference.image.width,
        height=reference.image.height,
        size_bytes=reference.image.size_bytes,
        style=reference.element_id == STYLE_ELEMENT_ID,
    )


@dataclass(frozen=True)
class Assembly:
    prompt: AssembledPrompt  # without reference images: those depend on staging
    sent: list[ResolvedReference]
    excluded: list[ExcludedImage]


@dataclass
class ContextService:
    resolver: Resolver
    store: Store
    staging_bucket: str
    max_elements: int = 4
    references_budget_s: float = 30.0
    inputs: StagedInputs | None = None
    styles: ProjectStyles | None = None
    # A staged context is read up to this size: the gateway's request body limit is below it.
    context_max_bytes: int = 16 * 1024 * 1024

    async def enrich_job(self, request: JobRequested) -> JobEnriched:
        """The request's prompt and reference images; a staged context is read first."""
        prefix = job_inputs_prefix(request.job_id)
        assembly = await self.assemble(await self._with_context(request, prefix), prefix)
        staged: list[ReferenceImageRef] = []
        for index, reference in enumerate(assembly.sent):
            image = reference.image
            key = reference_key(request.job_id, index, image.extension)
            # Same key on a redelivery: the object is simply written again.
            await self.store.put_bytes(self.staging_bucket, key, image.data, image.content_type)
            # What a preview shows of it, and where it was staged.
            staged.append(ReferenceImageRef(staging_key=key, **_preview_of(reference).model_dump()))
        assembled = assembly.prompt.model_copy(
            update={"reference_images": staged, "excluded_images": assembly.excluded}
        )
        return JobEnriched(job_id=request.job_id, project=request.project, assembled=assembled)

    async def discard_references(self, job_id: str) -> int:
        """Delete the job's staged reference images (once it is final, nobody reads them again);
        how many there were. Idempotent: a second call finds none."""
        removed = await self.store.remove_prefix(self.staging_bucket, references_prefix(job_id))
        if removed:
            log.info("staged reference images deleted", extra={"job_id": job_id, "count": removed})
        return removed

    async def discard_staged_context(self, request: JobRequested) -> None:
        """Delete the request's staged context once `jobs.enriched` is stored: nothing reads it
        again (a redelivery that finds it gone knows the job was enriched, see the handler)."""
        if request.staged_context is not None and self.inputs is not None:
            await self.inputs.discard_object(request.staged_context.key)

    async def _with_context(self, source: _Source, prefix: str) -> _Source:
        """`source` with its context read from staging when it was staged; raises
        `StagedInputProblem` (`StagedInputMissing` when it is gone)."""
        staged = source.staged_context
        if staged is None:
            return source
        if self.inputs is None:
            raise RuntimeError("a staged context arrived, and no staged inputs are configured")
        context = await self.inputs.load_context(staged, prefix, max_bytes=self.context_max_bytes)
        return source.model_copy(update={"context": context})

    async def preview(self, query: ContextPreviewQuery) -> ContextPreviewReply:
        """What a request would send. Its staged inputs (`previews/<id>/`) are deleted once it
        is answered, whatever the answer."""
        prefixes = {
            prefix
            for staged in _staged_inputs(query)
            if (prefix := preview_prefix_of(staged)) is not None
        }
        try:
            return await self._preview(query, next(iter(prefixes)) + "in/" if prefixes else None)
        finally:
            if self.inputs is not None:
                for prefix in prefixes:
                    await self.inputs.discard(prefix)

    async def _preview(self, query: ContextPreviewQuery, prefix: str | None) -> ContextPreviewReply:
        if prefix is not None:
            query = await self._with_context(query, prefix)
        elif query.staged_context is not None:
            raise ValueError("a preview's staged context must be in a preview slot")
        assembly = await self.assemble(query, prefix)
        return ContextPreviewReply(
            prompt=assembly.prompt.prompt,
            negative_prompt=assembly.prompt.negative_prompt,
            elements_used=assembly.prompt.elements_used,
            notes=assembly.prompt.notes,
            reference_images=[_preview_of(reference) for reference in assembly.sent],
            excluded_images=assembly.excluded,
            style=assembly.prompt.style,
        )

    async def assemble(self, source: AssemblySource, inputs_prefix: str | None = None) -> Assembly:
        sent, excluded = await self._reference_images(source, inputs_prefix)
        style = await self._style_of(source)
        style_sent, style_excluded = await self._style_images(source, style, len(sent))
        prompt = assemble_prompt(
            source,
            self.max_elements,
            image_element_ids={r.element_id for r in sent},
            style_text=style.text if style else "",
            style_images=len(style_sent),
        )
        prompt = prompt.model_copy(
            update={"style": _applied_style(source, style, prompt.style, style_sent)}
        )
        return Assembly(prompt, sent + style_sent, excluded + style_excluded)

    async def _style_of(self, source: AssemblySource) -> ProjectStyle | None:
        """The project's style to apply; None when the request leaves it out or there is none."""
        if self.styles is None or not source.apply_style:
            return None
        style = await self.styles.get(source.project)
        return style if style.version > 0 else None

    async def _style_images(
        self, source: AssemblySource, style: ProjectStyle | None, already: int
    ) -> tuple[list[ResolvedReference], list[ExcludedImage]]:
        """The style's pictures, after the elements' own, as far as the profile takes them."""
        sent: list[ResolvedReference] = []
        excluded: list[ExcludedImage] = []
        if style is None:
            return sent, excluded
        profile = source.profile
        for media_id in style.reference_media_ids:

            def exclude(reason: str, media_id: str = media_id) -> None:
                excluded.append(
                    ExcludedImage(
                        element_id=STYLE_ELEMENT_ID, reason=reason, media_id=media_id, style=True
                    )
                )

            if profile.max_reference_images == 0:
                exclude(f"{profile.name} takes no reference images.")
            elif already + len(sent) >= profile.max_reference_images:
                exclude(
                    f"Over the maximum: {profile.name} takes at most "
                    f"{profile.max_reference_images} reference images; the elements' own "
                    "come first."
                )
            else:
                element = ContextElement(
                    id=STYLE_ELEMENT_ID,
                    name="project style",
                    image=ElementImage(media_id=media_id),
                )
                try:
                    async with asyncio.timeout(self.references_budget_s):
                        sent.append(await self.resolver.resolve(element, source.project))
                except ReferenceProblem as problem:
                    exclude(problem.reason)
                except TimeoutError:
                    exclude("Fetching the image took too long; it was not sent.")
        return sent, excluded

    async def _reference_images(
        self, source: AssemblySource, inputs_prefix: str | None
    ) -> tuple[list[ResolvedReference], list[ExcludedImage]]:
        """The images to send, in element order, and every image not sent with its reason."""
        profile = source.profile
        maximum = profile.max_reference_images
        elements = source.context.elements
        excluded: list[ExcludedImage] = []
        sent: list[ResolvedReference] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.references_budget_s

        def exclude(element: ContextElement, reason: str) -> None:
            excluded.append(ExcludedImage(element_id=element.id, reason=reason))

        for position, element in enumerate(elements):
            if element.image is None:
                continue
            if position >= self.max_elements:
                exclude(element, f"Only the first {self.max_elements} elements are used.")
            elif not element.send.image:
                exclude(element, "Not sent: the image is switched off for this element.")
            elif maximum == 0:
                exclude(element, f"{profile.name} takes no reference images.")
            elif len(sent) >= maximum:
                plural = "image" if maximum == 1 else "images"
                exclude(
                    element,
                    f"Over the maximum: {profile.name} takes at most {maximum} reference {plural}.",
                )
            else:
                remaining = deadline - loop.time()
                try:
                    if remaining <= 0:
                        raise TimeoutError
                    async with asyncio.timeout(remaining):
                        sent.append(
                            await self.resolver.resolve(element, source.project, inputs_prefix)
                        )
                except ReferenceProblem as problem:
                    exclude(element, problem.reason)
                except TimeoutError:
                    exclude(element, "Fetching the image took too long; it was not sent.")
        if excluded:
            log.info(
                "reference images not sent",
                extra={"excluded": [e.model_dump() for e in excluded], "sent": len(sent)},
            )
        return sent, excluded


_Source = TypeVar("_Source", JobRequested, ContextPreviewQuery)

LEFT_OUT_NOTE = "The project style was left out on request."


def _applied_style(
    source: AssemblySource,
    style: ProjectStyle | None,
    span: AppliedStyle | None,
    sent: list[ResolvedReference],
) -> AppliedStyle | None:
    """Where the style went: its words' place in the prompt and the images sent (ADR 0024)."""
    if not source.apply_style:
        return AppliedStyle(version=0, applied=False, note=LEFT_OUT_NOTE)
    if style is None:
        return None
    span = span or AppliedStyle(version=0, applied=False)
    media_ids = [r.media_id for r in sent if r.media_id]
    return span.model_copy(
        update={
            "version": style.version,
            "applied": span.applied or bool(media_ids),
            "reference_media_ids": media_ids,
        }
    )


def _staged_inputs(source: JobRequested | ContextPreviewQuery) -> list[StagedInput]:
    staged = [e.image.staged for e in source.context.elements if e.image and e.image.staged]
    return [source.staged_context, *staged] if source.staged_context else staged
