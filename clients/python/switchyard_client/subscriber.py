"""A durable subscriber to ``switchyard.events``: webhook-free delivery of lifecycle events.

The subscriber owns a quorum queue of the caller's naming, bound on ``switchyard.events`` with
the caller's binding keys (``payment.#``, ``*.*.completed``, ...). Because the queue is durable
and replicated, events published while the subscriber is away, or while the broker restarts,
wait for it; the subscriber reconnects by itself, declares everything again and goes on.

Guarantees, per delivery, in order:

1. an event whose ``event_id`` was handled already is acknowledged and dropped;
2. an event older (lower ``seq``) than one already handled for its command is *stale*: it is
   acknowledged and handed to ``on_stale`` if given, never to the handler as the current status;
3. an ``unknown`` event goes to ``on_unknown`` when given (the provider may have acted; a
   person or a status check must decide), else to the handler like any other;
4. the message is acknowledged only after the handler returned. A handler that raises gets the
   event again after ``retry_delay`` (nothing is recorded, so the retry is not a duplicate).

Events are handled one at a time, in delivery order. For more throughput run several
subscribers on the same queue, with a shared :class:`~switchyard_client.state.SubscriberState`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aio_pika import ExchangeType
from aio_pika.abc import AbstractIncomingMessage
from pydantic import ValidationError

from .link import TRANSIENT_ERRORS, Link, Session
from .models import Event, Status
from .state import MemoryState, SubscriberState
from .watcher import EVENTS_EXCHANGE

log = logging.getLogger("switchyard_client.subscriber")

EventHandler = Callable[[Event], Awaitable[None]]


@dataclass
class SubscriberStats:
    """Counts since the subscriber started."""

    handled: int = 0
    unknown: int = 0
    duplicates: int = 0
    stale: int = 0
    handler_failures: int = 0
    undecodable: int = 0


class Subscriber:
    """Consumes lifecycle events from a durable quorum queue (see the module's docstring).

    ``delivery_limit`` (the quorum queue's ``x-delivery-limit``) bounds how often one event is
    retried after handler failures; past it the broker drops it, or dead-letters it to
    ``dead_letter_exchange`` when one is given. Both are queue arguments: changing them on an
    existing queue makes the broker refuse the declaration (raised as ``BrokerRefused``).
    """

    def __init__(
        self,
        amqp_url: str,
        *,
        queue: str,
        bindings: Sequence[str],
        handler: EventHandler,
        on_unknown: EventHandler | None = None,
        on_stale: EventHandler | None = None,
        state: SubscriberState | None = None,
        prefetch: int = 50,
        retry_delay: float = 1.0,
        delivery_limit: int | None = None,
        dead_letter_exchange: str | None = None,
        connect_timeout: float = 15.0,
        stop_grace: float = 10.0,
    ) -> None:
        if not bindings:
            raise ValueError("give at least one binding key, e.g. 'payment.#' or '#'")
        self.queue = queue
        self.bindings = tuple(bindings)
        self.stats = SubscriberStats()
        self._handler = handler
        self._on_unknown = on_unknown
        self._on_stale = on_stale
        self._state: SubscriberState = state if state is not None else MemoryState()
        self._prefetch = prefetch
        self._retry_delay = retry_delay
        self._arguments: dict[str, Any] = {"x-queue-type": "quorum"}
        if delivery_limit is not None:
            self._arguments["x-delivery-limit"] = delivery_limit
        if dead_letter_exchange is not None:
            self._arguments["x-dead-letter-exchange"] = dead_letter_exchange
        self._connect_timeout = connect_timeout
        self._stop_grace = stop_grace
        self._link = Link(
            amqp_url,
            name=f"switchyard-subscriber {queue}",
            set_up=self._set_up,
            connect_timeout=connect_timeout,
        )
        self._inbox: asyncio.Queue[tuple[int, AbstractIncomingMessage]] = asyncio.Queue()
        self._session: Session | None = None
        self._worker: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def reconnects(self) -> int:
        """How many times the subscriber re-established its connection."""
        return self._link.reconnects

    @property
    def connected(self) -> bool:
        """Whether the subscriber is consuming right now."""
        return self._link.connected

    async def start(self) -> None:
        """Declares and binds the queue and starts consuming; returns once it consumes."""
        if self._worker is None:
            self._worker = asyncio.create_task(
                self._work(), name=f"switchyard subscriber {self.queue}"
            )
        await self._link.start(self._connect_timeout)

    async def stop(self) -> None:
        """Lets the event in hand finish (within ``stop_grace``), then disconnects."""
        self._stopping.set()
        if self._worker is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), self._stop_grace)
            except asyncio.TimeoutError:
                log.warning("%s: the handler outlived the stop grace; cancelling it", self.queue)
                self._worker.cancel()
                await asyncio.gather(self._worker, return_exceptions=True)
        await self._link.close()

    async def run(self) -> None:
        """Runs until cancelled (for a service whose only job is consuming)."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> Subscriber:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _set_up(self, session: Session) -> None:
        channel = await session.connection.channel(publisher_confirms=False)
        session.watch(channel)
        await channel.set_qos(prefetch_count=self._prefetch)
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(self.queue, durable=True, arguments=self._arguments)
        for key in self.bindings:
            await queue.bind(exchange, key)
        # Set before consuming: the first deliveries may arrive before the link calls the
        # session ready, and must not be taken for leftovers of the previous connection.
        self._session = session

        async def deliver(message: AbstractIncomingMessage) -> None:
            self._inbox.put_nowait((session.generation, message))

        await queue.consume(deliver)

    async def _work(self) -> None:
        """Handles deliveries one by one until stopped."""
        while not self._stopping.is_set():
            getting = asyncio.ensure_future(self._inbox.get())
            stopping = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if getting not in done:
                getting.cancel()
                break
            stopping.cancel()
            generation, message = getting.result()
            session = self._session
            if session is None or generation != session.generation or session.lost.done():
                continue  # its channel is gone: the broker delivers it again
            try:
                await self._process(message)
            except Exception:  # the state store is the caller's code too: keep consuming
                log.exception("%s: state store failed; the event comes again", self.queue)
                await asyncio.sleep(self._retry_delay)
                await _settle(message.nack(requeue=True))

    async def _process(self, message: AbstractIncomingMessage) -> None:
        try:
            event = Event.model_validate_json(message.body)
        except ValidationError as exc:
            self.stats.undecodable += 1
            log.error("%s: rejecting a message that is not a v1 event: %s", self.queue, exc)
            await _settle(message.reject(requeue=False))
            return
        if await self._state.seen(event.event_id):
            self.stats.duplicates += 1
            await _settle(message.ack())
            return
        current = await self._state.current_seq(event.command_id)
        stale = current is not None and event.seq < current
        target, counter = self._route(event, stale)
        try:
            if target is not None:
                await target(event)
        except Exception:  # the handler is the caller's code: any failure means "not handled"
            self.stats.handler_failures += 1
            log.exception("%s: handler failed on event %s; retrying it", self.queue, event.event_id)
            await asyncio.sleep(self._retry_delay)
            await _settle(message.nack(requeue=True))
            return
        await self._state.record(event)
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        await _settle(message.ack())

    def _route(self, event: Event, stale: bool) -> tuple[EventHandler | None, str]:
        """Which callback gets ``event``, and which counter it adds to once handled."""
        if stale:
            return self._on_stale, "stale"
        if event.status is Status.unknown:
            return self._on_unknown or self._handler, "unknown"
        return self._handler, "handled"


async def _settle(settling: Awaitable[None]) -> None:
    """Acks, nacks or rejects; a dead channel means the broker will deliver the message again."""
    try:
        await settling
    except TRANSIENT_ERRORS as exc:
        log.info("could not settle a delivery (%s): it will be redelivered", exc)
