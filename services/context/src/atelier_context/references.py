"""Where an element's picture comes from, and how its bytes are had.

Three sources (`ElementImage`): a media id of the same project (asked of the media service, then
read from the presigned URL it hands out), a data URL, or a web URL (only through the SSRF guard).
A data URL arrives staged: the gateway decoded it and wrote the bytes to the staging bucket
(`staged`, ADR 0017; `inputs`); an inline `data_url` is still read, from older publishers.
Whatever the source, the bytes then go through the same checks (`images.prepare_reference`).
Every failure is a `ReferenceProblem` whose reason is shown to the writer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import httpx

from atelier_context.images import (
    ImageLimits,
    ImageRejected,
    PreparedImage,
    check_byte_size,
    prepare_reference,
)
from atelier_context.inputs import StagedInputProblem, StagedInputs
from atelier_contracts.jobs import ContextElement
from atelier_contracts.media import MediaReply
from atelier_security.ssrf import FetchError, GuardedFetcher, read_capped

Source = Literal["media", "url", "data_url"]
MediaLookup = Callable[[str], Awaitable[MediaReply]]


class ReferenceProblem(Exception):
    """An element's image cannot be sent; `reason` is written for the writer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MediaUnavailable(Exception):
    """The media service did not answer a lookup (raised by the injected `MediaLookup`)."""


@dataclass(frozen=True)
class ResolvedReference:
    element_id: str
    source: Source
    media_id: str | None
    image: PreparedImage


def decode_data_url(url: str, limits: ImageLimits) -> bytes:
    """`data:image/png;base64,...` → bytes; the size is checked before decoding."""
    header, comma, payload = url.partition(",")
    if not comma or not header[:5].lower() == "data:":
        raise ReferenceProblem("The data URL is malformed.")
    media_type, *params = header[5:].split(";")
    if "base64" not in (p.strip().lower() for p in params):
        raise ReferenceProblem("Only base64 data URLs are accepted.")
    if media_type.strip() and not media_type.strip().lower().startswith("image/"):
        raise ReferenceProblem("The data URL does not hold an image.")
    payload = "".join(payload.split())
    try:
        check_byte_size(len(payload) * 3 // 4, limits)
    except ImageRejected as exc:
        raise ReferenceProblem(exc.reason) from exc
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReferenceProblem("The data URL's base64 content is damaged.") from exc


class StorageFetcher:
    """Reads bytes from a presigned URL of Atelier's own object storage.

    Not through the SSRF guard: the media service made the URL and it points at our storage,
    which is on a private address by design. The size and time limits still apply.
    """

    def __init__(self, client: httpx.AsyncClient, max_bytes: int) -> None:
        self._client = client
        self._max_bytes = max_bytes

    async def fetch(self, url: str) -> bytes:
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ReferenceProblem(
                        "The media library could not hand out this image's bytes "
                        f"(HTTP {response.status_code})."
                    )
                return await read_capped(response, self._max_bytes)
        except FetchError as exc:
            raise ReferenceProblem(exc.reason) from exc
        except httpx.HTTPError as exc:
            raise ReferenceProblem(
                "The media library's storage could not be reached; the image was not sent."
            ) from exc


class ReferenceResolver:
    def __init__(
        self,
        *,
        media_lookup: MediaLookup,
        storage: StorageFetcher,
        guarded: GuardedFetcher,
        limits: ImageLimits,
        staged: StagedInputs | None = None,
    ) -> None:
        self._media_lookup = media_lookup
        self._storage = storage
        self._guarded = guarded
        self._staged = staged
        self.limits = limits

    async def resolve(
        self, element: ContextElement, project: str, inputs_prefix: str | None = None
    ) -> ResolvedReference:
        """The element's image, checked and prepared for the model, or `ReferenceProblem`.
        A staged image is read only from under `inputs_prefix`, the request's own slots."""
        image = element.image
        if image is None:
            raise ReferenceProblem("The element has no image.")
        source: Source
        if image.media_id:
            source, data = "media", await self._from_media(image.media_id, project)
        elif image.staged:
            source = "data_url"  # what the writer sent; staging is how it travelled
            if self._staged is None or inputs_prefix is None:
                raise ReferenceProblem("The picture was not staged for this request.")
            try:
                # The size as declared, before anything is read: the same limit as ever.
                check_byte_size(image.staged.size_bytes, self.limits)
                data = await self._staged.read(
                    image.staged, inputs_prefix, max_bytes=self.limits.max_bytes
                )
            except ImageRejected as exc:
                raise ReferenceProblem(exc.reason) from exc
            except StagedInputProblem as exc:
                raise ReferenceProblem(exc.reason) from exc
        elif image.data_url:
            source, data = "data_url", decode_data_url(image.data_url, self.limits)
        elif image.withheld:  # only for a switched-off picture, which is never resolved
            raise ReferenceProblem("Not sent: the image is switched off for this element.")
        else:
            assert image.url  # ElementImage holds exactly one of the three
            source = "url"
            try:
                data = (await self._guarded.fetch(image.url)).data
            except FetchError as exc:
                raise ReferenceProblem(exc.reason) from exc
        try:
            prepared = await asyncio.to_thread(prepare_reference, data, self.limits)
        except ImageRejected as exc:
            raise ReferenceProblem(exc.reason) from exc
        return ResolvedReference(element.id, source, image.media_id, prepared)

    async def _from_media(self, media_id: str, project: str) -> bytes:
        try:
            reply = await self._media_lookup(media_id)
        except MediaUnavailable as exc:
            raise ReferenceProblem(
                "The media library did not answer in time; the image was not sent."
            ) from exc
        if reply.media is None:
            raise ReferenceProblem("There is no image with this id in the media library.")
        if reply.media.project != project:
            # Another project's picture must not leak into this one's generation.
            raise ReferenceProblem(
                "This image belongs to another project; only this project's images are sent."
            )
        if not reply.content_url:
            raise ReferenceProblem("The media library gave no address for this image.")
        return await self._storage.fetch(reply.content_url)
