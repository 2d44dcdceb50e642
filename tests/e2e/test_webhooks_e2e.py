"""Signed completion webhooks on the real stack (issue 21, item 3; ADR 0025).

Receivers on loopback verify every request with the `standardwebhooks` package, as an
integrator's backend would. An operator registers them through the profiles admin API; a job
runs and an image is assigned; then: every event arrives signed and once, a receiver that
fails twice is retried with backoff and counted delivered once, a redelivered outcome is not
sent twice, and an endpoint the SSRF guard refuses is never reached and says why in its attempts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import nats
import pytest
from fastapi import FastAPI, Request, Response
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from atelier_contracts.subjects import Subject, job_finished
from atelier_contracts.webhooks import WebhookDelivery
from atelier_fakes import run_fake_in_thread
from tests.e2e.jobs import wait_final

if TYPE_CHECKING:
    from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e


@dataclass
class Receiver:
    """A backend's webhook route: verifies, records, and fails the first `fail_first` tries."""

    secret: str = ""
    fail_first: int = 0
    requests: int = 0
    refused_signatures: int = 0
    accepted: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.requests += 1
                if self.requests <= self.fail_first:
                    return Response(status_code=503, content="not yet")
                try:
                    payload = Webhook(self.secret).verify(body, dict(request.headers))
                except WebhookVerificationError:
                    self.refused_signatures += 1
                    return Response(status_code=401)
                self.accepted.append(
                    {"id": request.headers["webhook-id"], "raw": body.decode(), **payload}
                )
            return Response(status_code=204)

        return app

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [a for a in self.accepted if a["type"] == kind]


@pytest.fixture(scope="module")
def receivers() -> Iterator[dict[str, tuple[Receiver, str]]]:
    made = {"steady": Receiver(), "flaky": Receiver(fail_first=2)}
    stops: list[Callable[[], None]] = []
    served: dict[str, tuple[Receiver, str]] = {}
    for name, receiver in made.items():
        url, stop = run_fake_in_thread(receiver.app())
        stops.append(stop)
        served[name] = (receiver, f"{url}/hook")
    yield served
    for stop in stops:
        stop()


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


async def _republish(nats_url: str, subject: str, data: bytes | None = None) -> bytes:
    """Store again, under a fresh `Nats-Msg-Id` (a redelivery past the duplicate window), the
    last message of `subject` (or `data`); returns what was stored."""
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        if data is None:
            stream = "ATELIER_STATUS" if subject.startswith("jobs.") else "ATELIER_WEBHOOKS"
            data = (await js.get_last_msg(stream, subject)).data or b""
        await js.publish(subject, data, headers={"Nats-Msg-Id": str(uuid4())})
        return data
    finally:
        await connection.close()


