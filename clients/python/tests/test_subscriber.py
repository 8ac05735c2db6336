"""The durable subscriber: whole lifecycles, at most once per event id, never a stale status,
``unknown`` set apart, and an event acknowledged only once its handler returned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from uuid import uuid4

import aio_pika
import pytest

from switchyard_client import Event, Status, Subscriber, SwitchyardClient, new_command

from .support import CHARGE, OUTCOME_TIMEOUT, FleetEnv, Recorder, Sandbox, queue_name


@pytest.fixture
async def make_subscriber(fleet: FleetEnv) -> AsyncIterator[Callable[..., Subscriber]]:
    """Builds subscribers on queues of their own, and deletes those queues afterwards."""
    made: list[Subscriber] = []

    def make(**options: object) -> Subscriber:
        options.setdefault("queue", queue_name("subscriber"))
        options.setdefault("bindings", ["payment.sandbox.*"])
        subscriber = Subscriber(fleet.amqp_url, **options)  # type: ignore[arg-type]
        made.append(subscriber)
        return subscriber

    yield make
    for subscriber in made:
        await subscriber.stop()
    connection = await aio_pika.connect(fleet.amqp_url)
    async with connection:
        channel = await connection.channel()
        for subscriber in made:
            await channel.queue_delete(subscriber.queue)


async def republish(fleet: FleetEnv, event: Event) -> None:
    """Publishes ``event`` to ``switchyard.events`` as the fleet would (a late copy, say)."""
    connection = await aio_pika.connect(fleet.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("switchyard.events", ensure=False)
        await exchange.publish(
            aio_pika.Message(
                event.model_dump_json(by_alias=True, exclude_none=True).encode(),
                content_type="application/json",
                message_id=str(event.event_id),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            f"{event.kind}.{event.provider}.{event.status.value}",
            mandatory=False,
        )


async def test_a_subscriber_gets_each_lifecycle_in_order(
    client: SwitchyardClient, make_subscriber: Callable[..., Subscriber]
) -> None:
    seen = Recorder()
    async with make_subscriber(handler=seen.on_event) as subscriber:
        commands = [new_command("payment", "sandbox", "charge", CHARGE) for _ in range(3)]
        for command in commands:
            await client.submit(command, via="amqp")
        await seen.until(lambda: all(Status.completed in seen.of(c.id) for c in commands))
        for command in commands:
            assert seen.of(command.id) == [Status.pending, Status.processing, Status.completed]
        assert subscriber.stats.handled == 9


async def test_a_repeated_event_is_dropped_and_a_stale_one_is_not_the_current_status(
    fleet: FleetEnv, client: SwitchyardClient, make_subscriber: Callable[..., Subscriber]
) -> None:
    seen = Recorder()
    async with make_subscriber(handler=seen.on_event, on_stale=seen.on_stale) as subscriber:
        command = new_command("payment", "sandbox", "charge", CHARGE)
        outcome = await client.run(command, timeout=OUTCOME_TIMEOUT, via="amqp")
        await seen.until(lambda: Status.completed in seen.of(command.id))

        # The same transition again (a redelivery, a replayed publish): same event_id.
        await republish(fleet, outcome.event)
        # A processing event arriving after completed, as a late delivery would.
        late = outcome.history[1].model_copy(update={"event_id": uuid4()})
        assert late.status is Status.processing and late.seq < outcome.event.seq
        await republish(fleet, late)

        await seen.until(lambda: len(seen.stale) == 1)
        await seen.until(lambda: subscriber.stats.duplicates >= 1, timeout=10)
        assert seen.of(command.id) == [Status.pending, Status.processing, Status.completed]
        assert seen.stale[0].event_id == late.event_id


async def test_unknown_is_surfaced_on_its_own(
    client: SwitchyardClient, sandbox: Sandbox, make_subscriber: Callable[..., Subscriber]
) -> None:
    seen = Recorder()
    async with make_subscriber(handler=seen.on_event, on_unknown=seen.on_unknown) as subscriber:
        command = new_command("payment", "sandbox", "charge", CHARGE)
        await sandbox.scenario(command.id, ["garbled"])  # a 200 that is not JSON: it may have acted
        await client.submit(command, via="http")
        await seen.until(lambda: any(e.command_id == command.id for e in seen.unknown))
        assert Status.unknown not in seen.of(command.id)
        unknown = next(e for e in seen.unknown if e.command_id == command.id)
        assert unknown.error is not None and unknown.error.class_.value == "unknown"
        assert subscriber.stats.unknown == 1


async def test_an_event_whose_handler_failed_comes_again(
    client: SwitchyardClient, make_subscriber: Callable[..., Subscriber]
) -> None:
    seen = Recorder()
    failures: list[Event] = []

    async def flaky(event: Event) -> None:
        if event.status is Status.completed and not failures:
            failures.append(event)
            raise RuntimeError("the database is down")
        await seen.on_event(event)

    async with make_subscriber(handler=flaky, retry_delay=0.1) as subscriber:
        command = new_command("payment", "sandbox", "charge", CHARGE)
        await client.submit(command, via="amqp")
        await seen.until(lambda: Status.completed in seen.of(command.id))
        assert seen.of(command.id) == [Status.pending, Status.processing, Status.completed]
        assert subscriber.stats.handler_failures == 1
        assert failures[0].event_id == seen.handled[-1].event_id


async def test_events_published_while_it_is_away_wait_in_its_queue(
    client: SwitchyardClient, make_subscriber: Callable[..., Subscriber]
) -> None:
    name = queue_name("durable")
    first = Recorder()
    async with make_subscriber(queue=name, handler=first.on_event):
        pass  # declares and binds the durable queue, then goes away
    command = new_command("payment", "sandbox", "charge", CHARGE)
    assert (await client.run(command, timeout=OUTCOME_TIMEOUT, via="amqp")).completed
    await asyncio.sleep(0.2)
    later = Recorder()
    async with make_subscriber(queue=name, handler=later.on_event):
        await later.until(lambda: Status.completed in later.of(command.id))
    assert later.of(command.id) == [Status.pending, Status.processing, Status.completed]
