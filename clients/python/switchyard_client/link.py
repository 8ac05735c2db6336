"""One AMQP connection kept up: reconnect with backoff, set up again after every reconnect.

Both the client (publisher and outcome watcher) and the subscriber sit on a :class:`Link`.
It connects, runs the owner's set-up hook on the new connection (declare, bind, consume), and
then waits for the connection (or any channel the hook marks as vital) to be lost; it then
connects again with capped, jittered backoff, for as long as it is not closed. Each
connection is a *generation*: whatever was bound to an older one (a channel, an unacked
delivery) is dead and must not be used.

A set-up that the broker refuses for good (a queue that exists with other arguments, no
access) is not retried: it is kept and raised to whoever waits for the link.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import (
    CONNECTION_EXCEPTIONS,
    AuthenticationError,
    ChannelPreconditionFailed,
    ProbableAuthenticationError,
)
from aiormq.exceptions import ChannelAccessRefused

from .errors import BrokerRefused, BrokerUnavailable, SwitchyardError

log = logging.getLogger("switchyard_client.link")

#: What a broker or a network may throw at any AMQP call: worth reconnecting and retrying.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_EXCEPTIONS, asyncio.TimeoutError)
#: Refusals that another attempt will not change.
FATAL_ERRORS: tuple[type[BaseException], ...] = (
    ChannelPreconditionFailed,
    ChannelAccessRefused,
    AuthenticationError,
    ProbableAuthenticationError,
)


@dataclass
class Session:
    """One live connection (one generation of the link)."""

    connection: AbstractConnection
    generation: int
    lost: asyncio.Future[BaseException | None] = field(repr=False)

    def drop(self, reason: BaseException | None = None) -> None:
        """Marks this generation lost, so the link reconnects (used when a vital channel closes)."""
        if not self.lost.done():
            self.lost.set_result(reason)

    def watch(self, channel: AbstractChannel) -> None:
        """Drops the session when ``channel`` closes: a consumer without its channel is dead."""
        channel.close_callbacks.add(lambda _sender, exc=None: self.drop(exc))


SetUp = Callable[[Session], Awaitable[None]]


class Link:
    """A self-healing AMQP connection. ``reconnects`` counts the connections after the first."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        set_up: SetUp | None = None,
        connect_timeout: float = 10.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._url = url
        self._name = name
        self._set_ups: list[SetUp] = [set_up] if set_up is not None else []
        self._connect_timeout = connect_timeout
        self._max_backoff = max_backoff
        self._session: Session | None = None
        self._ready = asyncio.Event()
        self._fatal: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.generation = 0
        self.reconnects = 0

    def add_set_up(self, set_up: SetUp) -> None:
        """Adds a hook run on every new connection, after those added before it."""
        self._set_ups.append(set_up)

    @property
    def connected(self) -> bool:
        """Whether a connection is up and set up right now."""
        return self._session is not None and not self._session.lost.done()

    async def start(self, timeout: float) -> None:
        """Starts connecting and waits for the first session (raises if none within ``timeout``)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"switchyard link {self._name}")
        await self.session(timeout)

    async def session(self, timeout: float) -> Session:
        """The live session, waiting up to ``timeout`` seconds for one."""
        if self._task is None:
            raise SwitchyardError("the link is not started")
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            raise BrokerUnavailable(
                f"no connection to the broker within {timeout:g} s ({self._name})"
            ) from None
        if self._fatal is not None:
            raise self._fatal
        session = self._session
        if session is None:  # lost between the wake-up and now: wait for the next one
            return await self.session(timeout)
        return session

    async def close(self) -> None:
        """Stops reconnecting and closes the connection."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None and not session.connection.is_closed:
            await session.connection.close()

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            try:
                connection = await aio_pika.connect(
                    self._url,
                    timeout=self._connect_timeout,
                    client_properties={"connection_name": self._name},
                )
            except FATAL_ERRORS as exc:
                self._fail(exc)
                return
            except TRANSIENT_ERRORS as exc:
                failures += 1
                log.warning(
                    "%s: cannot connect (%s); retrying", self._name, exc or type(exc).__name__
                )
                await asyncio.sleep(self._backoff(failures))
                continue
            session = Session(
                connection, self.generation + 1, asyncio.get_running_loop().create_future()
            )
            connection.close_callbacks.add(lambda _sender, exc=None, s=session: s.drop(exc))
            try:
                for set_up in self._set_ups:
                    await set_up(session)
            except FATAL_ERRORS as exc:
                await _quietly_close(connection)
                self._fail(exc)
                return
            except TRANSIENT_ERRORS as exc:
                failures += 1
                log.warning("%s: set-up failed (%s); reconnecting", self._name, exc)
                await _quietly_close(connection)
                await asyncio.sleep(self._backoff(failures))
                continue
            failures = 0
            if self.generation > 0:
                self.reconnects += 1
                log.info("%s: reconnected (generation %d)", self._name, session.generation)
            self.generation = session.generation
            self._session = session
            self._ready.set()
            reason = await session.lost
            self._ready.clear()
            self._session = None
            if not self._closing:
                log.warning("%s: connection lost (%s); reconnecting", self._name, reason)
            await _quietly_close(connection)

    def _fail(self, exc: BaseException) -> None:
        log.error("%s: the broker refused the set-up for good: %s", self._name, exc)
        self._fatal = BrokerRefused(f"{self._name}: {exc}")
        self._fatal.__cause__ = exc
        self._ready.set()

    def _backoff(self, failures: int) -> float:
        """Capped exponential backoff with jitter: quick after a blip, gentle during an outage."""
        ceiling: float = min(self._max_backoff, 0.2 * 2.0 ** min(failures, 10))
        return ceiling * random.uniform(0.5, 1.0)


async def _quietly_close(connection: AbstractConnection) -> None:
    """Closes a connection that may already be dead; its errors say nothing new."""
    try:
        await connection.close()
    except TRANSIENT_ERRORS as exc:
        log.debug("closing a dead connection: %s", exc)
