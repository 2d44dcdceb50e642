"""The Inkweld routes' NATS clients: profiles' admin commands and audit reads, media's files.

Profiles: the same service methods the admin API calls answer them (`profiles.command.*`,
`profiles.query.audits`, `profiles.query.audit_summary`; docs/adr/0008-inkweld-facade.md). A
refusal comes back as `error` and is raised here as the `AtelierError` the admin API would have
answered; no answer at all is a 503 naming profiles, like every other query of the gateway.

Media's project files (`media.command.upload_slot` / `store_file` / `mark_delivered`,
`media.query.files` / `file`): refusals stay in the replies (the caller raises
`reply.error.to_error()`); no answer is a 503 naming media.
"""

from __future__ import annotations

import logging
from typing import TypeVar

from faststream.nats import NatsBroker
from pydantic import BaseModel

from atelier_contracts.media import (
    MarkDeliveredCommand,
    MarkDeliveredReply,
    ProjectFile,
    ProjectFileQuery,
    ProjectFileReply,
    ProjectFilesQuery,
    ProjectFilesReply,
    StoreFileCommand,
    StoreFileReply,
    UploadSlotReply,
    UploadSlotRequest,
)
from atelier_contracts.profiles import (
    AuditFilterQuery,
    AuditListQuery,
    AuditPageReply,
    AuditSummaryReply,
    Profile,
    ProfileCommandReply,
    ProfileCreateCommand,
    ProfileDeleteCommand,
    ProfileFields,
    ProfileQuery,
    ProfileReplaceCommand,
    ProfileReply,
)
from atelier_contracts.subjects import Subject
from atelier_gateway.backends import ask

log = logging.getLogger("atelier.gateway.inkweld")

R = TypeVar("R", bound=BaseModel)


class ProfilesAdmin:
    def __init__(self, broker: NatsBroker, *, query_timeout_s: float = 3.0) -> None:
        self._broker = broker
        self._timeout = query_timeout_s

    async def _ask(self, subject: Subject, request: BaseModel, reply_type: type[R]) -> R:
        # No answer to a command may also mean "done, but the answer was lost": the admin
        # re-reads before trying again (a second create is refused as a name conflict).
        return await ask(self._broker, "profiles", subject, request, reply_type, self._timeout)

    async def _command(self, subject: Subject, command: BaseModel) -> Profile | None:
        reply = await self._ask(subject, command, ProfileCommandReply)
        if reply.error is not None:
            raise reply.error.to_error()
        return reply.profile

    async def profile(self, profile_id: str) -> Profile | None:
        reply = await self._ask(
            Subject.PROFILES_GET, ProfileQuery(profile_id=profile_id), ProfileReply
        )
        return reply.profile

    async def create_profile(self, fields: ProfileFields, requested_by: str) -> Profile:
        command = ProfileCreateCommand(fields=fields, requested_by=requested_by)
        profile = await self._command(Subject.PROFILES_CREATE, command)
        assert profile is not None, "profiles answered a create without the profile"
        return profile

    async def replace_profile(
        self, profile_id: str, fields: ProfileFields, requested_by: str
    ) -> Profile:
        command = ProfileReplaceCommand(
            profile_id=profile_id, fields=fields, requested_by=requested_by
        )
        profile = await self._command(Subject.PROFILES_REPLACE, command)
        assert profile is not None, "profiles answered a change without the profile"
        return profile

    async def delete_profile(self, profile_id: str, requested_by: str) -> None:
        command = ProfileDeleteCommand(profile_id=profile_id, requested_by=requested_by)
        await self._command(Subject.PROFILES_DELETE, command)

    async def audits(self, filters: AuditListQuery) -> AuditPageReply:
        reply = await self._ask(Subject.AUDITS_LIST, filters, AuditPageReply)
        if reply.error is not None:
            raise reply.error.to_error()
        return reply

    async def audit_summary(self, filters: AuditFilterQuery) -> AuditSummaryReply:
        reply = await self._ask(Subject.AUDITS_SUMMARY, filters, AuditSummaryReply)
        if reply.error is not None:
            raise reply.error.to_error()
        return reply


# Storing reads the upload (up to 50 MB) from object storage, hashes and decodes it, and writes it
# back: far longer than a lookup.
STORE_FILE_TIMEOUT_S = 60.0
# The most `media.query.files` answers per page.
_FILES_PAGE = 1000
_MARK_BATCH = 16


class ProjectFiles:
    """Media's project files: where to PUT an upload, storing it, listing and reading files."""

    def __init__(
        self,
        broker: NatsBroker,
        *,
        query_timeout_s: float = 3.0,
        store_timeout_s: float = STORE_FILE_TIMEOUT_S,
    ) -> None:
        self._broker = broker
        self._timeout = query_timeout_s
        self._store_timeout = store_timeout_s

    async def _ask(
        self,
        subject: Subject,
        request: BaseModel,
        reply_type: type[R],
        timeout_s: float | None = None,
    ) -> R:
        # No answer to a store may also mean "stored, but the answer was lost": the app uploads
        # again (into a new slot), and a file stored under the same name is replaced.
        return await ask(
            self._broker, "media", subject, request, reply_type, timeout_s or self._timeout
        )

    async def upload_slot(self, project: str) -> UploadSlotReply:
        """A staging key and a presigned PUT URL for it (short-lived)."""
        return await self._ask(
            Subject.MEDIA_UPLOAD_SLOT, UploadSlotRequest(project=project), UploadSlotReply
        )

    async def store_file(self, command: StoreFileCommand) -> StoreFileReply:
        """Store what was PUT into a slot; a refusal is in `error` (the slot is used up)."""
        return await self._ask(
            Subject.MEDIA_STORE_FILE, command, StoreFileReply, self._store_timeout
        )

    async def files(self, project: str) -> list[ProjectFile]:
        """Every file of the project, by name (as many pages as it takes)."""
        files: list[ProjectFile] = []
        while True:
            page = await self._ask(
                Subject.MEDIA_FILES,
                ProjectFilesQuery(project=project, limit=_FILES_PAGE, offset=len(files)),
                ProjectFilesReply,
            )
            files.extend(page.files)
            if not page.files or len(files) >= page.total:
                return files

    async def file(self, project: str, filename: str) -> ProjectFileReply:
        """One file and a short-lived URL of its bytes; both None when there is no such file."""
        return await self._ask(
            Subject.MEDIA_FILE,
            ProjectFileQuery(project=project, filename=filename),
            ProjectFileReply,
        )

    async def mark_delivered(self, project: str, media_ids: list[str]) -> int:
        """Mark images as handed to the app; how many were newly marked."""
        marked = 0
        # A command names at most 16 images (one synchronous generation's worth).
        for start in range(0, len(media_ids), _MARK_BATCH):
            reply = await self._ask(
                Subject.MEDIA_MARK_DELIVERED,
                MarkDeliveredCommand(
                    project=project, media_ids=media_ids[start : start + _MARK_BATCH]
                ),
                MarkDeliveredReply,
            )
            marked += reply.marked
        return marked
