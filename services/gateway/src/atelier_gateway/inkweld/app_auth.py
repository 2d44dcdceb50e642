"""The app's own sign-in: its tokens, its project access and its admins (docs/inkweld.md).

The app's backend signs its writers' tokens with HS256 and its own key (claims `userId`,
`username`, `scope`, `exp`; no `sub`, no project grants, no admin claim). Atelier accepts them when
an operator configured that key (several during a rotation), and decides what they may do the way
the app itself does, by asking the app's backend with the writer's own token:

- project access: `GET /api/v1/projects/{username}/{slug}` → `access.canRead` / `canWrite`
  (a `301` for a renamed project is followed once, to its new slug);
- admin: `GET /api/v1/users/me` → `isAdmin` with a non-empty `id`.

Answers are kept briefly (`APP_CACHE_S`) in a bounded cache keyed by a hash of the token, so a
burst of requests costs the app's backend one call. Without a backend URL (Atelier alone), a
writer may use the projects under their own user name and is never an admin.

A valid app token never gets `401`: the app signs the writer out on a `401`. Only a token that
is really invalid (bad signature, expired, or one the app's backend itself refuses) does.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from cachetools import TTLCache

from atelier_contracts.errors import Forbidden, NotFound, Unavailable
from atelier_gateway.auth import TokenRejected
from atelier_gateway.inkweld.mapping.projects import project_of

log = logging.getLogger("atelier.gateway.inkweld")

# The app's backend signs with HS256 only; any other algorithm named in a header is refused.
APP_ALGORITHMS = ["HS256"]
# `enrol` is the 15-minute passkey-enrolment token: it must not reach anything else.
FULL_SCOPE = "full"
# The app's project answers carry a body, even a 301; nothing sane is larger.
_MAX_ANSWER_BYTES = 256 * 1024


@dataclass(frozen=True)
class AppIdentity:
    """Who an app token names, read from a token whose signature and expiry were checked."""

    user_id: str
    username: str
    token: str


@dataclass(frozen=True)
class ProjectAccess:
    """A writer's access to one of the app's projects, and the Atelier project it maps to."""

    project: str
    username: str
    slug: str
    can_read: bool
    can_write: bool


def looks_like_app_token(token: str) -> bool:
    """The app's tokens name the user in `userId` and have no `sub`; Atelier's have `sub`.

    Read without verifying: it only chooses which verifier checks the token.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return False
    return isinstance(claims, dict) and "userId" in claims and "sub" not in claims


def verify_app_token(token: str, secrets: Sequence[str], *, leeway_s: float = 0.0) -> AppIdentity:
    """The writer an app token names, or `TokenRejected`; `Forbidden` for an enrolment token."""
    claims: dict[str, Any] | None = None
    for secret in secrets:
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=APP_ALGORITHMS,
                leeway=leeway_s,
                options={"require": ["exp"]},
            )
            break
        except jwt.ExpiredSignatureError:
            raise TokenRejected("Your sign-in has expired; sign in again.") from None
        except jwt.InvalidSignatureError:
            continue  # signed with another of the configured keys, perhaps
        except jwt.PyJWTError:
            raise TokenRejected("The bearer token is not valid; sign in again.") from None
    if claims is None:
        raise TokenRejected("The bearer token is not valid; sign in again.")
    user_id, username = claims.get("userId"), claims.get("username")
    if not isinstance(user_id, str) or not user_id or not isinstance(username, str):
        raise TokenRejected("The bearer token does not name a user; sign in again.")
    scope = claims.get("scope", FULL_SCOPE)
    if scope != FULL_SCOPE:
        # A valid token for another purpose: refused, but not a sign-out (401).
        raise Forbidden(
            f"This sign-in token is limited to {scope!r}; finish signing in to generate images.",
            code="token_scope",
        )
    return AppIdentity(user_id=user_id, username=username, token=token)


