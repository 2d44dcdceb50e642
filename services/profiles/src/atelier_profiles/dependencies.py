"""What an admin route gets from FastAPI, declared once (as the gateway's `dependencies.py` and
Polar's `auth.py` modules do): the admin check, and the services the composition root (`main`)
put on `app.state`.

Routers are module-level (`api.py`, `webhooks_api.py`): a route says what it needs in its
signature instead of being built inside a factory that closes over the service.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from atelier_contracts.errors import Unauthorized
from atelier_profiles.budgets import BudgetService
from atelier_profiles.governance import GovernanceService
from atelier_profiles.service import ProfileService
from atelier_profiles.settings import Settings
from atelier_profiles.webhooks import WebhookService

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The admin token (`ATELIER_PROFILES_ADMIN_TOKEN`)",
)

T = TypeVar("T")


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Admit only requests that carry the admin token (every admin router depends on it)."""
    settings: Settings = request.app.state.settings
    # Missing and wrong tokens get the same answer, so a caller learns nothing from it;
    # compare_digest keeps the comparison time independent of how much of the token matched.
    if credentials is None or not hmac.compare_digest(
        credentials.credentials.encode(), settings.admin_token.encode()
    ):
        raise Unauthorized(
            "A valid admin token is required: send 'Authorization: Bearer <admin token>'."
        )


def _app_state(name: str, kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency giving what `main` put on `app.state` under `name` (of type `kind`)."""

    async def read(request: Request) -> T:
        value: T = getattr(request.app.state, name)
        return value

    return read


Profiles = Annotated[ProfileService, Depends(_app_state("service", ProfileService))]
Governance = Annotated[GovernanceService, Depends(_app_state("governance", GovernanceService))]
Budgets = Annotated[BudgetService, Depends(_app_state("budgets", BudgetService))]
Webhooks = Annotated[WebhookService, Depends(_app_state("webhooks", WebhookService))]
