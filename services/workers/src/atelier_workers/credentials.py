"""The provider key a worker calls with: the one an admin stored in profiles, else its own.

The key is asked for over `profiles.query.credentials`; the reply carries it sealed with the
shared transport key (`ATELIER_CREDENTIALS_TRANSPORT_KEY`), so NATS never holds the plaintext.
It is opened here, kept only in memory, and forgotten when `profiles.changed` says the
provider's credentials changed (and, as a backstop, after `max_age_s`). With no stored key, or
profiles not answering, the worker's own `ATELIER_WORKERS_API_KEY` is used.

The reply also names the origins an operator allowed the key to be sent to besides the
provider's own endpoint (`allowed_origins`); the last ones profiles gave are kept while it does
not answer (docs/adr/0014-keys-only-to-approved-origins.md).

The sealed format is `atelier_security`'s, which profiles seals with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from atelier_contracts.profiles import CredentialQuery, CredentialReply
from atelier_security import SealBroken, transport_sealer

log = logging.getLogger("atelier.workers.credentials")


AskProfiles = Callable[[CredentialQuery], Awaitable[CredentialReply]]


class TransportOpener:
    """Opens keys sealed by profiles with the shared transport key."""

    def __init__(self, secret: str) -> None:
        self._sealer = transport_sealer(secret)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<key>)"

    def open(self, provider: str, sealed: str) -> str:
        return self._sealer.open(provider, sealed)


class ProviderCredentials:
    """The current key of one provider, fetched once and cached until told it changed."""

    def __init__(
        self,
        provider: str,
        *,
        ask: AskProfiles,
        transport_key: str,
        fallback: str | None = None,
        max_age_s: float = 300.0,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self._ask = ask
        self._opener = TransportOpener(transport_key)
        self._fallback = fallback
        self._max_age_s = max_age_s
        self._retry_s = retry_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._cached: tuple[str | None, float] | None = None  # (key, valid until)
        self._generation = 0  # bumped by invalidate(): a fetch begun before is not cached
        # Operator-approved origins from profiles' last answer (kept while it does not answer).
        self.allowed_origins: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.provider!r})"

    def invalidate(self) -> None:
        self._cached = None
        self._generation += 1

    def _fresh(self) -> tuple[bool, str | None]:
        if self._cached is not None and self._clock() < self._cached[1]:
            return True, self._cached[0]
        return False, None

    async def api_key(self) -> str | None:
        fresh, key = self._fresh()
        if fresh:
            return key
        async with self._lock:  # one lookup at a time; the others take its answer
            fresh, key = self._fresh()
            if fresh:
                return key
            generation = self._generation
            key, valid_s = await self._fetch()
            if generation == self._generation:
                self._cached = (key, self._clock() + valid_s)
            return key

    async def _fetch(self) -> tuple[str | None, float]:
        """The key and how long to trust it."""
        try:
            reply = await self._ask(CredentialQuery(provider=self.provider))
        except Exception as exc:  # no answer, no connection: keep working with what we have
            log.warning(
                "credentials lookup failed; using the worker's own key",
                extra={"provider": self.provider, "error": type(exc).__name__},
            )
            return self._fallback, self._retry_s
        self.allowed_origins = frozenset(reply.allowed_origins)
        if not reply.configured or reply.sealed_key is None:
            return self._fallback, self._max_age_s
        try:
            return self._opener.open(self.provider, reply.sealed_key), self._max_age_s
        except SealBroken:
            log.error(
                "stored credential does not open: ATELIER_CREDENTIALS_TRANSPORT_KEY differs "
                "between profiles and this worker; using the worker's own key",
                extra={"provider": self.provider},
            )
            return self._fallback, self._retry_s
