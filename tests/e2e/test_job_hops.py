"""What one job costs Atelier, counted on the real stack and pinned (ADR 0018, docs/performance.md
"The path of one job").

Every service counts, in its `/metrics`, the JetStream events it published, the durable deliveries
it handled, its write transactions and its object-storage requests. One 1-image job of the
offline provider (one call) is run on a quiet stack; the difference of the sums before and after
is what that job cost, hop by hop. A change that adds a hop fails here and has to say why.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import TYPE_CHECKING

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e

SERVICES = (
    "gateway",
    "profiles",
    "context",
    "dispatch",
    "media",
    "worker-offline",
    "worker-openai",
)
# Subjects of durable (JetStream) consumers; the rest a service handles are request/replies.
_DURABLE = re.compile(
    r"^(jobs\.requested|jobs\.enriched|gen\.[a-z0-9-]+\.requested|gen\.(completed|failed|progress)"
    r"|media\.(landed|assigned)|jobs\.(status|finished)\.>|profiles\.changed)$"
)


def _counts(stack: RunningStack) -> Counter[str]:
    counts: Counter[str] = Counter()
    for name in SERVICES:
        text = httpx.get(f"{stack.stack.url(name)}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                labels = sample.labels
                value = int(sample.value)
                if family.name == "atelier_messages_published":
                    counts[f"published {labels['kind']} {labels['subject']}"] += value
                elif family.name == "atelier_messages_handled":
                    kind = "delivered" if _DURABLE.match(labels["subject"]) else "answered"
                    counts[f"{kind} {labels['subject']}"] += value
                elif family.name == "atelier_db_write_transactions":
                    counts[f"writes {name}"] += value
                elif family.name == "atelier_s3_requests":
                    counts[f"s3 {labels['kind']} {name}"] += value
    return counts


def _settled(stack: RunningStack, timeout_s: float = 30.0) -> Counter[str]:
    """The counts once nothing moved for a second (earlier tests' jobs, settlement, clean-up)."""
    deadline = time.monotonic() + timeout_s
    last = _counts(stack)
    while True:
        time.sleep(1.0)
        now = _counts(stack)
        if now == last or time.monotonic() > deadline:
            return now
        last = now


def _total(diff: Counter[str], prefix: str) -> int:
    return sum(value for key, value in diff.items() if key.startswith(prefix))


def test_one_image_costs_what_the_design_says(running_stack: RunningStack) -> None:
    before = _settled(running_stack)
    with running_stack.user() as user:
        submitted = user.post(
            "/v1/generations",
            json={
                "project": "demo-project",
                "profile_id": running_stack.info.profile_id,
                "prompt": "One counted lighthouse",
                "count": 1,
            },
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 60
        while user.get(f"/v1/generations/{job_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    after = _settled(running_stack)
    diff = Counter({key: after[key] - before[key] for key in after if after[key] != before[key]})
    shown = "\n".join(f"{key}: {value}" for key, value in sorted(diff.items()))
    print(f"one 1-image job:\n{shown}")

    # jobs.requested (gateway), jobs.enriched (context), gen.offline.requested and the
    # "generating" status (dispatch), gen.completed (worker), media.landed (media), the outcome
    # on jobs.finished (dispatch). gen.started is a core-NATS notice, not stored.
    assert _total(diff, "published event") == 7, shown
    assert _total(diff, "published notice") == 1, shown
    # context and dispatch: jobs.requested; dispatch: jobs.enriched, media.landed; the worker:
    # its task; media: gen.completed; profiles and context: the outcome.
    assert _total(diff, "delivered") == 8, shown
    # The quota reservation (profiles), recording the job and handing out its task (dispatch),
    # the landed image (media), the job's outcome (dispatch) and the settlement (profiles).
    assert _total(diff, "writes") == 6, shown
    # The worker's PUT of the image where it stays; media's GET of it and PUT of the thumbnail.
    assert _total(diff, "s3") == 3, shown