def test_operators_webhooks_are_signed_retried_and_sent_once(
    running_stack: RunningStack, receivers: dict[str, tuple[Receiver, str]]
) -> None:
    info = running_stack.info
    project = info.projects["user"]
    steady, steady_url = receivers["steady"]
    flaky, flaky_url = receivers["flaky"]
    endpoints: list[str] = []
    with running_stack.admin() as admin:

        def register(body: dict[str, Any]) -> dict[str, Any]:
            answer = admin.post("/admin/v1/webhooks", json=body)
            assert answer.status_code == 201, answer.text
            endpoints.append(answer.json()["id"])
            return dict(answer.json())

        try:
            # Refused with a 4xx naming the field: not a web address (or one with a password).
            for url in ("ftp://example.com/hook", "https://user:pw@example.com/hook"):
                refused = admin.post(
                    "/admin/v1/webhooks", json={"url": url, "events": ["job.completed"]}
                )
                assert refused.status_code == 422 and "url" in refused.text, refused.text
            everything = ["job.completed", "job.failed", "job.cancelled", "media.assigned"]
            a = register(
                {
                    "url": steady_url,
                    "events": everything,
                    "project": project,
                    "allow_private_origin": True,
                }
            )
            steady.secret = a["secret"]
            b = register(
                {
                    "url": flaky_url,
                    "events": ["job.completed"],
                    "project": project,
                    "allow_private_origin": True,
                }
            )
            flaky.secret = b["secret"]
            # Registered for loopback over https without the operator's approval: the guard
            # refuses every attempt, and the attempts say why.
            c = register(
                {"url": "https://127.0.0.1:9/hook", "events": ["job.completed"], "project": project}
            )
            listed = admin.get("/admin/v1/webhooks").json()
            assert {e["id"] for e in listed} >= {a["id"], b["id"], c["id"]}
            assert all(e["secret"] is None for e in listed)  # shown once, at registration

            with running_stack.user() as user:
                submitted = user.post(
                    "/v1/generations",
                    json={
                        "project": project,
                        "profile_id": info.profile_id,
                        "prompt": "A lighthouse that calls back",
                        "count": 1,
                    },
                )
                assert submitted.status_code == 202, submitted.text
                job_id = submitted.json()["id"]
                job = wait_final(user, job_id, 60)
                assert job["status"] == "completed"
                media_id = job["images"][0]["media_id"]
                assigned = user.post(f"/v1/media/{media_id}/assign", json={"target": "cover"})
                assert assigned.status_code == 202, assigned.text

            _wait_for(lambda: len(steady.of_type("media.assigned")) == 1, "the assignment")
            _wait_for(lambda: len(flaky.of_type("job.completed")) == 1, "the flaky receiver")
            [completed] = steady.of_type("job.completed")
            assert completed["data"]["job_id"] == job_id
            assert completed["data"]["images"][0]["media_id"] == media_id
            assert completed["data"]["error"] is None
            [cover] = steady.of_type("media.assigned")
            assert cover["data"] == {
                "media_id": media_id,
                "project": project,
                "target": "cover",
                "element_id": None,
                "assigned_by": cover["data"]["assigned_by"],
            }
            # Fails twice, accepted on the third try: one delivery, three attempts.
            assert flaky.requests == 3 and flaky.refused_signatures == 0
            assert flaky.of_type("job.completed")[0]["id"] == completed["id"]
            b_now = admin.get(f"/admin/v1/webhooks/{b['id']}").json()
            assert (b_now["delivered"], b_now["pending"], b_now["failed"]) == (1, 0, 0)
            attempts = admin.get(f"/admin/v1/webhooks/{b['id']}/attempts").json()["attempts"]
            assert [(x["attempt"], x["status_code"], x["outcome"]) for x in attempts] == [
                (3, 204, "delivered"),
                (2, 503, "retrying"),
                (1, 503, "retrying"),
            ]

            # The outcome comes again past JetStream's duplicate window, and so does the
            # delivery itself: neither receiver hears it twice.
            asyncio.run(_republish(info.nats_url, job_finished(project, job_id)))
            again = WebhookDelivery(
                endpoint_id=a["id"],
                webhook_id=completed["id"],
                event_type="job.completed",
                body=completed["raw"],
            )
            asyncio.run(
                _republish(
                    info.nats_url, Subject.WEBHOOKS_DELIVER, again.model_dump_json().encode()
                )
            )
            _wait_for(
                lambda: admin.get(f"/admin/v1/webhooks/{c['id']}").json()["failed"] == 1,
                "the refused endpoint to give up",
            )
            time.sleep(1.0)  # room for any second delivery to arrive (none may)
            assert len(steady.of_type("job.completed")) == 1
            assert len(flaky.of_type("job.completed")) == 1 and flaky.requests == 3
            assert steady.refused_signatures == 0
            c_attempts = admin.get(f"/admin/v1/webhooks/{c['id']}/attempts").json()["attempts"]
            assert len(c_attempts) == 4  # the first try and three retries
            assert all(x["status_code"] is None for x in c_attempts)
            assert "loopback" in c_attempts[0]["error"], c_attempts[0]
        finally:
            for endpoint_id in endpoints:
                assert admin.delete(f"/admin/v1/webhooks/{endpoint_id}").status_code == 204
            assert (
                admin.get(f"/admin/v1/webhooks/{endpoints[0]}").status_code == 404
                if endpoints
                else True
            )
