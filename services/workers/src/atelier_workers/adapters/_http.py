"""Plumbing every HTTP adapter shares: sending, reading answers, downloading results, polling.

One copy of each, so a fix (a transport error class, a leaked key, an expired URL) reaches
every provider at once. Provider-specific meaning (error bodies, status fields) stays in the
provider's own module.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx

from atelier_contracts.errors import ErrorClass
from atelier_contracts.providers import PROVIDER_BASE_URLS, images_per_call, passed_on_options
from atelier_workers.adapters.base import (
    GeneratedImageData,
    GenerationOutput,
    ImageRequest,
    ProviderError,
    parse_size,
)

T = TypeVar("T")

# Status codes of a result URL that expired or vanished, or of a provider job it forgot.
GONE = (404, 410)
# A few failed polls in a row (a 502 from an edge, a reset connection) are ridden out: the job
# itself is safe on the provider's side and its handle is saved, so giving up early only costs
# a retry.
MAX_POLL_FAILURES = 3


class HttpAdapter:
    """The frame of an HTTP adapter: the count rule dispatch splits jobs by, the checks made
    before anything is sent, and the whole call bounded by the profile's timeout. Subclasses
    set `name` and implement `_generate`."""

    name: str
    # What did not arrive in time, for the timeout's message.
    awaited: str = "complete answer"

    def max_images_per_call(self, model: str) -> int:
        return images_per_call(self.name, model)

    def base_url(self, request: ImageRequest) -> str:
        """The profile's base_url, else the provider's own public API (the one origin its key
        may always go to)."""
        return (request.base_url or PROVIDER_BASE_URLS[self.name]).rstrip("/")

    def passed_options(self, request: ImageRequest) -> dict[str, Any]:
        """The request's options this provider takes as they are (its capability table's, seed
        and negative prompt aside), those that are set."""
        return passed_options(request.options, passed_on_options(self.name, request.model))

    async def generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        return await bounded(self._generate(request, client), request.timeout_s, self.awaited)

    async def _generate(self, request: ImageRequest, client: httpx.AsyncClient) -> GenerationOutput:
        raise NotImplementedError

    def check_request(self, request: ImageRequest, max_references: int | None = None) -> None:
        """`invalid_request` for a count, prompt or number of reference images the provider
        cannot take: nothing is sent, and no reference is silently dropped."""
        limit = self.max_images_per_call(request.model)
        if not 1 <= request.n <= limit:
            per_call = "one image" if limit == 1 else f"1 to {limit} images"
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"{self.name} model {request.model!r} makes {per_call} per call, not {request.n}",
            )
        if not request.prompt:
            raise ProviderError.of(ErrorClass.INVALID_REQUEST, "prompt is empty")
        given = len(request.reference_images)
        if max_references is not None and given > max_references:
            raise ProviderError.of(
                ErrorClass.INVALID_REQUEST,
                f"{self.name} model {request.model!r} takes "
                + (f"at most {max_references}" if max_references else "no")
                + f" reference images, not {given}",
            )


async def bounded(call: Awaitable[T], timeout_s: float, waiting_for: str) -> T:
    """`call` within the request's whole timeout (downloads and polls included): httpx only
    bounds each read, so a server that trickles bytes could otherwise hold a worker forever."""
    try:
        async with asyncio.timeout(timeout_s):
            return await call
    except TimeoutError as exc:
        raise ProviderError.of(
            ErrorClass.TIMEOUT, f"no {waiting_for} within {timeout_s:g} s"
        ) from exc


async def send(
    call: Callable[[], Awaitable[httpx.Response]], secrets: tuple[str | None, ...]
) -> httpx.Response:
    """Run one HTTP call, turning transport failures into `ProviderError`."""
    try:
        return await call()
    except httpx.TimeoutException as exc:
        raise _transport_error(ErrorClass.TIMEOUT, exc, secrets) from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        # A malformed base_url is a configuration mistake: retrying cannot fix it.
        raise _transport_error(ErrorClass.INVALID_REQUEST, exc, secrets) from exc
    except httpx.HTTPError as exc:  # connection refused/reset, protocol errors, ...
        raise _transport_error(ErrorClass.PROVIDER_UNAVAILABLE, exc, secrets) from exc


def _transport_error(
    error_class: ErrorClass, exc: Exception, secrets: tuple[str | None, ...]
) -> ProviderError:
    return ProviderError.of(error_class, f"{type(exc).__name__}: {exc}", secrets=secrets)


async def download(url: str, client: httpx.AsyncClient, timeout_s: float) -> bytes:
    """Fetch a result URL now, before it expires (or decode it, when it is a data URI).

    No Authorization header: result URLs are pre-signed or public CDN links, usually on another
    host, which must never see the API key. For the same reason following redirects is safe.
    """
    if url.startswith("data:"):
        return decode_b64(url.split(",", 1)[-1], None)
    response = await send(lambda: client.get(url, timeout=timeout_s, follow_redirects=True), ())
    shown = url.split("?", 1)[0]  # the query string is the signature; keep it out of logs
    if response.status_code in GONE:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED,
            f"result URL {shown} answered {response.status_code} (expired or removed)",
        )
    if response.status_code != 200:
        error_class = (
            ErrorClass.PROVIDER_UNAVAILABLE
            if response.status_code >= 500
            else ErrorClass.NO_IMAGE_RETURNED
        )
        raise ProviderError.of(error_class, f"result URL {shown} answered {response.status_code}")
    return response.content


async def final_image(
    request: ImageRequest, fetch: Awaitable[bytes], seed: int | None = None
) -> GeneratedImageData:
    """A provider job's result image; when it is expired or broken the saved handle is cleared,
    since resuming the job cannot bring it back and a retry must start anew."""
    try:
        return GeneratedImageData.decoded(await fetch, seed=seed)
    except ProviderError as exc:
        if exc.error_class is ErrorClass.NO_IMAGE_RETURNED:
            await request.resume.save({})
        raise


async def post_json(
    request: ImageRequest,
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: Mapping[str, str],
    error: Callable[[httpx.Response, tuple[str | None, ...]], ProviderError],
) -> httpx.Response:
    """POST a JSON body; anything but a 200 raises `error(...)`."""
    secrets = (request.api_key,)
    response = await send(
        lambda: client.post(url, json=body, headers=headers, timeout=request.timeout_s), secrets
    )
    if response.status_code != 200:
        raise error(response, secrets)
    return response


def error_for_status(
    status: int,
    headers: Mapping[str, str],
    detail: str,
    secrets: tuple[str | None, ...],
    *,
    retry_after_s: float | None = None,
) -> ProviderError:
    """What an HTTP status means once the provider's own error fields said nothing more
    specific; the retry hint is the provider's own when given, else `Retry-After`."""
    hint = retry_after_s if retry_after_s is not None else retry_after_of(headers)
    if status in (401, 403):
        return ProviderError.of(ErrorClass.AUTH, detail, secrets=secrets)
    if status == 402:
        return ProviderError.of(ErrorClass.QUOTA_EXHAUSTED, detail, secrets=secrets)
    if status == 429:
        return ProviderError.of(
            ErrorClass.RATE_LIMITED, detail, retry_after_s=hint, secrets=secrets
        )
    if status in (408, 504):
        return ProviderError.of(ErrorClass.TIMEOUT, detail, secrets=secrets)
    # 409 is a lock conflict on the provider's side (OpenAI's and Replicate's SDKs retry it).
    if status >= 500 or status == 409:
        return ProviderError.of(
            ErrorClass.PROVIDER_UNAVAILABLE, detail, retry_after_s=hint, secrets=secrets
        )
    return ProviderError.of(ErrorClass.INVALID_REQUEST, detail, secrets=secrets)


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def json_object(response: httpx.Response, request_id: str | None) -> dict[str, Any]:
    """A 200's JSON object body; anything else means there is no image to be had."""
    payload = json_or_none(response)
    if not isinstance(payload, dict):
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED,
            with_id(f"200 whose body is not a JSON object: {response.text[:200]!r}", request_id),
        )
    return payload


