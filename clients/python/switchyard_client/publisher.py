"""Publishing commands to ``switchyard.commands`` the way the fleet itself does.

Like the Rust publisher (crates/switchyard-amqp/src/messages.rs): persistent, JSON,
``message_id`` = the command id, ``type`` = ``switchyard.command.v1``, routing key
``{kind}.{provider}.{operation}``, ``mandatory`` and confirmed. A publish succeeds only when the
broker confirmed it; anything else is retried with the same body (same id and idempotency key,
so a copy that did arrive runs once) and finally raised.

An unknown kind, provider or operation is *not* returned: the alternate exchange takes it, the
broker confirms, and a worker answers with a ``failed`` event, code ``unroutable``. A returned
message therefore means the exchange has no alternate exchange, which is worth raising loudly.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timezone

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelNotFoundEntity, DeliveryError

from .commands import COMMAND_TYPE, command_body, routing_key
from .errors import (
    BrokerUnavailable,
    CommandReturned,
    PublishError,
    PublishNacked,
    TopologyMissing,
)
from .link import TRANSIENT_ERRORS, Link
from .models import Command

log = logging.getLogger("switchyard_client.publisher")

COMMANDS_EXCHANGE = "switchyard.commands"


class CommandPublisher:
    """Confirmed, mandatory publishes of commands over a :class:`~switchyard_client.link.Link`."""

    def __init__(self, link: Link, *, confirm_timeout: float = 10.0, max_attempts: int = 5) -> None:
        self._link = link
        self._confirm_timeout = confirm_timeout
        self._max_attempts = max(1, max_attempts)
        self._lock = asyncio.Lock()
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._generation = 0

    async def publish(self, command: Command) -> None:
        """Publishes ``command`` and waits for the broker's confirm.

        Raises :class:`~switchyard_client.errors.TopologyMissing` (no ``switchyard.commands``),
        :class:`~switchyard_client.errors.CommandReturned` (unroutable with no alternate
        exchange), :class:`~switchyard_client.errors.PublishNacked` or
        :class:`~switchyard_client.errors.BrokerUnavailable` after the last attempt.
        """
        message = aio_pika.Message(
            command_body(command),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            message_id=str(command.id),
            type=COMMAND_TYPE,
            timestamp=datetime.now(timezone.utc),
        )
        key = routing_key(command)
        last: PublishError = BrokerUnavailable("no attempt made")
        for attempt in range(1, self._max_attempts + 1):
            try:
                exchange = await self._exchange_now()
                result = await asyncio.wait_for(
                    exchange.publish(message, key, mandatory=True), self._confirm_timeout
                )
            except ChannelNotFoundEntity as exc:
                self._forget()
                raise TopologyMissing(
                    f"{COMMANDS_EXCHANGE} does not exist on this vhost: declare the fleet's "
                    f"topology first ({exc})"
                ) from exc
            except DeliveryError as exc:
                last = PublishNacked(f"the broker refused command {command.id}: {exc}")
            except BrokerUnavailable as exc:
                last = exc
            except TRANSIENT_ERRORS as exc:
                self._forget()
                last = BrokerUnavailable(
                    f"command {command.id} not confirmed: {exc or type(exc).__name__}"
                )
            else:
                if isinstance(result, DeliveredMessage):
                    frame = result.delivery
                    raise CommandReturned(
                        key,
                        int(getattr(frame, "reply_code", 0) or 0),
                        str(getattr(frame, "reply_text", "") or ""),
                    )
                return
            log.warning("publish %s: attempt %d failed: %s", command.id, attempt, last)
            if attempt < self._max_attempts:
                await asyncio.sleep(min(5.0, 0.2 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
        raise last

    async def _exchange_now(self) -> AbstractExchange:
        """The confirm-mode channel's exchange, opened anew on each connection generation."""
        async with self._lock:
            session = await self._link.session(self._confirm_timeout)
            if (
                self._exchange is None
                or self._channel is None
                or self._channel.is_closed
                or self._generation != session.generation
            ):
                self._channel = await session.connection.channel(
                    publisher_confirms=True, on_return_raises=False
                )
                self._exchange = await self._channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
                self._generation = session.generation
            return self._exchange

    def _forget(self) -> None:
        self._channel = None
        self._exchange = None
