"""Request inputs by reference (the claim check, ADR 0017).

Pictures a request carries as data URLs are decoded here and written to the staging bucket,
and so is the request's context when its JSON is larger than `context_inline_max_bytes`;
`jobs.requested` and `context.query.preview` then carry object keys, never image bytes. The
gateway holds no storage credentials (ADR 0004): the context service, which owns these objects,
hands out presigned PUT URLs (`context.command.input_slots`, one request for all of a request's
inputs), and reads and deletes them. A request with nothing to stage costs nothing extra.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass
from typing import Protocol, TypeVar

from atelier_contracts.errors import AtelierError, InvalidInput, Unavailable
from atelier_contracts.jobs import (
    ContextElement,
    ContextPreviewQuery,
    ElementImage,
    GenerationContext,
    JobRequested,
)
from atelier_contracts.staging import InputSlotsReply, InputSlotsRequest, StagedInput

log = logging.getLogger("atelier.gateway.staging")

# Small contexts travel inline: the common job pays no S3 request for them.
CONTEXT_INLINE_MAX_BYTES = 32 * 1024


class InputSlots(Protocol):
    async def input_slots(self, request: InputSlotsRequest) -> InputSlotsReply: ...


class Uploader(Protocol):
    async def put_bytes(self, url: str, data: bytes, content_type: str) -> None: ...


class StagingUnavailable(Unavailable):
    """503: the request's inputs could not be staged; nothing was queued."""

    code = "staging_unavailable"


@dataclass(frozen=True)
class _Upload:
    data: bytes
    content_type: str

    def describe(self, key: str) -> StagedInput:
        return StagedInput(
            key=key,
            size_bytes=len(self.data),
            sha256=hashlib.sha256(self.data).hexdigest(),
            content_type=self.content_type,
        )


def decode_data_url(element_id: str, data_url: str) -> _Upload:
    """A `data:image/...;base64,` URL's bytes and media type; anything else is a 422 naming the
    element (a picture that cannot be read is refused here, before anything is stored)."""
    header, comma, payload = data_url.partition(",")
    media_type, *params = header[5:].split(";") if header[:5].lower() == "data:" else ("", "")
    media_type = media_type.strip().lower() or "image/png"
    problem = None
    if not comma or header[:5].lower() != "data:":
        problem = "is not a data URL"
    elif "base64" not in (p.strip().lower() for p in params):
        problem = "is not base64 (only base64 data URLs are accepted)"
    elif not media_type.startswith("image/"):
        problem = "does not hold an image"
    if problem is None:
        try:
            return _Upload(base64.b64decode("".join(payload.split()), validate=True), media_type)
        except (binascii.Error, ValueError):
            problem = "has damaged base64 content"
    raise InvalidInput(
        f"The picture of element {element_id!r} {problem}; send a "
        "`data:image/png;base64,...` URL, or add it to the media library and send its media_id.",
        code="invalid_data_url",
    )


_Staged = TypeVar("_Staged", JobRequested, ContextPreviewQuery)


@dataclass
class InputStager:
    slots: InputSlots
    uploader: Uploader
    context_inline_max_bytes: int = CONTEXT_INLINE_MAX_BYTES

    async def stage_job(self, event: JobRequested) -> JobRequested:
        """The event with its pictures and (if large) its context staged under the job."""
        return await self._stage(event, event.job_id)

    async def stage_preview(self, query: ContextPreviewQuery) -> ContextPreviewQuery:
        """The same for a preview; context deletes what it staged once the preview is answered."""
        return await self._stage(query, None)

    async def _stage(self, message: _Staged, job_id: str | None) -> _Staged:
        pictures = any(e.image and e.image.data_url for e in message.context.elements)
        if not pictures and _json_size(message.context) <= self.context_inline_max_bytes:
            return message  # nothing to stage: no request to context, no upload
        # The contract's own models (the API's narrower ones refuse the event-only kinds).
        original = GenerationContext.model_validate(message.context.model_dump())
        elements: list[ContextElement] = []
        uploads: list[tuple[int, _Upload]] = []  # element position → bytes to stage
        for position, element in enumerate(original.elements):
            image = element.image
            if image is None or not image.data_url:
                elements.append(element)
            elif not element.send.image:
                # Never sent, so never stored; context still lists it as switched off.
                elements.append(element.model_copy(update={"image": ElementImage(withheld=True)}))
            else:
                uploads.append((position, decode_data_url(element.id, image.data_url)))
                elements.append(element)  # its image is set once its key is known

        # How large the context is once its pictures are keys (a key as long as the real one).
        placeholder = ElementImage(staged=_Upload(b"", "").describe(_longest_key(job_id)))
        sized = original.model_copy(
            update={"elements": _with_images(elements, {p: placeholder for p, _ in uploads})}
        )
        inline = _json_size(sized) <= self.context_inline_max_bytes
        count = len(uploads) + (0 if inline else 1)
        if count == 0:  # only switched-off pictures: withheld, nothing to store
            return message.model_copy(
                update={"context": original.model_copy(update={"elements": elements})}
            )

        reply = await self._slots(InputSlotsRequest(job_id=job_id, count=count))
        staged = {
            position: ElementImage(staged=upload.describe(slot.key))
            for (position, upload), slot in zip(uploads, reply.slots, strict=False)
        }
        puts = [
            self._put(slot.put_url, upload)
            for (_, upload), slot in zip(uploads, reply.slots, strict=False)
        ]
        context = original.model_copy(update={"elements": _with_images(elements, staged)})
        update: dict[str, object] = {"context": context}
        if not inline:
            slot = reply.slots[len(uploads)]
            upload = _Upload(context.model_dump_json().encode(), "application/json")
            puts.append(self._put(slot.put_url, upload))
            update = {"context": GenerationContext(), "staged_context": upload.describe(slot.key)}
        await asyncio.gather(*puts)
        log.info(
            "request inputs staged",
            extra={"job_id": job_id, "pictures": len(uploads), "context_inline": inline},
        )
        return message.model_copy(update=update)

    async def _slots(self, request: InputSlotsRequest) -> InputSlotsReply:
        try:
            reply = await self.slots.input_slots(request)
        except AtelierError as exc:
            raise StagingUnavailable(
                "The request's pictures could not be stored: the context service is not "
                "answering; try again shortly."
            ) from exc
        if len(reply.slots) != request.count:
            raise StagingUnavailable(
                "The request's pictures could not be stored; try again shortly."
            )
        return reply

    async def _put(self, url: str, upload: _Upload) -> None:
        try:
            await self.uploader.put_bytes(url, upload.data, upload.content_type)
        except AtelierError as exc:
            raise StagingUnavailable(
                "The request's pictures could not be stored: the staging store is not "
                "answering; try again shortly."
            ) from exc


def _json_size(context: GenerationContext) -> int:
    return len(context.model_dump_json().encode())


def _longest_key(job_id: str | None) -> str:
    return f"refs/{job_id}/in/16" if job_id else f"previews/{'0' * 32}/in/16"


def _with_images(
    elements: list[ContextElement], images: dict[int, ElementImage]
) -> list[ContextElement]:
    return [
        e.model_copy(update={"image": images[i]}) if i in images else e
        for i, e in enumerate(elements)
    ]
