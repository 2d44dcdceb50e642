"""Who calls the facade, and which projects they may use (docs/inkweld.md, ADR 0008).

Callers are Atelier's own tokens or, with app JWT secrets configured, the app's own tokens, whose
project access and admin flag are asked of the app's backend (app_auth.py). The `Annotated`
dependencies below are declared once and used by every route.
"""

# No `from __future__ import annotations`: FastAPI resolves the dependency annotations at run time.
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from atelier_contracts.errors import Forbidden, InvalidInput, NotFound
from atelier_gateway.auth import User
from atelier_gateway.inkweld.app_auth import AppIdentity, looks_like_app_token, verify_app_token
from atelier_gateway.inkweld.facade import Facade, FacadeDep
from atelier_gateway.inkweld.mapping.projects import generation_project, project_of

# The claims that make a token an admin's for the app's admin routes (ADR 0008).
ADMIN_ROLE = "admin"

_bearer = HTTPBearer(auto_error=False, scheme_name="InkweldBearer")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


@dataclass(frozen=True)
class Caller:
    """Who calls: an Atelier token (its grants and admin claim), or the app's own token
    (`app`: grants and admin are asked of the app's backend, see app_auth.py)."""

    user: User
    admin: bool
    app: AppIdentity | None = None


def has_admin_claim(token: str) -> bool:
    """`roles` containing "admin", or `admin: true`. Read only from a token the `Authenticator`
    has just verified (signature, issuer, expiry): the payload is the one it checked."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    roles = claims.get("roles")
    return (isinstance(roles, list) and ADMIN_ROLE in roles) or claims.get("admin") is True


async def current_caller(credentials: Credentials, ink: FacadeDep) -> Caller:
    token = credentials.credentials if credentials else None
    secrets = ink.inkweld.app_jwt_secrets
    if token and secrets and looks_like_app_token(token):
        identity = verify_app_token(token, secrets, leeway_s=ink.settings.jwt_leeway_s)
        # No grants of its own: each project is asked of the app's backend (project_user).
        return Caller(User(identity.user_id, frozenset()), admin=False, app=identity)
    user = await ink.authenticator(token)  # raises unless the token is valid
    assert token is not None
    return Caller(user, admin=has_admin_claim(token))


async def admin_caller(
    caller: Annotated[Caller, Depends(current_caller)], ink: FacadeDep
) -> Caller:
    if caller.app is not None:
        if not await ink.app_backend.is_admin(caller.app):
            raise Forbidden("This needs an admin of the app.")
        return caller
    if not caller.admin:
        raise Forbidden(
            f'This needs an admin: a token with `roles: ["{ADMIN_ROLE}"]` or `admin: true`.'
        )
    return caller


async def optional_caller(credentials: Credentials, ink: FacadeDep) -> Caller | None:
    if credentials is None:
        return None
    return await current_caller(credentials, ink)


AnyCaller = Annotated[Caller, Depends(current_caller)]
AdminCaller = Annotated[Caller, Depends(admin_caller)]
OptionalCaller = Annotated[Caller | None, Depends(optional_caller)]


async def project_user(
    ink: Facade, caller: Caller | None, username: str, slug: str, *, write: bool
) -> tuple[str, User]:
    """The Atelier project of `username/slug` and a user granted it, or the refusal.

    An Atelier token's grants decide at once; an app token's access is the app backend's
    answer (`canRead` to read, `canWrite` to change), checked for every request.
    """
    if caller is not None and caller.app is not None:
        access = await ink.app_backend.project_access(caller.app, username, slug)
        if not access.can_read:
            raise NotFound(f"There is no project {username}/{slug}.")
        if write and not access.can_write:
            raise Forbidden(
                f"You can read {username}/{slug} but not change it: ask its owner to make "
                "you an editor."
            )
        return access.project, User(caller.user.id, frozenset({access.project}))
    project = project_of(username, slug)
    # Not granted looks like not there, as on every native read.
    if project is None or caller is None or not caller.user.is_granted(project):
        raise NotFound(f"There is no project {username}/{slug}.")
    return project, caller.user


async def generation_user(ink: Facade, caller: Caller, project_key: str | None) -> tuple[str, User]:
    """Where a generation's images go, and a user allowed to write there."""
    if caller.app is None:
        return generation_project(project_key, caller.user.projects), caller.user
    username, _, slug = (project_key or "").partition("/")
    if not username or not slug:
        raise InvalidInput("Name the project the images go to: projectKey (username/slug).")
    return await project_user(ink, caller, username, slug, write=True)