def decode_b64(text: str, request_id: str | None) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderError.of(
            ErrorClass.NO_IMAGE_RETURNED, with_id(f"image is not base64: {exc}", request_id)
        ) from exc


def dict_of(value: Any) -> dict[str, Any]:
    """`value` when the provider sent an object there (usage, metrics), else an empty one."""
    return value if isinstance(value, dict) else {}


def data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def with_id(text: str, request_id: str | None) -> str:
    return f"{text} (request_id={request_id})" if request_id else text


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms` (preferred, finer) or `retry-after`."""
    millis = _float_or_none(headers.get("retry-after-ms"))
    if millis is not None and millis >= 0:
        return millis / 1000
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _float_or_none(raw)
    if seconds is None:
        # RFC 9110 also allows an HTTP date.
        try:
            seconds = email.utils.parsedate_to_datetime(raw).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0)


def _float_or_none(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def self_hosted_base(request: ImageRequest, server: str) -> str:
    """The profile's base_url, which a self-hosted server (ComfyUI, A1111) cannot do without."""
    if not request.base_url:
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST, f"{server} needs the server's base_url in the profile"
        )
    return request.base_url.rstrip("/")


# --- credentials ----------------------------------------------------------------------------


def bearer(request: ImageRequest) -> dict[str, str]:
    """`Authorization: Bearer` with the key; no header at all for a keyless gateway."""
    return {"Authorization": f"Bearer {request.api_key}"} if request.api_key else {}


def basic_or_bearer(request: ImageRequest) -> dict[str, str]:
    """For self-hosted servers (A1111, ComfyUI behind a proxy): "user:pass" is HTTP Basic,
    any other key a bearer token."""
    key = request.api_key
    if key and ":" in key:
        return {"Authorization": "Basic " + base64.b64encode(key.encode()).decode("ascii")}
    return bearer(request)


def key_secrets(request: ImageRequest) -> tuple[str | None, ...]:
    """What must never reach a log: the key, and the password half of a "user:pass" one."""
    key = request.api_key
    return (key, key.split(":", 1)[1]) if key and ":" in key else (key,)


# --- provider jobs: settings, handles, polling ------------------------------------------------


def number_setting(config: Mapping[str, Any], name: str, default: float) -> float:
    """A number from `provider_config`, or `invalid_request` naming the setting."""
    raw = config.get(name, default)
    if not isinstance(raw, bool):
        with contextlib.suppress(TypeError, ValueError):
            return float(raw)
    raise ProviderError.of(
        ErrorClass.INVALID_REQUEST, f"provider_config.{name}={raw!r} is not a number"
    )


def map_setting(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A map from `provider_config` (an empty one when unset)."""
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise ProviderError.of(ErrorClass.INVALID_REQUEST, f"provider_config.{name} must be a map")
    return value


def poll_interval(config: Mapping[str, Any], default: float) -> float:
    """`provider_config.poll_interval_s`, checked before anything is paid for."""
    value = number_setting(config, "poll_interval_s", default)
    if value <= 0:
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST, f"provider_config.poll_interval_s={value:g} must be > 0"
        )
    return value


def saved_handle(
    saved: Mapping[str, Any] | None, provider: str, keys: tuple[str, ...]
) -> dict[str, Any] | None:
    """The handle this provider saved for the task, or None when there is none to resume."""
    if not saved or saved.get("provider") != provider:
        return None
    if not all(isinstance(saved.get(key), str) for key in keys):
        return None
    return dict(saved)


class JobGone(Exception):
    """The provider no longer knows the job a saved handle names (an unknown id, or a result
    already expired): only a fresh submission can still deliver the image."""


async def resume_or_submit(
    request: ImageRequest,
    provider: str,
    keys: tuple[str, ...],
    *,
    job: str,
    log: logging.Logger,
    submit: Callable[[], Awaitable[tuple[dict[str, Any], T | None]]],
    follow: Callable[[dict[str, Any], T | None], Awaitable[GenerationOutput]],
) -> GenerationOutput:
    """Follow the job whose handle was saved for this task, else submit one and follow that.

    On a timeout the handle stays saved: a retry resumes the job instead of paying for another.
    `keys` are the handle's string fields, the first one the job's id; `job` names it in logs
    and errors ("fal request"). `submit` answers the new handle and, when it has one, the job's
    first state, which `follow` gets instead of polling for it (None when resuming)."""
    saved = saved_handle(await request.resume.load(), provider, keys)
    if saved is not None:
        try:
            return await follow(saved, None)
        except JobGone:
            log.info(
                f"saved {job} is gone; submitting again",
                extra={"provider": provider, "provider_job_id": saved[keys[0]]},
            )
    handle, first = await submit()
    # Saved before waiting: a worker killed from here on resumes this very job.
    await request.resume.save(handle)
    try:
        return await follow(handle, first)
    except JobGone as exc:
        raise ProviderError.of(
            ErrorClass.PROVIDER_UNAVAILABLE,
            f"{job} {handle[keys[0]]} was gone right after it was submitted",
        ) from exc


async def call_saved_url(
    request: ImageRequest,
    client: httpx.AsyncClient,
    method: str,
    url: Any,
    headers: Mapping[str, str],
) -> httpx.Response | None:
    """Call a URL the provider handed out and the saved handle kept (a cancel URL); None when
    the handle has none."""
    if not isinstance(url, str):
        return None
    return await send(
        lambda: client.request(method, url, headers=headers, timeout=30.0), (request.api_key,)
    )


class StatusPoller:
    """Polls one provider job's status URL: waits out 429s, rides out a few transient failures
    in a row: the job runs on at the provider and its handle is saved, so giving up early only
    costs a retry.

    Any 2xx is a status answer (fal's queue may answer 202 while a request waits; its own
    client takes any 2xx), but only one whose body `known_state` recognises: anything else
    counts as a failed poll (`provider_unavailable`, naming what came back), so a proxy's page
    or a state this adapter has never heard of fails the job clearly instead of being polled
    until the timeout."""

    def __init__(
        self,
        request: ImageRequest,
        client: httpx.AsyncClient,
        url: str,
        headers: Mapping[str, str],
        *,
        default_interval: float,
        error: Callable[[httpx.Response, tuple[str | None, ...]], ProviderError],
        known_state: Callable[[dict[str, Any]], bool],
    ) -> None:
        self.request, self.client, self.url, self.headers = request, client, url, headers
        self.error, self.known_state = error, known_state
        self.interval = poll_interval(request.provider_config, default_interval)
        self.failures = PollFailures()

    async def poll(self) -> dict[str, Any] | None:
        """The job's status object, or None after a round that waited (a 429, a hiccup);
        `JobGone` when the provider no longer knows the job."""
        try:
            payload = await self._status()
        except ProviderError as exc:
            self.failures.failed(exc)
            await asyncio.sleep(self.interval)
            return None
        self.failures.succeeded()
        return payload

    async def _status(self) -> dict[str, Any] | None:
        secrets = (self.request.api_key,)
        response = await send(
            lambda: self.client.get(self.url, headers=self.headers, timeout=self.request.timeout_s),
            secrets,
        )
        if response.status_code in GONE:
            raise JobGone
        if response.status_code == 429:
            await asyncio.sleep(max(retry_after_of(response.headers) or 0.0, self.interval))
            return None
        if not 200 <= response.status_code < 300:
            raise self.error(response, secrets)
        payload = json_or_none(response)
        if not isinstance(payload, dict) or not self.known_state(payload):
            raise ProviderError.of(
                ErrorClass.PROVIDER_UNAVAILABLE,
                f"status answer HTTP {response.status_code} has no state we know: "
                f"{response.text[:200]!r}",
                secrets=secrets,
            )
        return payload


class PollFailures:
    """Failed polls in a row: transient ones are ridden out up to `MAX_POLL_FAILURES`."""

    def __init__(self) -> None:
        self.count = 0

    def succeeded(self) -> None:
        self.count = 0

    def failed(self, exc: ProviderError) -> None:
        """Re-raise `exc` unless it is a transient failure and there were not too many."""
        self.count += 1
        if (
            exc.error_class is not ErrorClass.PROVIDER_UNAVAILABLE
            or self.count >= MAX_POLL_FAILURES
        ):
            raise exc


def model_inputs(
    request: ImageRequest,
    *,
    size_forms: Mapping[str, Callable[[int, int], dict[str, Any]]],
    default_size_form: str,
    options: Mapping[str, Any],
    reference_field: str,
) -> dict[str, Any]:
    """The inputs of a hosted model (fal and Replicate apps): `provider_config.input`, the
    prompt, the size in the form `provider_config.size_field` names, seed, negative prompt,
    `options` (those the apps commonly take; any other input goes in `provider_config.input`)
    and reference images as data URIs."""
    width, height = parse_size(request.size)
    config = request.provider_config
    values: dict[str, Any] = dict(map_setting(config, "input"))
    values["prompt"] = request.prompt
    size_field = config.get("size_field", default_size_form)
    if size_field not in size_forms:
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST,
            f"provider_config.size_field={size_field!r}; use {' or '.join(size_forms)}",
        )
    values.update(size_forms[size_field](width, height))
    if request.seed is not None:
        values["seed"] = request.seed
    if request.negative_prompt:
        values["negative_prompt"] = request.negative_prompt
    values.update(options)
    values.update(reference_uris(request, reference_field))
    return values


def reference_uris(request: ImageRequest, default_field: str) -> dict[str, Any]:
    """Reference images as data URIs under the model input `provider_config.reference_field`
    names (fal, Replicate): a list, or the first image for a single-image field
    (`reference_as_list`; by default a name ending in `s` takes a list)."""
    if not request.reference_images:
        return {}
    config = request.provider_config
    name = config.get("reference_field", default_field)
    if not isinstance(name, str) or not name:
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST, "provider_config.reference_field must be a name"
        )
    as_list = config.get("reference_as_list", name.endswith("s"))
    uris = [data_uri(ref.data, ref.content_type) for ref in request.reference_images]
    if not as_list and len(uris) > 1:
        raise ProviderError.of(
            ErrorClass.INVALID_REQUEST, f"{name} takes one reference image, not {len(uris)}"
        )
    return {name: uris if as_list else uris[0]}


def passed_options(options: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """The options a provider understands, as set (None means "not set")."""
    return {key: value for key, value in options.items() if key in allowed and value is not None}
