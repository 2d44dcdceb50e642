"""A fake of the writing app's own backend: its sign-in tokens, `users/me` and project access.

Only what Atelier asks of it (shared/reference/inkweld-app-behaviour.md §4): tokens signed HS256
with the app's key (claims `userId`, `username`, `email`, `scope`, `exp`), `GET /api/v1/users/me`
(`401` for a bad token, `403` for a disabled or unapproved account, `200` with an anonymous user
without a token) and `GET /api/v1/projects/{username}/{slug}` (`access` of the owner or an
accepted collaborator; `403`, `404`, or `301` with `{renamed, oldSlug, newSlug}` after a rename).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

Role = Literal["viewer", "editor", "admin"]


@dataclass
class AppUser:
    id: str
    username: str
    is_admin: bool = False
    enabled: bool = True
    approved: bool = True


@dataclass
class AppProject:
    owner: str  # username
    slug: str
    collaborators: dict[str, Role] = field(default_factory=dict)  # username → accepted role


@dataclass
class FakeInkweldBackend:
    """The app's users and projects; `calls` records every path asked, for cache checks."""

    secret: str
    users: dict[str, AppUser] = field(default_factory=dict)  # by user id
    projects: list[AppProject] = field(default_factory=list)
    renamed: dict[tuple[str, str], str] = field(default_factory=dict)  # (owner, old) → new slug
    calls: list[str] = field(default_factory=list)

    def token(
        self,
        user_id: str,
        *,
        scope: str = "full",
        expires_in: float = 30 * 24 * 3600,
        secret: str | None = None,
    ) -> str:
        """A token as the app's backend signs it."""
        user = self.users[user_id]
        claims = {
            "userId": user.id,
            "username": user.username,
            "email": "",
            "scope": scope,
            "exp": int(time.time() + expires_in),
        }
        return jwt.encode(claims, secret or self.secret, algorithm="HS256")

    def _user(self, request: Request) -> AppUser | Literal["invalid"] | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return None
        try:
            claims = jwt.decode(header[7:], self.secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            return "invalid"
        if claims.get("scope") != "full":
            return "invalid"
        return self.users.get(str(claims.get("userId")), "invalid")

    def _project(self, owner: str, slug: str) -> AppProject | None:
        return next((p for p in self.projects if (p.owner, p.slug) == (owner, slug)), None)

    def app(self) -> FastAPI:
        app = FastAPI(title="fake Inkweld backend")

        def error(status: int, message: str) -> JSONResponse:
            return JSONResponse({"error": "Error", "message": message}, status_code=status)

        @app.get("/api/v1/users/me")
        async def me(request: Request) -> Any:
            self.calls.append(request.url.path)
            user = self._user(request)
            if user is None:
                anonymous = {"id": "", "username": "", "isAdmin": False, "enabled": False}
                return JSONResponse(anonymous)
            if user == "invalid":
                return error(401, "Unauthorized")
            if not (user.enabled and user.approved):
                return error(403, "Account disabled or not approved")
            return {
                "id": user.id,
                "username": user.username,
                "name": user.username.title(),
                "email": "",
                "enabled": user.enabled,
                "approved": user.approved,
                "isAdmin": user.is_admin,
            }

        @app.get("/api/v1/projects/{username}/{slug}")
        async def project(request: Request, username: str, slug: str) -> Any:
            self.calls.append(request.url.path)
            user = self._user(request)
            if user is None or user == "invalid":
                return error(401, "Unauthorized")
            if not (user.enabled and user.approved):
                return error(403, "Account disabled or not approved")
            if (username, slug) in self.renamed:
                new = self.renamed[(username, slug)]
                body = {"renamed": True, "oldSlug": slug, "newSlug": new, "username": username}
                return JSONResponse(body, status_code=301)
            found = self._project(username, slug)
            if found is None:
                return error(404, "Project not found")
            owner = found.owner == user.username
            role = "owner" if owner else found.collaborators.get(user.username)
            if role is None:
                return error(403, "You do not have access to this project")
            return {
                "id": f"{username}-{slug}",
                "slug": slug,
                "title": slug.replace("-", " ").title(),
                "username": username,
                "access": {
                    "isOwner": owner,
                    "canRead": True,
                    "canWrite": role in ("owner", "editor", "admin"),
                    "canAdmin": role in ("owner", "admin"),
                    "role": role,
                },
            }

        return app
