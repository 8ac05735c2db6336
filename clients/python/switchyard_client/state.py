"""What a subscriber remembers between deliveries: event ids handled and each command's ``seq``.

The broker delivers at least once, so the same event can come twice (a redelivery after a
connection loss, a replayed transition with the same ``event_id``), and events of one command
can arrive out of order. The subscriber asks its state whether an event is new and whether it
is older than what the command already showed, and tells it once the handler succeeded.

:class:`MemoryState` keeps both in bounded LRU tables, which covers redeliveries and reorders
within a process's life. A core app that must not see a repeat even across restarts gives the
subscriber a state backed by its own database (same three methods), ideally written in the
same transaction as the handler's effects.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol
from uuid import UUID

from .models import Event


class SubscriberState(Protocol):
    """The subscriber's memory. Implementations must be safe to call from one task at a time."""

    async def seen(self, event_id: UUID) -> bool:
        """Whether an event with this id was already handled."""
        ...

    async def current_seq(self, command_id: UUID) -> int | None:
        """The highest ``seq`` handled for the command, or ``None`` if none."""
        ...

    async def record(self, event: Event) -> None:
        """Notes that ``event`` was handled (its id, and its ``seq`` if higher)."""
        ...


class MemoryState:
    """:class:`SubscriberState` in memory, bounded: the oldest entries are forgotten first."""

    def __init__(self, max_events: int = 100_000, max_commands: int = 100_000) -> None:
        self._events: OrderedDict[UUID, None] = OrderedDict()
        self._seqs: OrderedDict[UUID, int] = OrderedDict()
        self._max_events = max_events
        self._max_commands = max_commands

    async def seen(self, event_id: UUID) -> bool:
        return event_id in self._events

    async def current_seq(self, command_id: UUID) -> int | None:
        return self._seqs.get(command_id)

    async def record(self, event: Event) -> None:
        self._events[event.event_id] = None
        self._events.move_to_end(event.event_id)
        while len(self._events) > self._max_events:
            self._events.popitem(last=False)
        current = self._seqs.get(event.command_id)
        if current is None or event.seq > current:
            self._seqs[event.command_id] = event.seq
        self._seqs.move_to_end(event.command_id)
        while len(self._seqs) > self._max_commands:
            self._seqs.popitem(last=False)
