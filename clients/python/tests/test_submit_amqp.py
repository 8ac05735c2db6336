"""Submitting over AMQP (``switchyard.commands``): outcomes, repeats, conflicts, unroutable."""

from __future__ import annotations

from uuid import uuid4

from switchyard_client import ErrorClass, Status, SwitchyardClient, new_command

from .support import CHARGE, OUTCOME_TIMEOUT, Sandbox


async def test_a_charge_completes(client: SwitchyardClient) -> None:
    command = new_command("payment", "sandbox", "charge", CHARGE)
    submission = await client.submit(command, via="amqp")
    assert submission.id == command.id and submission.transport == "amqp"
    outcome = await client.outcome(submission.id, OUTCOME_TIMEOUT)
    assert outcome.completed, outcome
    assert outcome.statuses() == [Status.pending, Status.processing, Status.completed]


async def test_a_permanent_refusal_fails(client: SwitchyardClient, sandbox: Sandbox) -> None:
    command = new_command("payment", "sandbox", "charge", CHARGE)
    await sandbox.scenario(command.id, ["422"])
    outcome = await client.run(command, timeout=OUTCOME_TIMEOUT, via="amqp")
    assert outcome.failed, outcome
    assert outcome.error is not None and outcome.error.class_ is ErrorClass.permanent


async def test_a_transient_failure_is_retried_with_the_same_key(
    client: SwitchyardClient, sandbox: Sandbox
) -> None:
    command = new_command("payment", "sandbox", "charge", CHARGE)
    # The worker retries one fast 503 in-process; the second one schedules a delayed retry.
    await sandbox.scenario(command.id, ["503", "503", "ok"])
    outcome = await client.run(command, timeout=OUTCOME_TIMEOUT, via="amqp")
    assert outcome.completed, outcome
    assert Status.retrying in outcome.statuses()
    seen = await sandbox.seen(command.id)
    assert seen["effects"] == 1


async def test_publishing_the_same_command_twice_runs_it_once(
    client: SwitchyardClient, sandbox: Sandbox
) -> None:
    command = new_command("payment", "sandbox", "charge", CHARGE)
    await client.submit(command, via="amqp")
    await client.submit(command, via="amqp")  # a retry of the publish: same id, same key
    outcome = await client.outcome(command.id, OUTCOME_TIMEOUT)
    assert outcome.completed
    assert [e.status for e in outcome.history].count(Status.completed) == 1
    assert (await sandbox.seen(command.id))["effects"] == 1


async def test_a_repeat_under_the_same_key_is_a_duplicate(client: SwitchyardClient) -> None:
    key = f"order-{uuid4()}-charge"
    original = new_command("payment", "sandbox", "charge", CHARGE, idempotency_key=key)
    assert (await client.run(original, timeout=OUTCOME_TIMEOUT, via="amqp")).completed
    repeat = new_command("payment", "sandbox", "charge", CHARGE, idempotency_key=key)
    outcome = await client.run(repeat, timeout=OUTCOME_TIMEOUT, via="amqp")
    assert outcome.duplicate, outcome
    assert outcome.duplicate_of == original.id
    assert outcome.command_id == repeat.id


async def test_the_same_key_asking_for_something_else_fails_as_a_conflict(
    client: SwitchyardClient,
) -> None:
    key = f"order-{uuid4()}-charge"
    original = new_command("payment", "sandbox", "charge", CHARGE, idempotency_key=key)
    assert (await client.run(original, timeout=OUTCOME_TIMEOUT, via="amqp")).completed
    other = new_command(
        "payment", "sandbox", "charge", {**CHARGE, "amount": 501}, idempotency_key=key
    )
    outcome = await client.run(other, timeout=OUTCOME_TIMEOUT, via="amqp")
    assert outcome.failed, outcome
    assert outcome.error is not None
    assert outcome.error.code == "idempotency_conflict"
    assert outcome.error.class_ is ErrorClass.invalid


async def test_an_unknown_provider_is_confirmed_then_fails_unroutable(
    client: SwitchyardClient,
) -> None:
    command = new_command("payment", "nosuch", "charge", CHARGE)
    submission = await client.submit(
        command, via="amqp"
    )  # confirmed: the alternate exchange took it
    outcome = await client.outcome(submission.id, OUTCOME_TIMEOUT)
    assert outcome.failed, outcome
    assert outcome.error is not None
    assert outcome.error.code == "unroutable"
    assert outcome.error.class_ is ErrorClass.invalid
