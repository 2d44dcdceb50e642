"""Runs one generation task against one provider and writes the images where they stay.

No broker here: the handler hands in a task and publishes whatever comes back.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import httpx

from atelier_contracts.envelope import derived_event_id
from atelier_contracts.errors import BlockedInput, ErrorClass, ErrorInfo
from atelier_contracts.generation import (
    GenerationCompleted,
    GenerationFailed,
    GenerationTask,
    StagedImage,
    generated_image_key,
)
from atelier_contracts.providers import NETWORKLESS_PROVIDERS, PROVIDER_BASE_URLS
from atelier_security.origins import origin_of, refusal
from atelier_storage import ObjectStore
from atelier_workers.adapters.base import (
    CancellableAdapter,
    ImageRequest,
    InMemoryResumeStore,
    ProgressCallback,
    ProviderAdapter,
    ProviderError,
    ReferenceImage,
    ResumeStore,
)
from atelier_workers.credentials import ProviderCredentials
from atelier_workers.pacing import TokenBucket

log = logging.getLogger("atelier.workers")


def _parsers_disagree(url: str) -> str | None:
    """The origin was judged with urllib's parser; the request goes out through httpx's. Any
    difference between the two is refused rather than trusted."""
    try:
        parsed = httpx.URL(url)
        seen = origin_of(f"{parsed.scheme}://{parsed.netloc.decode('ascii')}")
    except (httpx.InvalidURL, ValueError, UnicodeDecodeError):
        return f"{url!r} is not a URL httpx reads the same way"
    if seen != origin_of(url):
        return f"{url!r} reads as {origin_of(url)} but would be sent to {seen}"
    return None


@dataclass
class WorkerService:
    adapter: ProviderAdapter
    store: ObjectStore
    staging_bucket: str
    client: httpx.AsyncClient
    # The key in use (never in repr); `credentials` refreshes it before each provider call.
    api_key: str | None = field(default=None, repr=False)
    credentials: ProviderCredentials | None = None
    # This worker's own request rate limit for its provider (None: only concurrency limits).
    limiter: TokenBucket | None = None
    # Origins the deployment allows this worker's keys to go to (ATELIER_WORKERS_ALLOWED_...),
    # besides the provider's own endpoint and what profiles names with the key.
    allowed_origins: frozenset[str] = frozenset()
    # Generated images go straight to their final place here; media verifies and records them.
    media_bucket: str = field(kw_only=True)

    async def refresh_api_key(self) -> None:
        """The key an admin stored in profiles (cached until it changes), else the worker's own."""
        if self.credentials is not None:
            self.api_key = await self.credentials.api_key()

    def approved_origins(self, provider: str) -> frozenset[str]:
        """Where the key in use may be sent: the provider's own endpoint and what operators
        allowed (with the stored credential, or in the deployment's settings)."""
        own = PROVIDER_BASE_URLS.get(provider)
        approved = set(self.allowed_origins)
        if own is not None:
            approved.add(origin_of(own))
        if self.credentials is not None:
            approved |= self.credentials.allowed_origins
        return frozenset(approved)

    def key_destination_refused(self, task: GenerationTask) -> ErrorInfo | None:
        """Why this task's provider calls may not carry the key (None: they may).

        Profiles refuses a base_url no operator approved; this is the second check, at the last
        moment, so a profile saved before that rule, or a forged task, never sends the key away.
        """
        provider = task.profile.provider
        if not self.api_key or provider in NETWORKLESS_PROVIDERS:
            return None  # no key to lose (or nothing is sent)
        target = task.profile.base_url or PROVIDER_BASE_URLS.get(provider)
        if target is None:
            return None  # a self-hosted server without base_url: the adapter refuses it
        reason = refusal(target, self.approved_origins(provider)) or _parsers_disagree(target)
        if reason is None:
            return None
        log.warning(
            "provider key withheld from an origin no operator approved",
            extra={"task_id": task.task_id, "provider": provider, "reason": reason},
        )
        return ErrorInfo(
            error_class=ErrorClass.INVALID_REQUEST,
            message="This profile's base_url is not approved for the provider's key; ask an "
            "admin to correct the profile, or an operator to allow that address.",
            detail=f"{reason}; the key was not sent. An operator allows an origin with the "
            f"credential (PUT /admin/v1/providers/{provider}/credentials, allowed_origins) or "
            "in ATELIER_PROFILES_ALLOWED_BASE_URL_ORIGINS",
        )

    def failed(self, task: GenerationTask, error: ErrorInfo) -> GenerationFailed:
        return GenerationFailed(
            event_id=derived_event_id(task.event_id, f"failed:{task.attempt}"),
            task=task,
            error=error,
        )

    def build_request(
        self,
        task: GenerationTask,
        timeout: float,
        resume: ResumeStore | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> ImageRequest:
        return ImageRequest(
            model=task.profile.model,
            prompt=task.prompt,
            size=task.size,
            n=task.n,
            options=task.options,
            seed=task.seed,
            negative_prompt=task.negative_prompt,
            base_url=task.profile.base_url,
            api_key=self.api_key,
            timeout_s=timeout,
            provider_config=task.profile.provider_config,
            resume=resume if resume is not None else InMemoryResumeStore(),
            on_progress=on_progress,
        )

    async def wait_for_rate_limit(self, budget_s: float) -> float:
        """Wait until the worker's own rate limit lets one more provider call through; the
        seconds waited. `rate_limited` (nothing taken) when the wait would use up `budget_s`:
        dispatch retries the task later rather than this worker holding it."""
        if self.limiter is None:
            return 0.0
        wait = self.limiter.reserve()
        if wait >= budget_s:
            self.limiter.release()
            raise ProviderError.of(
                ErrorClass.RATE_LIMITED,
                f"the worker's own request rate limit would make this call wait {wait:.0f} s",
                retry_after_s=wait,
            )
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                self.limiter.release()
                raise
        return wait

    async def cancel_at_provider(self, task: GenerationTask, resume: ResumeStore) -> bool:
        """Ask the provider to stop a job it accepted, where it has a cancel endpoint."""
        if not isinstance(self.adapter, CancellableAdapter):
            return False
        handle = await resume.load()
        if handle is None:
            return False
        try:
            await self.refresh_api_key()
            if self.key_destination_refused(task) is not None:
                return False
            await self.adapter.cancel(self.build_request(task, 30.0), handle, self.client)
            return True
        except Exception:
            log.warning("provider cancel failed", extra={"task_id": task.task_id}, exc_info=True)
            return False

    async def run_task(
        self,
        task: GenerationTask,
        resume: ResumeStore | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> GenerationCompleted | GenerationFailed:
        remaining = (task.deadline_at - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            return self.failed(task, ErrorInfo.of(ErrorClass.TIMEOUT, "deadline passed in queue"))
        try:
            waited = await self.wait_for_rate_limit(remaining)
        except ProviderError as exc:
            return self.failed(task, exc.info)
        timeout = min(task.profile.timeout_s, remaining - waited)
        await self.refresh_api_key()
        refused = self.key_destination_refused(task)
        if refused is not None:
            return self.failed(task, refused)
        request = self.build_request(task, timeout, resume, on_progress)
        if task.reference_images:
            # Staged by the context service (validated, downscaled); the adapter gets the bytes.
            references = [
                ReferenceImage(
                    data=await self.store.get_bytes(self.staging_bucket, ref.staging_key),
                    content_type=ref.content_type,
                    width=ref.width,
                    height=ref.height,
                    element_id=ref.element_id,
                )
                for ref in task.reference_images
            ]
            request = replace(request, reference_images=tuple(references))
        try:
            output = await asyncio.wait_for(self.adapter.generate(request, self.client), timeout)
        except ProviderError as exc:
            log.info(
                "provider refused task",
                extra={"job_id": task.job_id, "task_id": task.task_id, "class": exc.error_class},
            )
            return self.failed(task, blocked_input_of(exc.info, request))
        except TimeoutError:
            return self.failed(
                task, ErrorInfo.of(ErrorClass.TIMEOUT, f"no answer within {timeout:.0f} s")
            )
        if not output.images:
            return self.failed(task, ErrorInfo.of(ErrorClass.NO_IMAGE_RETURNED))
        for note in output.notes:
            log.info(
                "provider note",
                extra={"job_id": task.job_id, "task_id": task.task_id, "note": note},
            )

        staged: list[StagedImage] = []
        # A provider may return fewer images than asked; extra ones are ignored.
        for offset, image in enumerate(output.images[: task.n]):
            index = task.first_index + offset
            # Written once, where it stays: media reads it back to verify and thumbnail it, and
            # never copies it. The hash is in the key, so a task run twice never overwrites an
            # image already landed.
            sha256 = hashlib.sha256(image.data).hexdigest()
            key = generated_image_key(task, index, sha256, image.content_type)
            await self.store.put_bytes(
                self.media_bucket, key, image.data, image.content_type, metadata={"sha256": sha256}
            )
            staged.append(
                StagedImage(
                    index=index,
                    key=key,
                    sha256=sha256,
                    content_type=image.content_type,
                    width=image.width,
                    height=image.height,
                    size_bytes=len(image.data),
                    seed=image.seed,
                    revised_prompt=image.revised_prompt,
                )
            )
        if len(staged) < task.n:
            log.warning(
                "provider returned fewer images than asked",
                extra={"job_id": task.job_id, "asked": task.n, "got": len(staged)},
            )
        return GenerationCompleted(
            event_id=derived_event_id(task.event_id, f"completed:{task.attempt}"),
            task=task,
            images=staged,
            usage=output.usage,
            provider_request_id=output.provider_request_id,
        )


def blocked_input_of(info: ErrorInfo, request: ImageRequest) -> ErrorInfo:
    """A content block at the input stage names which input, when that is known: the one the
    provider named (the adapter set it), or the prompt when the call carried nothing else. With
    reference images and no word from the provider, it stays unknown rather than guessed."""
    if (
        info.error_class is not ErrorClass.CONTENT_BLOCKED
        or info.stage != "input"
        or info.input is not None
        or request.reference_images
    ):
        return info
    return info.model_copy(update={"input": BlockedInput(kind="prompt")})
