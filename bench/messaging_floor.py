"""Messaging floor: the CPU one message costs in our messaging stack (nats-py, FastStream, our
middlewares), so the CPU per image of throughput.py can be split into the floor the messaging
libraries set and what Atelier's own code adds on top.

    uv run python -m bench.messaging_floor            # 3 rounds of 2000 messages per scenario
    uv run python -m bench.messaging_floor --quick    # 1 round of 500

Only a nats-server runs beside this process (JetStream, file storage, on a free port in a
throwaway directory), with our streams made by `atelier_messaging.ensure_streams`. Every client
runs in this process, one scenario after another, so the client's CPU is `time.process_time()`
and the server's is utime + stime of nats-server from /proc/<pid>/stat (in 10 ms ticks: about
±5 µs per message over 2000 messages, ±20 µs with --quick). The server's /varz message counts
per message show that every layer asks the same of it (consume: a pull request and an ack in,
the message out).

Every message is a `JobStatusChanged` of a finished 4-image job (about 2.4 KB of JSON), the event
the profiles and context services consume from `jobs.finished.<project>.<job>`. Scenarios:

- pydantic alone: `model_dump_json` / `model_validate_json` of that event, no I/O;
- publish: raw nats-py `js.publish`, a bare FastStream `broker.publish` and our `publish_event`
  (each with `Nats-Msg-Id`, waiting for the PubAck), 1 and 8 publishers;
- consume: raw nats-py (`pull_subscribe`, `fetch(1)`, parse, `ack`), a bare FastStream broker and
  our `make_broker` (OpenTelemetry, redelivery backoff, and the Prometheus middleware that
  `atelier_web` adds), each on a `durable_subscriber`; max_workers 1 and 8;
- hop: consume one event and publish another from the handler with `publish_event`, as dispatch
  does, on our broker with max_workers 8 (and 1).

Each scenario first runs `warmup` messages (connections, consumers, caches), then is measured over
the next N; every round runs every scenario in turn (its own subjects and durables), and the table
gives the median of the rounds, so a burst of other work on the machine moves one round, not the
figure. A consumer's window runs from its warmup-th handler call to its (warmup+N)-th, so in
steady state each message's fetch, handling and ack fall inside it once; every ack is checked with
the consumer's info afterwards. Tracing is set up as in a service without a collector
(`configure_telemetry` with no OTLP endpoint: ids made and propagated, no span recorded);
`--env OTEL_SDK_DISABLED=true` runs the same without the SDK at all.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import httpx
import nats
from fastapi import FastAPI
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from atelier_contracts.envelope import derived_event_id
from atelier_contracts.jobs import (
    ExcludedImage,
    JobImage,
    JobProgress,
    JobStatus,
    JobStatusChanged,
    JobView,
    SentReferenceImage,
    Target,
)
from atelier_contracts.subjects import job_finished, job_status
from atelier_devstack.nats import start_nats
from atelier_devstack.processes import Supervisor
from atelier_messaging import (
    durable_subscriber,
    ensure_streams,
    make_broker,
    publish_event,
    stream_for_subject,
)
from atelier_telemetry import configure_telemetry
from atelier_web.metrics import install_metrics
from bench.common import cpu_seconds, ensure_project_venv, env_of, parser, write_result

T = TypeVar("T")
Item = tuple[JobStatusChanged, str]  # an event and the subject it is published on

MAX_WAIT_S = 90.0  # a scenario that has not finished by then is reported as failed, not awaited
SERVICE = "bench-floor"

# --- the event --------------------------------------------------------------------------------

PROMPT = (
    "Mara Vell at the salt-road inn at dusk, lantern light on wet cobbles, her grey coat torn at "
    "the shoulder, the caravan behind her half unloaded; painterly, muted palette"
)
ASSEMBLED = (
    PROMPT
    + ". Characters: Mara Vell, a courier in her forties, scar over the left brow, grey wool coat, "
    "satchel of sealed letters. Location: The Salt Road Inn, a low stone building with a turf "
    "roof, a lantern over the door, salt carts in the yard. Style: book cover, 2:3, no text."
)


def finished_job(project: str, index: int) -> JobView:
    """A completed 4-image job with two reference images, as dispatch publishes it at the end."""
    created = datetime(2026, 11, 25, 10, 0, tzinfo=UTC) + timedelta(seconds=index)
    return JobView(
        id=str(uuid4()),
        project=project,
        user_id="user-7c1e2f0a-demo",
        profile_id="4f0c7e0a-8b1d-4d55-9a52-2f3c1a9e0d11",
        profile_name="OpenAI gpt-image-1 (covers)",
        provider="openai",
        model="gpt-image-1",
        status=JobStatus.COMPLETED,
        prompt=PROMPT,
        assembled_prompt=ASSEMBLED,
        assembly_notes=[
            "element 'The Salt Road' description trimmed to 600 characters",
            "element 'Old Harbour' left out: no description and no image",
        ],
        reference_images=[
            SentReferenceImage(
                element_id=f"element-{k}",
                source="media",
                media_id=str(uuid4()),
                content_type="image/webp",
                width=1024,
                height=1536,
                size_bytes=183_402 + k,
            )
            for k in range(2)
        ],
        excluded_images=[ExcludedImage(element_id="element-9", reason="larger than 20 MB")],
        size="1024x1536",
        count=4,
        options={"quality": "high", "background": "opaque", "seed": 1234 + index},
        target=Target(kind="cover"),
        progress=JobProgress(total=4, landed=4),
        images=[
            JobImage(
                media_id=str(uuid4()),
                index=k,
                width=1024,
                height=1536,
                content_type="image/webp",
            )
            for k in range(4)
        ],
        created_at=created,
        updated_at=created + timedelta(seconds=21),
    )


def status_events(project: str, count: int, *, final: bool) -> list[Item]:
    """`count` events (each its own job and event id) with the subject each is published on."""
    events = []
    for i in range(count):
        event = JobStatusChanged(job=finished_job(project, i))
        subject = (job_finished if final else job_status)(project, event.job.id)
        events.append((event, subject))
    return events


# --- measuring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    client_s: float  # this process: utime + stime of every thread
    server_s: float  # nats-server, from /proc/<pid>/stat
    wall_s: float

    @classmethod
    def now(cls, server_pid: int) -> Mark:
        return cls(time.process_time(), cpu_seconds(server_pid), time.perf_counter())


@dataclass(frozen=True)
class Server:
    pid: int
    url: str
    monitor_url: str

    def messages(self) -> tuple[int, int]:
        """Messages nats-server received and sent so far (its /varz), to see that every layer
        makes the same requests per message."""
        varz = httpx.get(f"{self.monitor_url}/varz", timeout=5).json()
        return int(varz["in_msgs"]), int(varz["out_msgs"])


def per_message(before: tuple[int, int], after: tuple[int, int], count: int) -> dict[str, float]:
    return {
        "server_msgs_in_per_msg": round((after[0] - before[0]) / count, 2),
        "server_msgs_out_per_msg": round((after[1] - before[1]) / count, 2),
    }


@dataclass(frozen=True)
class Plan:
    """One round of every scenario: its own subjects and durables, the same server."""

    server: Server
    n: int
    warmup: int
    round: int

    def project(self, what: str) -> str:
        return f"floor-{what}-r{self.round}"

    @property
    def consumed(self) -> str:
        """The pre-published events each consumer scenario reads: one subject per job, as in
        Atelier (`jobs.finished.<project>.<job>`)."""
        return f"jobs.finished.{self.project('consume')}.*"

    @property
    def one_subject(self) -> str:
        """The same events again, all on one subject (as gen.completed or media.landed are):
        what labelling metrics with the subject costs when every job has a subject of its own."""
        return f"jobs.finished.{self.project('one-subject')}.job"


@dataclass
class Row:
    name: str
    what: str
    workers: int
    n: int
    start: Mark
    end: Mark
    notes: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        wall = self.end.wall_s - self.start.wall_s
        client = (self.end.client_s - self.start.client_s) / self.n * 1e6
        server = (self.end.server_s - self.start.server_s) / self.n * 1e6
        return {
            "scenario": self.name,
            "what": self.what,
            "workers": self.workers,
            "messages": self.n,
            "wall_s": round(wall, 3),
            "msgs_per_s": round(self.n / wall, 1) if wall > 0 else None,
            "client_us_per_msg": round(client, 1),
            "server_us_per_msg": round(server, 1),
            "total_us_per_msg": round(client + server, 1),
            **self.notes,
        }


class Window:
    """Counts handled messages; marks the start after `warmup` and the end `n` later."""

    def __init__(self, warmup: int, n: int, server_pid: int) -> None:
        self.warmup = max(1, warmup)
        self.n = n
        self.server_pid = server_pid
        self.count = 0
        self.start: Mark | None = None
        self.end: Mark | None = None
        self.done = asyncio.Event()

    @property
    def total(self) -> int:
        return self.warmup + self.n

    def tick(self) -> None:
        self.count += 1
        if self.count == self.warmup:
            self.start = Mark.now(self.server_pid)
        elif self.count == self.total:
            self.end = Mark.now(self.server_pid)
            self.done.set()

    def row(self, name: str, what: str, workers: int, notes: dict[str, Any]) -> Row:
        if self.start is None or self.end is None:
            raise RuntimeError(f"{name}: {self.count} of {self.total} messages handled in time")
        return Row(name, what, workers, self.n, self.start, self.end, notes)


async def in_lanes(items: Sequence[T], lanes: int, each: Callable[[T], Awaitable[None]]) -> None:
    """`each(item)` for every item, `lanes` of them at a time (each lane one after another)."""

    async def lane(part: Sequence[T]) -> None:
        for item in part:
            await each(item)

    await asyncio.gather(*(lane(items[i::lanes]) for i in range(lanes)))


async def settled(
    js: JetStreamContext, subject: str, durable: str, expected: int
) -> dict[str, Any]:
    """Waits (briefly) until the consumer has every message acked; what it says about them."""
    stream = stream_for_subject(subject).name
    deadline = time.monotonic() + 10
    while True:
        info = await js.consumer_info(stream, durable)
        acked = (info.ack_floor.consumer_seq if info.ack_floor else 0) or 0
        all_acked = acked >= expected and not info.num_ack_pending
        if all_acked or time.monotonic() > deadline:
            return {"acked": acked, "redelivered": info.num_redelivered or 0}
        await asyncio.sleep(0.02)


def consumer_config(durable: str, subject: str) -> ConsumerConfig:
    """What `durable_subscriber` asks for, for the raw nats-py consumer."""
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        max_deliver=20,
        ack_wait=60.0,
        filter_subject=subject,
    )


# --- brokers ----------------------------------------------------------------------------------


def atelier_broker(url: str) -> NatsBroker:
    """A service's broker: `make_broker` plus what `create_service_app` adds (Prometheus)."""
    broker = make_broker(url, SERVICE)
    install_metrics(FastAPI(), broker)
    return broker


