"""Turns the worldbuilding elements a writer picked into what the model is sent: the prompt
(`composition`) and the reference images (`references`, `images`, `ssrf`).

No broker and no HTTP here: the media lookup, the fetchers and the object store come in from
the composition root. A job's reference images are staged under `refs/<job_id>/<n>.<ext>` in
the staging bucket, so a redelivered `jobs.requested` writes the same keys again and publishes the
same `jobs.enriched`; once the job is final they are deleted (`discard_references`). A preview runs
the same assembly and stages nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from atelier_context.composition import AssemblyInput, assemble_prompt
from atelier_context.references import ReferenceProblem, ResolvedReference
from atelier_contracts.jobs import (
    AssembledPrompt,
    ContextElement,
    ContextPreviewQuery,
    ContextPreviewReply,
    ExcludedImage,
    JobEnriched,
    JobRequested,
    ReferenceImagePreview,
    ReferenceImageRef,
)

log = logging.getLogger("atelier.context")


class Resolver(Protocol):
    async def resolve(self, element: ContextElement, project: str) -> ResolvedReference: ...


class Store(Protocol):
    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> None: ...

    async def remove_prefix(self, bucket: str, prefix: str) -> int: ...


class AssemblySource(AssemblyInput, Protocol):
    @property
    def project(self) -> str: ...


def references_prefix(job_id: str) -> str:
    """Where a job's reference images are staged; the trailing slash keeps job `ab` from
    matching job `abc`."""
    return f"refs/{job_id}/"


def reference_key(job_id: str, index: int, extension: str) -> str:
    return f"{references_prefix(job_id)}{index}.{extension}"


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

    async def enrich_job(self, request: JobRequested) -> JobEnriched:
        assembly = await self.assemble(request)
        staged: list[ReferenceImageRef] = []
        for index, reference in enumerate(assembly.sent):
            image = reference.image
            key = reference_key(request.job_id, index, image.extension)
            # Same key on a redelivery: the object is simply written again.
            await self.store.put_bytes(self.staging_bucket, key, image.data, image.content_type)
            staged.append(
                ReferenceImageRef(
                    staging_key=key,
                    content_type=image.content_type,
                    width=image.width,
                    height=image.height,
                    size_bytes=image.size_bytes,
                    element_id=reference.element_id,
                    source=reference.source,
                    media_id=reference.media_id,
                )
            )
        assembled = assembly.prompt.model_copy(
            update={"reference_images": staged, "excluded_images": assembly.excluded}
        )
        return JobEnriched(request=request, assembled=assembled)

    async def discard_references(self, job_id: str) -> int:
        """Delete the job's staged reference images (once it is final, nobody reads them again);
        how many there were. Idempotent: a second call finds none."""
        removed = await self.store.remove_prefix(self.staging_bucket, references_prefix(job_id))
        if removed:
            log.info("staged reference images deleted", extra={"job_id": job_id, "count": removed})
        return removed

    async def preview(self, query: ContextPreviewQuery) -> ContextPreviewReply:
        assembly = await self.assemble(query)
        return ContextPreviewReply(
            prompt=assembly.prompt.prompt,
            negative_prompt=assembly.prompt.negative_prompt,
            elements_used=assembly.prompt.elements_used,
            notes=assembly.prompt.notes,
            reference_images=[
                ReferenceImagePreview(
                    element_id=reference.element_id,
                    source=reference.source,
                    media_id=reference.media_id,
                    content_type=reference.image.content_type,
                    width=reference.image.width,
                    height=reference.image.height,
                    size_bytes=reference.image.size_bytes,
                )
                for reference in assembly.sent
            ],
            excluded_images=assembly.excluded,
        )

    async def assemble(self, source: AssemblySource) -> Assembly:
        sent, excluded = await self._reference_images(source)
        prompt = assemble_prompt(
            source, self.max_elements, image_element_ids={r.element_id for r in sent}
        )
        return Assembly(prompt, sent, excluded)

    async def _reference_images(
        self, source: AssemblySource
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
                        sent.append(await self.resolver.resolve(element, source.project))
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
