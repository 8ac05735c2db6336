"""The outcome watcher: one queue per client process that hears the events of its commands.

The queue is bound ``{kind}.{provider}.*`` on ``switchyard.events`` for each kind and provider
the client submits to, *before* the command is sent, so no event of a command this process
submitted can slip by unheard between the submit and the call to ``outcome``. It is durable
and expires after ``expires`` of disuse (the fleet's own taps do the same), so a connection
blip or a broker restart loses none of its events, and a process that goes away leaves
nothing behind.

Every event heard is kept per command in a bounded, least-recently-used table, also for ids
nobody asked about yet: an HTTP repeat answers with the original's id, whose terminal event
may arrive before the caller asks for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from uuid import UUID

from aio_pika import ExchangeType
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from .errors import BrokerUnavailable, OutcomeTimeout
from .link import TRANSIENT_ERRORS, Link, Session
from .models import Event
from .results import Outcome, is_terminal

log = logging.getLogger("switchyard_client.watcher")

EVENTS_EXCHANGE = "switchyard.events"


@dataclass
class Track:
    """What is known about one command's events."""

    pair: tuple[str, str] | None = None
    #: The watcher was bound before the command could emit anything: its history is whole.
    complete: bool = False
    #: This id repeated another command over HTTP: the original's id, which has the events.
    alias: UUID | None = None
    events: dict[UUID, Event] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: int = 0

    def add(self, event: Event) -> None:
        """Records ``event`` (once per ``event_id``) and wakes waiters on a terminal one."""
        self.events.setdefault(event.event_id, event)
        if self.pair is None:
            self.pair = (event.kind, event.provider)
        if is_terminal(event):
            self.done.set()

    def outcome(self, command_id: UUID) -> Outcome | None:
        """The outcome so far: the highest-``seq`` terminal event, or ``None``."""
        history = tuple(sorted(self.events.values(), key=lambda e: e.seq))
        terminal = [e for e in history if is_terminal(e)]
        if not terminal:
            return None
        return Outcome(command_id=command_id, event=terminal[-1], history=history)

    def last(self) -> Event | None:
        """The latest event seen (highest ``seq``)."""
        return max(self.events.values(), key=lambda e: e.seq, default=None)


class OutcomeWatcher:
    """Hears lifecycle events for the commands of one client (see the module's docstring)."""

    def __init__(
        self,
        link: Link,
        *,
        queue_name: str,
        expires: float = 600.0,
        max_tracked: int = 10_000,
        prefetch: int = 200,
        bind_timeout: float = 15.0,
    ) -> None:
        self._link = link
        self._queue_name = queue_name
        self._expires_ms = int(expires * 1000)
        self._max_tracked = max_tracked
        self._prefetch = prefetch
        self._bind_timeout = bind_timeout
        self._pairs: set[tuple[str, str]] = set()
        self._bound: dict[tuple[str, str], int] = {}
        self._lock = asyncio.Lock()
        self._queue: AbstractQueue | None = None
        self._exchange: AbstractExchange | None = None
        self._tracks: OrderedDict[UUID, Track] = OrderedDict()

    async def set_up(self, session: Session) -> None:
        """Declares the queue, binds every pair known so far and starts consuming."""
        channel = await session.connection.channel(publisher_confirms=False)
        session.watch(channel)
        await channel.set_qos(prefetch_count=self._prefetch)
        exchange = await channel.declare_exchange(EVENTS_EXCHANGE, ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(
            self._queue_name, durable=True, arguments={"x-expires": self._expires_ms}
        )
        async with self._lock:
            for pair in sorted(self._pairs):
                await queue.bind(exchange, _binding(pair))
                self._bound[pair] = session.generation
            self._queue, self._exchange = queue, exchange
        await queue.consume(self._on_message)

    async def bind(self, kind: str, provider: str) -> None:
        """Makes sure events of ``kind``/``provider`` reach this process from now on.

        Returns only once the broker confirmed the binding on a live connection, which is
        what makes "bind before you publish" hold.
        """
        pair = (kind, provider)
        deadline = time.monotonic() + self._bind_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerUnavailable(f"could not bind {_binding(pair)} in time")
            session = await self._link.session(remaining)
            async with self._lock:
                self._pairs.add(pair)
                if self._bound.get(pair) == session.generation:
                    return
                queue, exchange = self._queue, self._exchange
                if queue is not None and exchange is not None:
                    try:
                        await queue.bind(exchange, _binding(pair))
                    except TRANSIENT_ERRORS as exc:
                        log.info("binding %s failed (%s); waiting for a new connection", pair, exc)
                        session.drop(exc)
                    else:
                        self._bound[pair] = session.generation
                        return
            await asyncio.sleep(0.05)  # the next generation's set-up binds it, or we retry

    def track(self, command_id: UUID) -> Track:
        """The record of ``command_id``, created empty if new; marks it recently used."""
        track = self._tracks.get(command_id)
        if track is None:
            track = Track()
            self._tracks[command_id] = track
            self._evict()
        else:
            self._tracks.move_to_end(command_id)
        return track

    def merge(self, command_id: UUID, events: list[Event]) -> None:
        """Adds events learnt elsewhere (the ledger) to ``command_id``'s record."""
        track = self.track(command_id)
        for event in events:
            track.add(event)

    async def wait(self, command_id: UUID, timeout: float) -> Outcome:
        """Waits for ``command_id``'s terminal event; raises OutcomeTimeout after ``timeout``."""
        track = self.track(command_id)
        track.waiters += 1
        try:
            await asyncio.wait_for(track.done.wait(), timeout)
        except asyncio.TimeoutError:
            raise OutcomeTimeout(command_id, timeout, track.last()) from None
        finally:
            track.waiters -= 1
        outcome = track.outcome(command_id)
        assert outcome is not None, "done is set only by a terminal event"
        return outcome

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = Event.model_validate_json(message.body)
        except ValidationError as exc:
            log.warning("ignoring a message on %s that is not a v1 event: %s", EVENTS_EXCHANGE, exc)
        else:
            self.track(event.command_id).add(event)
        try:
            await message.ack()
        except TRANSIENT_ERRORS as exc:  # the channel died: the broker redelivers it
            log.debug("ack failed: %s", exc)

    def _evict(self) -> None:
        """Forgets the least recently used commands nobody waits for, past ``max_tracked``."""
        if len(self._tracks) <= self._max_tracked:
            return
        for command_id in list(self._tracks):
            if len(self._tracks) <= self._max_tracked:
                break
            if self._tracks[command_id].waiters == 0:
                del self._tracks[command_id]


def _binding(pair: tuple[str, str]) -> str:
    return f"{pair[0]}.{pair[1]}.*"