def bare_broker(url: str) -> NatsBroker:
    """FastStream without middlewares; the same per-message log level as ours (DEBUG, so off),
    else FastStream's default would write two INFO lines per message."""
    return NatsBroker(
        url,
        name=f"atelier-{SERVICE}-bare",
        logger=logging.getLogger(f"atelier.{SERVICE}.bare"),
        log_level=logging.DEBUG,
    )


# --- scenarios --------------------------------------------------------------------------------


def model_rows(events: list[Item]) -> list[Row]:
    """Serialising and parsing the event alone: what every row below does once per message.
    Each result is dropped at once, as a handler drops its event."""
    payloads = [event.model_dump_json().encode() for event, _ in events]

    def serialize() -> None:
        for event, _ in events:
            event.model_dump_json()

    def parse() -> None:
        for payload in payloads:
            JobStatusChanged.model_validate_json(payload)

    rows = []
    for name, what, work in (
        ("model_serialize", "pydantic model_dump_json", serialize),
        ("model_parse", "pydantic model_validate_json", parse),
    ):
        work()  # once unmeasured first, as every scenario warms up
        gc.collect()
        start = Mark(time.process_time(), 0.0, time.perf_counter())
        work()
        end = Mark(time.process_time(), 0.0, time.perf_counter())
        rows.append(Row(name, what, 1, len(events), start, end, {"bytes": len(payloads[0])}))
    return rows


