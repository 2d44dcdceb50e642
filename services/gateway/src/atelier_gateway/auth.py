"""Who is calling: a bearer JWT naming the user and the projects granted.

A token carries `sub` (the user id), `projects` (ids of the projects the user may use), `iss` and
`exp`. Everything a user sees or does is confined to those projects (DESIGN.md §5). Tokens are
signed with the shared secret (HS256) or by an identity provider whose public keys are served at
a JWKS URL (RS/ES/PS algorithms; `Authenticator`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt

from atelier_contracts.errors import Unauthorized, Unavailable

if TYPE_CHECKING:
    from atelier_gateway.settings import Settings

# Only the algorithm we sign with: accepting whatever the token's header names is how `none` and
# RS/HS confusion attacks get in.
ALGORITHMS = ["HS256"]
# Verified against the JWKS only: public-key algorithms, never HMAC (a public key used as an HMAC
# secret is the classic confusion attack).
JWKS_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]


class TokenRejected(Unauthorized):
    """401; the app answers it with `WWW-Authenticate: Bearer` (RFC 6750)."""


@dataclass(frozen=True)
class User:
    id: str
    projects: frozenset[str]

    def is_granted(self, project: str) -> bool:
        return project in self.projects


def authenticate(
    token: str | None,
    *,
    secret: Any,
    issuer: str,
    audience: str | None = None,
    leeway_s: float = 0.0,
    algorithms: Sequence[str] = ALGORITHMS,
) -> User:
    """The user a bearer token names, or `TokenRejected` saying what is wrong with it.

    `secret` is the HS256 secret, or, with `algorithms` from `JWKS_ALGORITHMS`, a public key.
    """
    if not token:
        raise TokenRejected(
            "This request needs a bearer token: send `Authorization: Bearer <token>`."
        )
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=list(algorithms),
            issuer=issuer,
            audience=audience,
            leeway=leeway_s,
            options={"require": ["sub", "exp", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("The bearer token has expired; sign in again.") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"The bearer token lacks the `{exc.claim}` claim.") from None
    except jwt.InvalidIssuerError:
        raise TokenRejected(
            f"The bearer token was not issued by {issuer!r} (`iss` claim)."
        ) from None
    except jwt.InvalidAudienceError:
        raise TokenRejected("The bearer token is meant for another audience (`aud`).") from None
    except jwt.PyJWTError:
        # Bad signature, malformed, wrong algorithm or key type, not yet valid: the caller can't
        # fix any of them except by getting a new token, and details would only help a forger.
        raise TokenRejected("The bearer token is not valid; sign in again.") from None

    subject = claims.get("sub")
    projects = claims.get("projects", [])
    if not isinstance(subject, str) or not subject:
        raise TokenRejected("The bearer token's `sub` claim must name the user.")
    if not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
        raise TokenRejected("The bearer token's `projects` claim must be a list of project ids.")
    return User(id=subject, projects=frozenset(projects))


class Authenticator:
    """Checks a bearer token against the shared secret (HS256) or the JWKS URL's keys.

    The token's header says which; each path accepts only its own algorithms, so a token cannot
    choose HMAC against a public key. The JWKS is fetched on first use and kept `jwks_cache_s`;
    an unknown `kid` refetches it (PyJWKClient), so rotated keys are picked up.
    """

    def __init__(
        self,
        *,
        secret: str | None,
        issuer: str,
        audience: str | None = None,
        leeway_s: float = 0.0,
        jwks_url: str | None = None,
        jwks_cache_s: float = 300.0,
        jwks_client: jwt.PyJWKClient | None = None,
    ) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._leeway_s = leeway_s
        self._jwks = jwks_client
        if self._jwks is None and jwks_url:
            self._jwks = jwt.PyJWKClient(jwks_url, lifespan=jwks_cache_s, timeout=5)

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """The gateway's token check as its settings configure it, one for every API it serves."""
        return cls(
            secret=settings.jwt_secret if settings.hs256_enabled else None,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_s=settings.jwt_leeway_s,
            jwks_url=settings.jwks_url,
            jwks_cache_s=settings.jwks_cache_s,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(hs256={self._secret is not None}, jwks={bool(self._jwks)})"

    async def __call__(self, token: str | None) -> User:
        if not token:
            return authenticate(token, secret=self._secret, issuer=self._issuer)
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise TokenRejected("The bearer token is not valid; sign in again.") from None
        if algorithm in ALGORITHMS and self._secret is not None:
            return self._decode(token, self._secret, ALGORITHMS)
        if algorithm in JWKS_ALGORITHMS and self._jwks is not None:
            jwks = self._jwks
            try:
                # PyJWKClient fetches with urllib (blocking): keep it off the event loop.
                signing_key = await asyncio.to_thread(jwks.get_signing_key_from_jwt, token)
            except jwt.PyJWKClientConnectionError as exc:
                raise Unavailable(
                    "The sign-in service's keys cannot be fetched right now; try again shortly."
                ) from exc
            except jwt.PyJWTError:  # no key with this kid, malformed JWKS
                raise TokenRejected("The bearer token is not valid; sign in again.") from None
            return self._decode(token, signing_key.key, [algorithm])
        raise TokenRejected("The bearer token is not valid; sign in again.")

    def _decode(self, token: str, key: Any, algorithms: Sequence[str]) -> User:
        return authenticate(
            token,
            secret=key,
            issuer=self._issuer,
            audience=self._audience,
            leeway_s=self._leeway_s,
            algorithms=algorithms,
        )
