"""Whose task goes next to a provider (ADR 0020): the pure part of admission.

A provider with a budget (calls at once across every worker) gets its waiting tasks from dispatch
one user at a time: each free call goes to the user served longest ago (a user never served
first), and within one round no user gets a second call before every waiting user had one. So
one user's backlog delays another user's next image by at most one task's turn.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

# Never served: before anyone who was.
_NEVER = datetime.min.replace(tzinfo=UTC)

# Tasks handed over in one admission when the provider has no budget (the rest come next round).
UNLIMITED_BATCH = 500


def turn_order(waiting: Mapping[str, int], turns: Mapping[str, datetime]) -> list[str]:
    """Users with waiting tasks, whose turn it is first."""
    return sorted(waiting, key=lambda user: (turns.get(user, _NEVER), user))


def allot(order: list[str], waiting: Mapping[str, int], free: int) -> dict[str, int]:
    """Deal `free` calls one per user per round, in `order`, within what each is waiting for."""
    shares = dict.fromkeys(order, 0)
    left = free
    while left > 0:
        dealt = False
        for user in order:
            if left == 0:
                break
            if shares[user] < waiting.get(user, 0):
                shares[user] += 1
                left -= 1
                dealt = True
        if not dealt:
            break
    return {user: n for user, n in shares.items() if n}


def line_positions(
    line: Iterable[tuple[str, str]], turns: Mapping[str, datetime]
) -> dict[str, tuple[int, int]]:
    """Where each job stands in a provider's line (issue 21): `line` is the waiting tasks as
    (user, job) pairs, each user's oldest first. Admission deals one task per user per round in
    `turn_order` (a user served goes to the back), so the line is that round robin. For each
    job's first waiting task: (tasks of every user before it, the user's own tasks before it);
    (0, 0) goes next."""
    per_user: dict[str, list[str]] = {}
    for user, job in line:
        per_user.setdefault(user, []).append(job)
    order = turn_order({user: len(jobs) for user, jobs in per_user.items()}, turns)
    positions: dict[str, tuple[int, int]] = {}
    position = 0
    depth = 0
    active = order
    while active:
        for user in active:
            job = per_user[user][depth]
            positions.setdefault(job, (position, depth))
            position += 1
        depth += 1
        active = [user for user in active if len(per_user[user]) > depth]
    return positions