async def publish_row(
    plan: Plan,
    name: str,
    what: str,
    lanes: int,
    publish: Callable[[Item], Awaitable[None]],
) -> Row:
    events = status_events(plan.project(name.replace("_", "-")), plan.warmup + plan.n, final=False)
    server = plan.server
    counted = server.messages()
    await in_lanes(events[: plan.warmup], lanes, publish)
    gc.collect()
    start = Mark.now(server.pid)
    await in_lanes(events[plan.warmup :], lanes, publish)
    end = Mark.now(server.pid)
    notes = per_message(counted, server.messages(), len(events))
    return Row(name, what, lanes, plan.n, start, end, notes)


def raw_publisher(js: JetStreamContext) -> Callable[[Item], Awaitable[None]]:
    async def publish(item: Item) -> None:
        event, subject = item
        await js.publish(
            subject,
            event.model_dump_json().encode(),
            timeout=10.0,
            stream=stream_for_subject(subject).name,
            headers={"Nats-Msg-Id": str(event.event_id)},
        )

    return publish


def bare_publisher(broker: NatsBroker) -> Callable[[Item], Awaitable[None]]:
    """What `publish_event` does, minus the trace context it copies into the envelope."""

    async def publish(item: Item) -> None:
        event, subject = item
        await broker.publish(
            event,
            subject,
            headers={"Nats-Msg-Id": str(event.event_id)},
            stream=stream_for_subject(subject).name,
            timeout=10.0,
        )

    return publish


