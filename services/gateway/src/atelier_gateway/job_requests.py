"""A job as the gateway hands it on: its id, the `jobs.requested` event, and what tells a keyed
retry from a different request reusing the key (`Idempotency-Key`)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable
from typing import Any
from uuid import UUID, uuid4, uuid5

from atelier_contracts.errors import InvalidInput
from atelier_contracts.jobs import FallbackPlan, JobRequested, JobStatus, JobView, Target
from atelier_contracts.profiles import ProfileSnapshot
from atelier_gateway.models import GenerationAccepted, GenerationRequestBody, Links
from atelier_gateway.validation import ResolvedRequest

IDEMPOTENCY_KEY_MAX_LENGTH = 200

# Job ids end up as a NATS subject token: anything else cannot be a job of ours.
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


class JobIds:
    """Job ids no one can predict, and that tell whether a user could have made them.

    A job id is a UUID (version 8) of two halves: 64 bits that are random, or, for an
    `Idempotency-Key`, an HMAC of the user and the key (the same every time this user sends it,
    unguessable without the secret, unlike the `uuid5` of user and key this replaced); then 62
    bits of an HMAC of the user and the first half. `made_for` checks the second half, so the
    gateway knows an id it made for this user without asking anyone, and waits for dispatch to
    record only those (`GatewayService._find_job`).

    The secret (`ATELIER_GATEWAY_JOB_ID_SECRET`, else the JWT secret) must be the same on every
    gateway replica; changing it gives keyed retries new job ids.
    """

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def _mac(self, *parts: str | bytes) -> bytes:
        message = b"".join(
            f"{len(raw)}:".encode() + raw
            for raw in (p.encode() if isinstance(p, str) else p for p in parts)
        )
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _tag(self, user_id: str, first_half: bytes) -> bytes:
        tag = bytearray(self._mac("owner", user_id, first_half)[:8])
        tag[0] = (tag[0] & 0x3F) | 0x80  # RFC 9562 variant bits
        return bytes(tag)

    def new(self, user_id: str, idempotency_key: str | None) -> str:
        """A fresh id, or, for an `Idempotency-Key`, the same id every time this user sends it.

        The key is scoped to the user: two users choosing the same key get different jobs.
        """
        if idempotency_key is None:
            first = bytearray(secrets.token_bytes(8))
        else:
            if not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
                raise InvalidInput(
                    f"The Idempotency-Key header must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} "
                    "characters long.",
                    code="invalid_idempotency_key",
                )
            first = bytearray(self._mac("idempotency-key", user_id, idempotency_key)[:8])
        first[6] = (first[6] & 0x0F) | 0x80  # version 8: "custom"
        return str(UUID(bytes=bytes(first) + self._tag(user_id, bytes(first))))

    def made_for(self, user_id: str, job_id: str) -> bool:
        """Whether this gateway (any replica) made `job_id` for `user_id`."""
        try:
            raw = UUID(job_id).bytes
        except ValueError:
            return False
        return hmac.compare_digest(raw[8:], self._tag(user_id, raw[:8]))


def request_digest(request: GenerationRequestBody) -> str:
    """SHA-256 of the whole request as sent (canonical JSON; the size as it is matched), so a
    reused `Idempotency-Key` is compared on everything: options, context and target too."""
    shown = request.model_dump(mode="json")
    if request.apply_style:  # the default: digests of requests from before it stay the same
        shown.pop("apply_style", None)
    if request.size is not None:
        shown["size"] = request.size.strip().lower()
    canonical = json.dumps(shown, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def build_job_requested(
    resolved: ResolvedRequest,
    request: GenerationRequestBody,
    *,
    job_id: str,
    user_id: str,
    idempotency_key: str | None,
    fallbacks: Iterable[FallbackPlan] = (),
) -> JobRequested:
    return JobRequested(
        # For a keyed request, a retry that raced ahead of dispatch recording the job publishes
        # the same event id, which JetStream drops as a duplicate inside its window.
        event_id=uuid5(UUID(job_id), "jobs.requested") if idempotency_key else uuid4(),
        job_id=job_id,
        user_id=user_id,
        project=request.project,
        idempotency_key=idempotency_key,
        request_digest=request_digest(request),
        fallbacks=list(fallbacks),
        **resolved_fields(resolved, request),
    )


def resolved_fields(resolved: ResolvedRequest, request: GenerationRequestBody) -> dict[str, Any]:
    """What a job and a preview of it both carry: the validated request with the profile's
    defaults filled in, and the request's context, target and style switch as sent."""
    return {
        "profile": ProfileSnapshot.model_validate(resolved.profile, from_attributes=True),
        "prompt": resolved.prompt,
        "size": resolved.size,
        "count": resolved.count,
        "options": resolved.options,
        "context": request.context,
        "target": request.target,
        "apply_style": request.apply_style,
    }


def accepted(job_id: str, project: str, status: JobStatus) -> GenerationAccepted:
    return GenerationAccepted(
        id=job_id,
        status=status,
        project=project,
        links=Links.of_job(job_id),
    )


def same_request(job: JobView, request: GenerationRequestBody) -> bool:
    """Whether a recorded job is what this request asks for (an Idempotency-Key reuse check):
    the whole request, by its digest. A job recorded before jobs carried one is compared on
    every field it shows that the request sets as it is (its options are the resolved ones)."""
    if job.project != request.project:
        return False
    if job.request_digest is not None:
        return hmac.compare_digest(job.request_digest, request_digest(request))
    return (
        job.profile_id == request.profile_id
        and job.prompt == request.prompt
        and job.count == request.count
        and (request.size is None or job.size == request.size.strip().lower())
        and job.target.model_dump()
        == Target.model_validate(request.target.model_dump()).model_dump()
    )
