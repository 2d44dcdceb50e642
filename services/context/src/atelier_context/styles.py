"""Each project's style (ADR 0024): kept in a JetStream key-value bucket, one key a project.

Context owns it because context applies it; it has no database, and the bucket gives what a
style needs: durable, replicated like the streams, and a compare-and-set on the key's revision,
so two writers of the same version cannot both win. The version a writer sees is the style's
own counter (1 for the first write), kept in the value.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError

from atelier_context.references import MediaUnavailable
from atelier_contracts.errors import Conflict, InvalidInput, Unavailable
from atelier_contracts.media import MediaReply
from atelier_contracts.style import ProjectStyle, StylePutCommand

log = logging.getLogger("atelier.context.styles")

MediaLookup = Callable[[str], Awaitable[MediaReply]]


class StyleEntry(Protocol):
    @property
    def value(self) -> bytes | None: ...
    @property
    def revision(self) -> int | None: ...


class StyleBucket(Protocol):
    """The part of a nats-py `KeyValue` the styles use (tests may hand in an in-memory one)."""

    async def get(self, key: str) -> StyleEntry: ...
    async def create(self, key: str, value: bytes) -> int: ...
    async def update(self, key: str, value: bytes, last: int | None = None) -> int: ...


class ProjectStyles:
    def __init__(self, bucket: Callable[[], Awaitable[StyleBucket]], media: MediaLookup) -> None:
        self._bucket = bucket
        self._media = media

    async def _read(self, project: str) -> tuple[ProjectStyle, int | None]:
        """The stored style and its key revision; an empty version 0 when there is none."""
        try:
            entry = await (await self._bucket()).get(project)
        except (KeyNotFoundError, KeyDeletedError):
            return ProjectStyle(project=project), None
        if not entry.value:
            return ProjectStyle(project=project), entry.revision
        return ProjectStyle.model_validate_json(entry.value), entry.revision

    async def get(self, project: str) -> ProjectStyle:
        return (await self._read(project))[0]

    async def put(self, command: StylePutCommand) -> ProjectStyle:
        """Store the style as the next version; `Conflict` when `expected_version` is not the
        stored one (somebody wrote in between), `InvalidInput` for an image that is not in the
        project's library."""
        media_ids = list(dict.fromkeys(command.reference_media_ids))  # once each, in order
        if len(media_ids) != len(command.reference_media_ids):
            raise InvalidInput("reference_media_ids names an image twice.", code="invalid_input")
        for media_id in media_ids:
            await self._check_image(command.project, media_id)
        current, revision = await self._read(command.project)
        if current.version != command.expected_version:
            raise _stale(current)
        style = ProjectStyle(
            project=command.project,
            text=" ".join(command.text.split()),
            reference_media_ids=media_ids,
            version=current.version + 1,
            updated_at=datetime.now(UTC),
            updated_by=command.user_id,
        )
        bucket = await self._bucket()
        value = style.model_dump_json().encode()
        try:
            if revision is None:
                await bucket.create(command.project, value)
            else:
                await bucket.update(command.project, value, last=revision)
        except KeyWrongLastSequenceError as exc:  # another write won between read and write
            raise _stale(await self.get(command.project)) from exc
        log.info(
            "project style written",
            extra={"project": command.project, "version": style.version},
        )
        return style

    async def _check_image(self, project: str, media_id: str) -> None:
        try:
            reply = await self._media(media_id)
        except MediaUnavailable as exc:
            raise Unavailable(
                "The media library is not answering, so the style's images cannot be checked; "
                "try again shortly."
            ) from exc
        if reply.media is None or reply.media.project != project:
            raise InvalidInput(
                f"Image {media_id!r} is not in this project's media library.",
                code="style_image_unknown",
            )


def _stale(current: ProjectStyle) -> Conflict:
    return Conflict(
        f"The style was changed meanwhile (it is at version {current.version}); reload it and "
        "apply your change again.",
        code="style_version_stale",
    )