def atelier_publisher(broker: NatsBroker) -> Callable[[Item], Awaitable[None]]:
    async def publish(item: Item) -> None:
        await publish_event(broker, *item)

    return publish


async def publish_rows(plan: Plan) -> list[Row]:
    rows = []
    nc = await nats.connect(plan.server.url, connect_timeout=5)
    try:
        for lanes in (1, 8):
            what = "nats-py js.publish (+ model_dump_json)"
            publisher = raw_publisher(nc.jetstream())
            rows.append(await publish_row(plan, f"publish_raw_{lanes}", what, lanes, publisher))
    finally:
        await nc.close()
    kinds: list[tuple[str, str, Callable[[str], NatsBroker], Any]] = [
        ("faststream", "bare FastStream broker.publish", bare_broker, bare_publisher),
        ("atelier", "publish_event on make_broker", atelier_broker, atelier_publisher),
    ]
    for kind, what, make, publisher_of in kinds:
        broker = make(plan.server.url)
        await broker.start()
        try:
            for lanes in (1, 8):
                name = f"publish_{kind}_{lanes}"
                rows.append(await publish_row(plan, name, what, lanes, publisher_of(broker)))
        finally:
            await broker.stop()
    return rows


async def consume_raw_row(plan: Plan) -> Row:
    """nats-py alone, one message per pull as `durable_subscriber` does: fetch(1), parse, ack."""
    durable = plan.project("raw-1")
    window = Window(plan.warmup, plan.n, plan.server.pid)
    nc = await nats.connect(plan.server.url, connect_timeout=5)
    try:
        js = nc.jetstream()
        pulled = await js.pull_subscribe(
            plan.consumed,
            durable=durable,
            stream=stream_for_subject(plan.consumed).name,
            config=consumer_config(durable, plan.consumed),
        )
        gc.collect()

        async def loop() -> None:
            while window.count < window.total:
                try:
                    messages = await pulled.fetch(1, timeout=5.0)
                except TimeoutError:
                    continue
                for msg in messages:
                    JobStatusChanged.model_validate_json(msg.data)
                    await msg.ack()
                    window.tick()

        await asyncio.wait_for(loop(), MAX_WAIT_S)
        notes = await settled(js, plan.consumed, durable, window.total)
    finally:
        await nc.close()
    return window.row("consume_raw_1", "nats-py fetch(1) + model_validate_json + ack", 1, notes)


