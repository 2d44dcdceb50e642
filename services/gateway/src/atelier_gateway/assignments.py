"""Use this image: choosing a landed image as the project's cover or an element's image.

The gateway owns no data here either: a choice becomes one durable `media.assigned` event
(stored by JetStream before the `202`), which media records, newest choice per slot winning; the
project's current choices are a request to media. Access is checked the way every media route
checks it: an image or project the token does not grant is `404`, like one that does not exist.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from atelier_contracts.errors import NotFound
from atelier_contracts.media import MediaAssigned, ProjectAssignmentsReply
from atelier_gateway.auth import User
from atelier_gateway.backends import not_answering
from atelier_gateway.models import AssignBody
from atelier_gateway.service import GatewayService


@runtime_checkable
class MediaAssignments(Protocol):
    async def publish_media_assigned(self, event: MediaAssigned) -> None: ...
    async def project_assignments(self, project: str) -> ProjectAssignmentsReply: ...


def _assignments_of(service: GatewayService) -> MediaAssignments:
    backends = service.backends
    if not isinstance(backends, MediaAssignments):
        raise not_answering("media")
    return backends


async def assign_media(
    service: GatewayService, user: User, media_id: str, body: AssignBody
) -> MediaAssigned:
    """Publish the choice for the image's own project; returns once JetStream stored it."""
    reply = await service.media(user, media_id)  # 404 when unknown or not granted
    assert reply.media is not None  # service.media raised otherwise
    event = MediaAssigned(
        media_id=reply.media.id,
        project=reply.media.project,
        target=body.target,
        element_id=body.element_id,
        assigned_by=user.id,
    )
    await _assignments_of(service).publish_media_assigned(event)
    return event


async def project_assignments(
    service: GatewayService, user: User, project: str
) -> ProjectAssignmentsReply:
    if not user.is_granted(project):
        raise NotFound(f"There is no project {project!r}.")
    reply = await _assignments_of(service).project_assignments(project)
    # Defence in depth, as for the media listing: nothing of another project is shown.
    return ProjectAssignmentsReply(
        cover=reply.cover if reply.cover and reply.cover.project == project else None,
        elements={k: v for k, v in reply.elements.items() if v.project == project},
    )
