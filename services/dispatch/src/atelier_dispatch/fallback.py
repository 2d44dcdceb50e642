"""Where a task goes when its provider is unavailable after its retries: the next profile of the
job's fallback chain, planned by the gateway at submission (`JobRequested.fallbacks`).

Only failures of the provider, not of the request, fall back: unavailable, timed out, rate
limited (past the retries or the deadline), or refusing the provider key. A content block, an
invalid request, an exhausted provider quota, an empty answer or a cancel never do.

A task's current step is kept on its row (`TaskRecord.profile`, JSON): which plan of the chain it
runs on, at which attempt that plan started (attempts keep counting up across the chain, so every
task event has its own id; the retry limit counts those of the current profile), and why it fell
back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.jobs import FallbackPlan
from atelier_contracts.profiles import ProfileSnapshot

FALLS_BACK = frozenset(
    {ErrorClass.PROVIDER_UNAVAILABLE, ErrorClass.TIMEOUT, ErrorClass.RATE_LIMITED, ErrorClass.AUTH}
)


@dataclass(frozen=True)
class Step:
    """The fallback a task runs on: the `index`-th plan of its job's chain."""

    index: int
    first_attempt: int
    plan: FallbackPlan
    reason: str

    def stored(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "first_attempt": self.first_attempt,
            "plan": self.plan.model_dump(mode="json"),
            "reason": self.reason,
        }

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> Step | None:
        if not stored:
            return None
        return cls(
            index=int(stored["index"]),
            first_attempt=int(stored["first_attempt"]),
            plan=FallbackPlan.model_validate(stored["plan"]),
            reason=str(stored["reason"]),
        )


def next_step(
    chain: list[dict[str, Any]] | None,
    current: Step | None,
    running_on: ProfileSnapshot,
    attempt: int,
    error: ErrorInfo,
    *,
    references: int = 0,
) -> Step | None:
    """The step after `current` (None: the job's own profile) for a task whose `attempt` failed
    with `error` and will not be retried on `running_on`; None when it must not fall back or the
    chain has ended. `references`: how many reference images the job's assembly sends; those
    past the fallback profile's maximum are left out, and its reason says so."""
    if error.error_class not in FALLS_BACK:
        return None
    index = 0 if current is None else current.index + 1
    if not chain or index >= len(chain):
        return None
    plan = FallbackPlan.model_validate(chain[index])
    tries = attempt - (current.first_attempt if current else 1) + 1
    said = f"{tries} attempt{'s' if tries != 1 else ''}"
    reason = (
        f"{running_on.name!r} ({running_on.provider}) failed after {said}: "
        f"{error.error_class.value} ({error.message})"
    )
    notes = list(plan.notes)
    most = plan.profile.max_reference_images
    if references > most:
        if most == 0:
            takes = "no reference images"
        else:
            takes = f"at most {most} reference image{'s' if most != 1 else ''}"
        notes.append(
            f"Profile {plan.profile.name!r} takes {takes}: {references - most} of the "
            f"{references} sent with this request were left out."
        )
    if notes:
        reason += " " + " ".join(notes)
    return Step(index=index, first_attempt=attempt + 1, plan=plan, reason=reason[:1000])