async def consume_broker_row(
    plan: Plan, kind: str, workers: int, hop: bool = False, one_subject: bool = False
) -> Row:
    """A `durable_subscriber` whose handler takes the event and does nothing with it, or (`hop`)
    publishes the next status event with `publish_event`, as dispatch's handlers do."""
    where = "_one_subject" if one_subject else ""
    name = f"{'hop' if hop else 'consume'}_{kind}{where}_{workers}"
    subject = plan.one_subject if one_subject else plan.consumed
    durable = plan.project(name.replace("_", "-"))
    broker = atelier_broker(plan.server.url) if kind == "atelier" else bare_broker(plan.server.url)
    window = Window(plan.warmup, plan.n, plan.server.pid)

    async def handle(event: JobStatusChanged) -> None:
        window.tick()

    async def handle_and_publish(event: JobStatusChanged) -> None:
        job = event.job.model_copy(update={"updated_at": datetime.now(UTC)})
        following = JobStatusChanged(event_id=derived_event_id(event.event_id, durable), job=job)
        await publish_event(broker, following, job_status(durable, job.id))
        window.tick()

    durable_subscriber(broker, subject, durable, max_workers=workers)(
        handle_and_publish if hop else handle
    )
    gc.collect()
    await broker.start()
    try:
        await asyncio.wait_for(window.done.wait(), MAX_WAIT_S)
    except TimeoutError:
        pass  # reported by window.row
    finally:
        notes = await settled(broker.connection.jetstream(), subject, durable, window.total)
        await broker.stop()
    if hop:
        what = "consume + publish_event from the handler, make_broker"
    elif one_subject:
        what = "the same, all messages on one subject"
    elif kind == "atelier":
        what = "durable_subscriber on make_broker (otel, backoff, metrics)"
    else:
        what = "durable_subscriber on a bare FastStream broker"
    return window.row(name, what, workers, notes)


async def prepublish(plan: Plan) -> None:
    """The events every consumer scenario reads (each through its own durable), not measured."""
    count = plan.warmup + plan.n
    nc = await nats.connect(plan.server.url, connect_timeout=5)
    try:
        per_job = status_events(plan.project("consume"), count, final=True)
        one = [(event, plan.one_subject) for event, _ in status_events("x", count, final=True)]
        await in_lanes(per_job + one, 32, raw_publisher(nc.jetstream()))
    finally:
        await nc.close()


async def one_round(plan: Plan) -> list[Row]:
    rows = model_rows(status_events(plan.project("model"), plan.n, final=True))
    rows += await publish_rows(plan)
    await prepublish(plan)
    consumers: list[Callable[[], Awaitable[Row]]] = [
        partial(consume_raw_row, plan),
        *(
            partial(consume_broker_row, plan, kind, workers, hop)
            for kind, hop in (("faststream", False), ("atelier", False), ("atelier", True))
            for workers in (1, 8)
        ),
        partial(consume_broker_row, plan, "atelier", 1, one_subject=True),
    ]
    for consume in consumers:
        counted = plan.server.messages()
        row = await consume()
        row.notes.update(per_message(counted, plan.server.messages(), plan.warmup + plan.n))
        rows.append(row)
    return rows


async def measure(server: Server, n: int, warmup: int, rounds: int) -> list[list[Row]]:
    await ensure_streams(server.url)
    results = []
    for index in range(rounds):
        results.append(await one_round(Plan(server, n, warmup, index)))
        print(f"round {index + 1}/{rounds} done", flush=True)
    return results


# --- the result -------------------------------------------------------------------------------

FIGURES = ("client_us_per_msg", "server_us_per_msg", "msgs_per_s")


def summarize(rounds: list[list[Row]]) -> list[dict[str, Any]]:
    """Per scenario: the median of each figure over the rounds, and every round's figures."""
    summary = []
    for per_round in zip(*rounds, strict=True):
        figures = [row.figures() for row in per_round]
        first = figures[0]
        medians = {key: round(statistics.median(f[key] for f in figures), 1) for key in FIGURES}
        summary.append(
            {
                "scenario": first["scenario"],
                "what": first["what"],
                "workers": first["workers"],
                "messages_per_round": first["messages"],
                **medians,
                "total_us_per_msg": round(
                    medians["client_us_per_msg"] + medians["server_us_per_msg"], 1
                ),
                "rounds": [
                    {k: v for k, v in f.items() if k not in ("scenario", "what", "workers")}
                    for f in figures
                ],
            }
        )
    return summary


