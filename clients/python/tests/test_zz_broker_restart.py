"""A broker restart loses nothing: the subscriber and the client reconnect, declare again and
get every event, including those of a command whose outcome was decided while the broker was
down. Named to run last: it stops the broker, which every other fleet on it feels too.

The broker is shared, so the restart happens with ``/tmp/sy-broker.lock`` held exclusively
(see broker_lock.py), after which the broker is awaited up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import AsyncIterator

import aio_pika

from switchyard_client import Status, Subscriber, SwitchyardClient, new_command

from .broker_lock import BrokerLock
from .support import CHARGE, OUTCOME_TIMEOUT, FleetEnv, Recorder, Sandbox, queue_name

DOWN_FOR = 2.0


async def rabbitmqctl(fleet: FleetEnv, *args: str) -> None:
    """Runs the restart command (``SWITCHYARD_TEST_BROKER_RESTART``) with ``args``."""
    process = await asyncio.create_subprocess_exec(
        *shlex.split(fleet.broker_restart),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode == 0, f"{fleet.broker_restart} {' '.join(args)}: {out.decode()}"


@contextlib.asynccontextmanager
async def broker_down(fleet: FleetEnv) -> AsyncIterator[None]:
    """Stops the broker's application; starts it again and waits for it, whatever happens."""
    await rabbitmqctl(fleet, "stop_app")
    try:
        yield
    finally:
        await rabbitmqctl(fleet, "start_app")
        await rabbitmqctl(fleet, "await_startup")


async def test_the_subscriber_survives_a_broker_restart_without_losing_an_event(
    fleet: FleetEnv, sandbox: Sandbox, broker_lock: BrokerLock
) -> None:
    seen = Recorder()
    subscriber = Subscriber(
        fleet.amqp_url,
        queue=queue_name("restart"),
        bindings=["payment.sandbox.*"],
        handler=seen.on_event,
        connect_timeout=60,
    )
    # Patient settings: the ingress answers 503 until it has reconnected, and we retry.
    client = SwitchyardClient(
        fleet.url,
        fleet.token,
        fleet.amqp_url,
        http_attempts=30,
        publish_attempts=30,
        connect_timeout=60,
    )
    async with broker_lock.exclusive():
        # Whoever held the lock before may have left the broker still starting.
        await rabbitmqctl(fleet, "await_startup")
        async with client, subscriber:
            await survive_a_restart(fleet, sandbox, client, subscriber, seen)
    await delete_queue(fleet, subscriber.queue)


async def survive_a_restart(
    fleet: FleetEnv,
    sandbox: Sandbox,
    client: SwitchyardClient,
    subscriber: Subscriber,
    seen: Recorder,
) -> None:
    """The restart itself, with the lock held and the client and subscriber connected."""
    before = new_command("payment", "sandbox", "charge", CHARGE)
    assert (await client.run(before, timeout=OUTCOME_TIMEOUT)).completed
    await seen.until(lambda: Status.completed in seen.of(before.id))

    # Its provider answers after the broker went down: its outcome is published after.
    across = new_command("payment", "sandbox", "charge", CHARGE)
    await sandbox.scenario(across.id, ["slow:1500"])
    await client.submit(across, via="amqp")
    await seen.until(lambda: Status.processing in seen.of(across.id))

    async with broker_down(fleet):
        await asyncio.sleep(DOWN_FOR)
        assert not subscriber.connected

    after = new_command("payment", "sandbox", "charge", CHARGE)
    await client.submit(after, via="http")
    await seen.until(
        lambda: Status.completed in seen.of(across.id) and Status.completed in seen.of(after.id),
        timeout=90,
    )
    assert subscriber.reconnects >= 1 and client.reconnects >= 1
    assert (await client.outcome(across.id, OUTCOME_TIMEOUT)).completed
    assert (await client.outcome(after.id, OUTCOME_TIMEOUT)).completed
    handled = [e.event_id for e in seen.handled]
    assert len(handled) == len(set(handled)), "each event handled once"
    for command in (before, across, after):
        assert seen.of(command.id)[-1] is Status.completed
        assert seen.of(command.id).count(Status.completed) == 1


async def delete_queue(fleet: FleetEnv, name: str) -> None:
    """Removes the test's durable queue, for runs against a long-lived fleet."""
    connection = await aio_pika.connect(fleet.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)