class AppBackend:
    """Asks the app's backend what a writer may do, with the writer's own token.

    `base_url` None: Atelier runs alone, and a writer owns the projects under their user name.
    """

    def __init__(
        self,
        base_url: str | None,
        *,
        timeout_s: float = 5.0,
        cache_s: float = 30.0,
        cache_size: int = 10_000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self._timeout = httpx.Timeout(timeout_s)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        # Allowed and refused answers alike, so a burst of refused calls costs one question.
        self._answers: TTLCache[tuple[str, ...], Any] = TTLCache(cache_size, cache_s)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url or "",
                timeout=self._timeout,
                follow_redirects=False,  # a 301 means "renamed": read, not followed blindly
                transport=self._transport,
            )
        return self._client

    @staticmethod
    def _key(identity: AppIdentity, *parts: str) -> tuple[str, ...]:
        # The token itself is never kept: its hash names the entry.
        return (hashlib.sha256(identity.token.encode()).hexdigest(), *parts)

    async def _get(self, identity: AppIdentity, path: str) -> tuple[int, dict[str, Any]]:
        try:
            response = await self._http().get(
                path, headers={"Authorization": f"Bearer {identity.token}"}
            )
        except httpx.HTTPError as exc:
            log.warning("app backend unreachable", extra={"error": type(exc).__name__})
            raise Unavailable(
                "The app's server is not answering, so your access cannot be checked; try again "
                "shortly."
            ) from exc
        body: dict[str, Any] = {}
        if len(response.content) <= _MAX_ANSWER_BYTES:
            try:
                parsed = response.json()
                body = parsed if isinstance(parsed, dict) else {}
            except ValueError:
                body = {}
        if response.status_code == 401:
            # The app itself no longer accepts this token: the writer must sign in again.
            raise TokenRejected("Your sign-in is no longer valid; sign in again.")
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise Unavailable("The app's server cannot check your access right now; try again.")
        return response.status_code, body

    async def is_admin(self, identity: AppIdentity) -> bool:
        """The app's own admin flag (`users.isAdmin`), read through `/api/v1/users/me`."""
        if self.base_url is None:
            return False
        key = self._key(identity, "me")
        cached = self._answers.get(key)
        if cached is not None:
            return bool(cached)
        status, body = await self._get(identity, "/api/v1/users/me")
        if status == 403:
            raise Forbidden("Your account is disabled or not yet approved in the app.")
        if status != 200:
            raise Unavailable(f"The app's server answered {status} about your account.")
        # Without a token the app answers 200 with an anonymous user: check the id too.
        admin = bool(body.get("id")) and str(body.get("id")) == identity.user_id
        admin = admin and body.get("isAdmin") is True
        self._answers[key] = admin
        return admin

    async def project_access(
        self, identity: AppIdentity, username: str, slug: str
    ) -> ProjectAccess:
        """What the writer may do in `username/slug`; `NotFound` when it is not there for them."""
        if project_of(username, slug) is None:
            raise NotFound(f"There is no project {username}/{slug}.")
        if self.base_url is None:
            return _owner_only(identity, username, slug)
        key = self._key(identity, "project", username, slug)
        cached = self._answers.get(key)
        if isinstance(cached, ProjectAccess):
            return cached
        if isinstance(cached, tuple):
            refusal, message = cached
            raise refusal(message)
        try:
            access = await self._ask_project(identity, username, slug, renames_left=1)
        except (NotFound, Forbidden) as refusal:
            self._answers[key] = (type(refusal), refusal.message)
            raise
        self._answers[key] = access
        return access

    async def _ask_project(
        self, identity: AppIdentity, username: str, slug: str, *, renames_left: int
    ) -> ProjectAccess:
        path = f"/api/v1/projects/{quote(username, safe='')}/{quote(slug, safe='')}"
        status, body = await self._get(identity, path)
        if status in (301, 302, 307, 308):
            new_slug = body.get("newSlug")
            if renames_left > 0 and isinstance(new_slug, str) and new_slug != slug:
                if project_of(username, new_slug) is None:
                    raise NotFound(f"There is no project {username}/{slug}.")
                return await self._ask_project(
                    identity, username, new_slug, renames_left=renames_left - 1
                )
            raise NotFound(f"There is no project {username}/{slug}.")
        if status == 404:
            raise NotFound(f"There is no project {username}/{slug}.")
        if status == 403:
            raise Forbidden(f"You have no access to the project {username}/{slug}.")
        if status != 200:
            raise Unavailable(f"The app's server answered {status} about {username}/{slug}.")
        access = body.get("access") if isinstance(body.get("access"), dict) else {}
        assert isinstance(access, dict)
        project = project_of(username, slug)
        assert project is not None  # checked by the caller
        return ProjectAccess(
            project=project,
            username=username,
            slug=slug,
            can_read=access.get("canRead") is True,
            can_write=access.get("canWrite") is True,
        )


def _owner_only(identity: AppIdentity, username: str, slug: str) -> ProjectAccess:
    """Atelier alone has no project list to ask: a writer owns `<their user name>/<anything>`."""
    if username != identity.username:
        raise NotFound(f"There is no project {username}/{slug}.")
    project = project_of(username, slug)
    assert project is not None
    return ProjectAccess(project, username, slug, can_read=True, can_write=True)