def layers(by_name: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """What each layer adds per message (medians, µs), from pairs of scenarios."""

    def diff(upper: str, lower: str) -> dict[str, float]:
        return {
            key: round(by_name[upper][key] - by_name[lower][key], 1)
            for key in ("client_us_per_msg", "server_us_per_msg", "total_us_per_msg")
        }

    pairs = {
        "publish: FastStream over nats-py (1 publisher)": ("publish_faststream_1", "publish_raw_1"),
        "publish: publish_event + middlewares over bare FastStream (1)": (
            "publish_atelier_1",
            "publish_faststream_1",
        ),
        "consume: FastStream over nats-py (max_workers=1)": (
            "consume_faststream_1",
            "consume_raw_1",
        ),
        "consume: our middlewares over bare FastStream (max_workers=1)": (
            "consume_atelier_1",
            "consume_faststream_1",
        ),
        "consume: our middlewares over bare FastStream (max_workers=8)": (
            "consume_atelier_8",
            "consume_faststream_8",
        ),
        "consume: a metrics label per job subject, over one subject (max_workers=1)": (
            "consume_atelier_1",
            "consume_atelier_one_subject_1",
        ),
        "hop: publishing from the handler, over consuming only (max_workers=8)": (
            "hop_atelier_8",
            "consume_atelier_8",
        ),
    }
    return {label: diff(*pair) for label, pair in pairs.items()}


def table(summary: list[dict[str, Any]]) -> str:
    header = (
        f"{'scenario':<30} {'workers':>7} {'msgs/s':>8} {'client µs':>10} {'(min-max)':>13} "
        f"{'server µs':>10} {'total µs':>9}  what"
    )
    lines = [header, "-" * len(header)]
    for row in summary:
        clients = [r["client_us_per_msg"] for r in row["rounds"]]
        spread = f"{min(clients):.0f}-{max(clients):.0f}"
        lines.append(
            f"{row['scenario']:<30} {row['workers']:>7} {row['msgs_per_s']:>8} "
            f"{row['client_us_per_msg']:>10} {spread:>13} {row['server_us_per_msg']:>10} "
            f"{row['total_us_per_msg']:>9}  {row['what']}"
        )
    return "\n".join(lines)


def main() -> None:
    ensure_project_venv()
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument(
        "-n", type=int, default=None, help="messages per scenario and round (2000; quick 500)"
    )
    cli.add_argument(
        "--rounds", type=int, default=None, help="rounds of every scenario (3; quick 1)"
    )
    cli.add_argument(
        "--warmup", type=int, default=None, help="unmeasured messages first (200; quick 50)"
    )
    args = cli.parse_args()
    n = args.n or (500 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 3)
    warmup = args.warmup or (50 if args.quick else 200)
    env = env_of(args.env)
    os.environ.update(env)  # e.g. OTEL_SDK_DISABLED=true: the same run without tracing
    # WARNING: FastStream logs every subscriber task it stops at INFO (hundreds per round).
    configure_telemetry(SERVICE, level="WARNING")
    load_before = [round(x, 2) for x in os.getloadavg()]
    var_dir = Path(tempfile.mkdtemp(prefix="atelier-bench-floor-"))
    started = time.monotonic()
    try:
        with Supervisor(log_dir=var_dir / "logs") as supervisor:
            nats_server = start_nats(supervisor, var_dir / "nats")
            pid = supervisor.process("nats").pid
            server = Server(pid, nats_server.url, nats_server.monitor_url)
            results = asyncio.run(measure(server, n, warmup, rounds))
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    summary = summarize(results)
    by_name = {row["scenario"]: row for row in summary}
    result = {
        "env": env,
        "messages_per_round": n,
        "rounds": rounds,
        "warmup": warmup,
        "event": "JobStatusChanged of a finished 4-image job",
        "event_bytes": by_name["model_serialize"]["rounds"][0]["bytes"],
        "load_average_before": load_before,
        "run_s": round(time.monotonic() - started, 1),
        "scenarios": summary,
        "layers_us_per_msg": layers(by_name),
    }
    print(table(summary))
    print(f"load average before {load_before}, after {[round(x, 2) for x in os.getloadavg()]}")
    write_result("messaging_floor", result, args.out, args.quick)


if __name__ == "__main__":
    main()
