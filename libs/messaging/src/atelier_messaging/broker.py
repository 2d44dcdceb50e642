"""How every service talks to NATS.

- Streams are declared idempotently at start-up by whoever starts first (`ensure_streams`), each
  with a byte limit and a discard policy (`atelier_settings.StreamLimits`). An interest stream
  (ATELIER_JOBS, ADR 0015) gets its durable consumers declared with it.
- Every publish goes through `publish_event`: the event id becomes `Nats-Msg-Id` (JetStream drops
  duplicates inside the window), and the call waits for JetStream's ack, so "published" means
  "stored". A stream that is full and refuses new messages raises `StreamFull`, an
  `AtelierError` an HTTP handler answers as is.
- The trace context travels in every message's headers (`traceparent`), written on publish and
  read on consume by FastStream's `NatsTelemetryMiddleware`, which every broker carries
  (`make_broker`; ADR 0027).
- Every JetStream subscriber is a durable pull consumer with explicit acks (`durable_subscriber`);
  a handler that raises gets its message redelivered later with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
from faststream import AckPolicy, BaseMiddleware, StreamMessage
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.subscriber.usecases import LogicSubscriber
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, BadRequestError, NotFoundError
from pydantic import BaseModel

from atelier_contracts.envelope import Event
from atelier_contracts.errors import AtelierError
from atelier_contracts.registry import Service, published_by
from atelier_contracts.subjects import ALL_STREAMS, RETIRED_STREAMS, StreamSpec
from atelier_messaging.consumers import (
    DEFAULT_ACK_WAIT_S,
    INTEREST_CONSUMERS,
    consumer_config,
    declared_consumer,
)
from atelier_settings import StreamLimits
from atelier_telemetry import MESSAGES_PUBLISHED, subject_label

log = logging.getLogger("atelier.messaging")

E = TypeVar("E", bound=Event)
R = TypeVar("R", bound=BaseModel)


def _subject_matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def stream_for_subject(subject: str) -> StreamSpec:
    for spec in ALL_STREAMS:
        if any(_subject_matches(pattern, subject) for pattern in spec.subjects):
            return spec
    raise LookupError(f"no stream stores subject {subject!r}")


def delivery_attempt(msg: StreamMessage[Any]) -> int:
    """1 on first delivery; JetStream counts redeliveries in the message metadata."""
    raw = msg.raw_message
    try:
        return int(raw.metadata.num_delivered)
    except Exception:  # core NATS message or in-memory test broker: no metadata
        return 1


class RedeliveryBackoffMiddleware(BaseMiddleware):
    """The acks of a JetStream message besides the final one.

    - While the handler runs, an in-progress ack every `in_progress_every_s` (a third of the
      default ack wait), so only a dead process's messages are redelivered, however long a
      handler waits on a lock or on storage.
    - A failed message is naked with a growing delay instead of at once. Without it a handler
      failing on a dependency outage (object storage down for 10 s) burns all of `max_deliver`
      in milliseconds and the message is gone.
    """

    base_delay_s = 0.5
    max_delay_s = 30.0
    in_progress_every_s = DEFAULT_ACK_WAIT_S / 3

    async def consume_scope(self, call_next: Callable[..., Awaitable[Any]], msg: Any) -> Any:
        if not _is_jetstream(msg):
            return await call_next(msg)
        beating = _InProgressBeat(msg, self.in_progress_every_s)
        try:
            return await call_next(msg)
        except Exception:
            attempt = delivery_attempt(msg)
            delay = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
            log.exception(
                "handler failed; redelivering",
                extra={"subject": msg.raw_message.subject, "attempt": attempt, "delay": delay},
            )
            beating.stop()
            await msg.nack(delay=delay)
            raise
        finally:
            beating.stop()


class _InProgressBeat:
    """Sends `msg.in_progress()` every `every_s` until stopped. A timer, not a task per message:
    most handlers end in milliseconds, long before the first beat."""

    def __init__(self, msg: Any, every_s: float) -> None:
        self._msg = msg
        self._every_s = every_s
        self._loop = asyncio.get_running_loop()
        self._sending: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(every_s, self._beat)

    def _beat(self) -> None:
        if self._sending is None or self._sending.done():
            self._sending = self._loop.create_task(self._send())
        self._timer = self._loop.call_later(self._every_s, self._beat)

    async def _send(self) -> None:
        try:
            await self._msg.in_progress()
        except Exception:  # a lost beat only risks a redelivery, which handlers tolerate
            log.debug("in-progress ack failed", exc_info=True)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _is_jetstream(msg: Any) -> bool:
    raw = getattr(msg, "raw_message", None)
    reply = getattr(raw, "reply", "") or ""
    return isinstance(reply, str) and reply.startswith("$JS.ACK.")


def nats_servers(nats_url: str) -> list[str]:
    """`ATELIER_NATS_URL` as a server list: one URL, or several separated by commas (the nodes
    of a cluster; the client moves to another when one goes away)."""
    return [url.strip() for url in nats_url.split(",") if url.strip()]


def make_broker(nats_url: str, service: str) -> NatsBroker:
    return NatsBroker(
        nats_servers(nats_url),
        name=f"atelier-{service}",
        middlewares=[NatsTelemetryMiddleware(), RedeliveryBackoffMiddleware],
        # Keep reconnecting through a NATS restart instead of giving up after two minutes.
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        graceful_timeout=15.0,
        logger=logging.getLogger(f"atelier.{service}.broker"),
        # "Received" / "Processed" for every message would be two log lines per event in every
        # service; they show at DEBUG. Handler errors are still logged at ERROR.
        log_level=logging.DEBUG,
    )


# JetStream's codes for a publish refused for want of room (nats-server's errors.json).
_STREAM_LIMIT_REACHED = 10077  # JSStreamStoreFailedF: "maximum bytes exceeded" and friends
_SERVER_STORE_FULL = {
    10023,  # JSInsufficientResourcesErr: the server's JetStream store is full
    10047,  # JSStorageResourcesExceededErr
    10028,  # JSMemoryResourcesExceededErr
    10002,  # JSAccountResourcesExceededErr
}
_RETENTION = {
    "limits": RetentionPolicy.LIMITS,
    "interest": RetentionPolicy.INTEREST,
}


class StreamFull(AtelierError):
    """JetStream refused a message because the stream (or the server's store) is full.

    Temporary: room comes back as stored messages age out or are consumed. HTTP handlers answer
    it as is (503 `stream_full`), so a user is told why instead of "try again shortly" forever.
    """

    status_code = 503
    code = "stream_full"

    def __init__(self, message: str, *, stream: str) -> None:
        super().__init__(message)
        self.stream = stream


def _size(n: int) -> str:
    mib = 1024 * 1024
    if n >= 1024 * mib:
        return f"{n / (1024 * mib):.2f} GiB"
    return f"{n / mib:.0f} MiB" if n >= mib else f"{n:,} bytes"


async def ensure_streams(
    nats_url: str, replicas: int = 1, limits: StreamLimits | None = None
) -> None:
    """Create or update every stream; safe to run from many processes at once.

    Limits come from `limits`, else from the environment (`ATELIER_STREAM_*`). An existing
    stream is updated in place and keeps its messages: a byte limit below what a stream already
    holds is applied once it holds less (until then its current size is the limit, with a
    warning), so lowering a setting never drops stored work. An interest stream's durable
    consumers (`INTEREST_CONSUMERS`) exist before this returns, and before a limits stream is
    switched to interest, so no message is stored or kept without them.
    """
    limits = limits if limits is not None else StreamLimits()
    nc = await nats.connect(nats_servers(nats_url), connect_timeout=5)
    try:
        # In a fresh cluster a replicated stream answers once its raft group is formed, and every
        # service declares them at once: allow more than the client's default 5 s.
        js = nc.jetstream(timeout=10)
        for name in RETIRED_STREAMS:
            await _retire(js, name)
        for spec in ALL_STREAMS:
            max_bytes, discard = limits.for_stream(spec.name)
            config = StreamConfig(
                name=spec.name,
                subjects=list(spec.subjects),
                retention=(
                    RetentionPolicy.WORK_QUEUE if spec.work_queue else _RETENTION[spec.retention]
                ),
                storage=StorageType.FILE,
                num_replicas=replicas,
                max_age=spec.max_age_s,
                duplicate_window=spec.duplicate_window_s,
                max_bytes=max_bytes,
                discard=DiscardPolicy.NEW if discard == "new" else DiscardPolicy.OLD,
            )
            try:
                await _declare_patiently(js, spec, config)
            except APIError as exc:
                if exc.err_code in _SERVER_STORE_FULL:
                    raise RuntimeError(
                        f"JetStream cannot reserve {_size(max_bytes)} for stream {spec.name} "
                        f"({exc.description}): the streams' limits (ATELIER_STREAM_*_MAX_BYTES) "
                        "must add up to less than the server's max_file_store"
                    ) from exc
                raise
    finally:
        await nc.close()


async def _retire(js: JetStreamContext, name: str) -> None:
    """Delete a stream of an earlier version: its subjects now belong to another stream, which
    cannot be declared while this one holds them. What it still held is said where operators
    look: an outcome not yet settled there leaves its reservation held until an admin releases
    it (upgrade with the queues drained, docs/operations.md)."""
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        return
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(name)
    log.warning(
        "retired stream deleted",
        extra={"stream": name, "messages": info.state.messages, "subjects": info.config.subjects},
    )


async def _declare_patiently(
    js: JetStreamContext, spec: StreamSpec, config: StreamConfig, attempts: int = 3
) -> None:
    """`_declare`, again when JetStream did not answer: in a fresh cluster, requests that race
    other processes declaring the same stream can go unanswered while its raft group forms; the
    next try finds the stream settled."""
    for attempt in range(1, attempts + 1):
        try:
            await _declare(js, spec, config)
            return
        except nats.errors.TimeoutError:
            if attempt == attempts:
                raise
            log.warning(
                "declaring a stream got no answer; trying again",
                extra={"stream": spec.name, "attempt": attempt},
            )


async def _declare(js: JetStreamContext, spec: StreamSpec, config: StreamConfig) -> None:
    name = spec.name
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            await _declare_consumers(js, spec)
            return
        # Another process created it meanwhile. In a cluster, a create that races another one
        # for the same stream may get no answer at all: the stream is there all the same.
        except (BadRequestError, nats.errors.TimeoutError):
            info = await js.stream_info(name)
    # Before any switch to interest retention: a message is kept only for consumers that exist.
    await _declare_consumers(js, spec)
    held = info.state.bytes
    if config.max_bytes is not None and 0 <= config.max_bytes < held:
        log.warning(
            "stream holds more than its limit; the limit applies once it holds less",
            extra={"stream": name, "bytes": held, "max_bytes": config.max_bytes},
        )
        config.max_bytes = held
    try:
        await js.update_stream(config)
    except APIError as exc:
        if info.config.retention == config.retention:
            raise
        raise RuntimeError(
            f"nats-server refused to change stream {name} from {_policy(info.config.retention)} "
            f"to {_policy(config.retention)} retention in place ({exc.description}). Upgrade "
            "nats-server "
            "(2.10 and later allow limits <-> interest), or recreate the stream: stop the "
            "gateway, wait until context and dispatch have handled its backlog, then "
            f"`nats stream rm {name}` and start the services again "
            "(docs/adr/0015-jobs-stream-interest-retention.md)"
        ) from exc
    if info.config.retention != config.retention:
        log.warning(
            "stream retention changed in place",
            extra={
                "stream": name,
                "from": _policy(info.config.retention),
                "to": _policy(config.retention),
            },
        )


def _policy(retention: RetentionPolicy | str | None) -> str:
    # nats-py leaves a stream info's policies as the server's strings.
    return str(getattr(retention, "value", retention) or "limits")


async def _declare_consumers(js: JetStreamContext, spec: StreamSpec) -> None:
    if spec.retention != "interest":
        return
    for consumer in INTEREST_CONSUMERS:
        if not any(_subject_matches(pattern, consumer.subject) for pattern in spec.subjects):
            continue
        try:
            await js.consumer_info(spec.name, consumer.durable)
        except NotFoundError:
            # Creating the same consumer twice (another process starting) is not an error; in a
            # cluster the racing create may go unanswered, so a silence is checked, not trusted.
            try:
                await js.add_consumer(spec.name, consumer.config())
            except nats.errors.TimeoutError:
                await js.consumer_info(spec.name, consumer.durable)


def declare_publishers(broker: NatsBroker, service: Service) -> None:
    """Declare on the broker the events and notices `service` publishes, as the subject registry
    says, so its AsyncAPI document shows them beside its subscriptions. The declarations carry
    no behaviour: events go out through `publish_event` (which adds the event id as
    `Nats-Msg-Id`) and notices through `publish_notice`, both counted; the broker's telemetry
    middleware adds the trace context to every message. Requests are not declared here (an
    in-memory test broker would answer them itself); the document generator adds them from the
    registry."""
    for channel in published_by(service):
        if channel.kind == "request":
            continue
        broker.publisher(
            channel.address,
            schema=channel.payload,
            title=f"{channel.address}:{service}",
            description=f"{channel.kind}: {channel.summary}",
        )


async def publish_notice(broker: NatsBroker, event: Event, subject: str) -> None:
    """Publish on core NATS only: nothing stored, nobody acks, a subscriber that is not
    listening misses it. For observations nothing durable depends on (`gen.started`)."""
    await broker.publish(event, subject)
    MESSAGES_PUBLISHED.labels(subject=subject_label(subject), kind="notice").inc()


async def publish_event(broker: NatsBroker, event: Event, subject: str) -> None:
    """Publish durably: returns once JetStream has stored the event (or raises).

    A full stream that refuses new messages raises `StreamFull`.
    """
    stream = stream_for_subject(subject).name
    try:
        await broker.publish(
            event,
            subject,
            headers={"Nats-Msg-Id": str(event.event_id)},
            stream=stream,
            timeout=10.0,
        )
        MESSAGES_PUBLISHED.labels(subject=subject_label(subject), kind="event").inc()
    except APIError as exc:
        full = await _refused_for_room(broker, stream, exc)
        if full is None:
            raise
        log.warning(
            "stream full; message refused",
            extra={"stream": stream, "subject": subject, "reason": exc.description},
        )
        raise full from exc


async def _refused_for_room(broker: NatsBroker, stream: str, exc: APIError) -> StreamFull | None:
    description = (exc.description or "").lower()
    if exc.err_code == _STREAM_LIMIT_REACHED and "maximum" in description:
        limit = await _stream_limit(broker, stream)
        holds = f"it holds at most {_size(limit)}" if limit and limit > 0 else "it is at its limit"
        return StreamFull(
            f"Atelier's queue {stream} is full ({holds}, {StreamLimits.env_of(stream)}), so "
            "nothing more is accepted into it for now. This is temporary: room comes back as "
            "stored work is handled or ages out; try again later.",
            stream=stream,
        )
    if exc.err_code in _SERVER_STORE_FULL:
        return StreamFull(
            f"Atelier's message store is full (JetStream: {exc.description}), so {stream} "
            "accepts nothing more for now. This is temporary: room comes back as stored work "
            "ages out, or an operator makes room; try again later.",
            stream=stream,
        )
    return None


async def _stream_limit(broker: NatsBroker, stream: str) -> int | None:
    try:
        info = await broker.connection.jetstream().stream_info(stream)
    except Exception:  # the refusal is the news; its size is a detail
        return None
    max_bytes: int | None = info.config.max_bytes
    return max_bytes


async def query(
    broker: NatsBroker,
    subject: str,
    request: BaseModel,
    reply_type: type[R],
    timeout: float = 3.0,  # noqa: ASYNC109 - a per-request deadline, not a cancellation scope
) -> R:
    """Core NATS request/reply with typed request and answer."""
    response = await broker.request(request, subject, timeout=timeout)
    return reply_type.model_validate_json(response.body)


def durable_subscriber(
    broker: NatsBroker,
    subject: str,
    durable: str,
    *,
    max_deliver: int = 20,
    ack_wait_s: float = DEFAULT_ACK_WAIT_S,
    max_workers: int = 1,
    batch_size: int = 1,
    max_ack_pending: int | None = None,
) -> LogicSubscriber[Any]:
    """A durable pull consumer with explicit acks.

    Ack policy: ack on success; on an exception the backoff middleware naks with a delay (retry);
    after `max_deliver` deliveries JetStream stops and handlers see it coming via
    `delivery_attempt`, so they can end the job with a reason instead of dropping it.
    Processes sharing `durable` split the messages: that is how we scale out.

    Keep `batch_size` at 1 unless messages come in steady bursts: nats-py's fetch of N returns
    only when N messages came or the pull expired (`timeout`, 5 s), so a lone message would
    wait. One message per pull costs one small request, answered by the message itself.

    `max_ack_pending` caps the messages delivered and not yet acked across every process of the
    consumer (JetStream's default: 1,000). A pull consumer is already bounded by what its
    processes ask for; -1 lifts the cap for consumers whose handlers wait long (provider calls).

    A consumer of an interest stream is declared by `ensure_streams` (`INTEREST_CONSUMERS`): its
    settings here must be the declared ones.
    """
    spec = stream_for_subject(subject)
    config = consumer_config(subject, durable, max_deliver, ack_wait_s, max_ack_pending)
    declared = declared_consumer(durable)
    if declared is not None and declared.config() != config:
        raise ValueError(
            f"durable {durable} is declared in atelier_messaging.consumers as {declared}; "
            "subscribe with the same settings or change the declaration"
        )
    return broker.subscriber(
        subject,
        stream=JStream(name=spec.name, declare=False),
        durable=durable,
        pull_sub=PullSub(batch_size=batch_size, timeout=5.0),
        config=config,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_workers=max_workers,
    )
