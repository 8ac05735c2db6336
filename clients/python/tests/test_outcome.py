"""``outcome()`` beyond the happy path: other processes' commands, timeouts, the ledger."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

import pytest

from switchyard_client import (
    OutcomeTimeout,
    Status,
    SwitchyardClient,
    UnknownCommand,
    new_command,
    uuid7,
)

from .support import CHARGE, OUTCOME_TIMEOUT, SMS, FleetEnv, Sandbox


async def ledger_has(client: SwitchyardClient, command_id: UUID, status: Status) -> None:
    """Waits (bounded) until the ledger, which trails the events a little, shows ``status``."""
    deadline = time.monotonic() + 15
    while True:
        record = await client.command(command_id)
        if record is not None and record.status is status:
            return
        assert time.monotonic() < deadline, f"the ledger never showed {status.value}: {record}"
        await asyncio.sleep(0.1)


async def test_another_process_learns_an_outcome_that_ended_before_it_asked(
    fleet: FleetEnv, client: SwitchyardClient
) -> None:
    command = new_command("payment", "sandbox", "charge", CHARGE)
    assert (await client.run(command, timeout=OUTCOME_TIMEOUT)).completed
    await ledger_has(client, command.id, Status.completed)
    async with SwitchyardClient(fleet.url, fleet.token, fleet.amqp_url) as other:
        outcome = await other.outcome(command.id, OUTCOME_TIMEOUT)
        assert outcome.completed
        assert outcome.statuses() == [Status.pending, Status.processing, Status.completed]
        record = await other.command(command.id)
        assert record is not None and record.kind == "payment" and record.attempts


async def test_another_process_waits_for_a_command_still_running(
    fleet: FleetEnv, client: SwitchyardClient, sandbox: Sandbox
) -> None:
    command = new_command("payment", "sandbox", "charge", CHARGE)
    await sandbox.scenario(command.id, ["slow:800"])
    async with SwitchyardClient(fleet.url, fleet.token, fleet.amqp_url) as other:
        await client.submit(command)
        outcome = await other.outcome(
            command.id, OUTCOME_TIMEOUT, kind="payment", provider="sandbox"
        )
        assert outcome.completed


async def test_a_timeout_names_the_last_status(client: SwitchyardClient, sandbox: Sandbox) -> None:
    command = new_command("notification", "sandbox_async", "send_sms", SMS)
    await sandbox.scenario(command.id, ["accept:silent"])  # accepted, never called back
    await client.submit(command)
    with pytest.raises(OutcomeTimeout) as timed_out:
        await client.outcome(command.id, timeout=1.5)
    assert timed_out.value.command_id == command.id
    assert timed_out.value.last_event is not None
    assert timed_out.value.last_event.status is Status.waiting


async def test_an_id_nobody_knows_is_refused_rather_than_awaited(client: SwitchyardClient) -> None:
    with pytest.raises(UnknownCommand):
        await client.outcome(uuid7(), timeout=1)
