"""Submitting over HTTP (``POST /v1/commands``): outcomes, repeats, conflicts and refusals."""

from __future__ import annotations

from uuid import uuid4

import pytest

from switchyard_client import (
    ErrorClass,
    IdempotencyConflict,
    InvalidCommand,
    Status,
    SwitchyardClient,
    Unauthenticated,
    new_command,
)

from .support import CHARGE, OUTCOME_TIMEOUT, FleetEnv, Sandbox


async def test_a_charge_completes(client: SwitchyardClient) -> None:
    command = new_command("payment", "sandbox", "charge", CHARGE, metadata={"order": "42"})
    submission = await client.submit(command, via="http")
    assert submission.id == command.id
    assert submission.status is Status.pending and not submission.replayed
    outcome = await client.outcome(submission.id, OUTCOME_TIMEOUT)
    assert outcome.completed, outcome
    assert outcome.result["status"] == "succeeded"
    assert outcome.statuses()[0] is Status.pending, "bound before the submit: nothing missed"
    assert outcome.event.metadata == {"order": "42"}


async def test_a_permanent_refusal_fails(client: SwitchyardClient, sandbox: Sandbox) -> None:
    command = new_command("payment", "sandbox", "charge", CHARGE)
    await sandbox.scenario(command.id, ["402"])
    outcome = await client.run(command, timeout=OUTCOME_TIMEOUT, via="http")
    assert outcome.failed, outcome
    assert outcome.error is not None
    assert outcome.error.class_ is ErrorClass.permanent
    assert outcome.error.http_status == 402


async def test_submitting_the_same_command_again_is_answered_not_run(
    client: SwitchyardClient, sandbox: Sandbox
) -> None:
    command = new_command("payment", "sandbox", "charge", CHARGE)
    first = await client.submit(command, via="http")
    again = await client.submit(command, via="http")  # e.g. after a lost answer
    assert again.id == first.id == command.id
    assert again.replayed and again.duplicate_of is None
    assert (await client.outcome(command.id, OUTCOME_TIMEOUT)).completed
    assert (await sandbox.seen(command.id))["effects"] == 1


async def test_a_repeat_under_the_same_key_is_a_duplicate_of_the_original(
    client: SwitchyardClient,
) -> None:
    key = f"order-{uuid4()}-charge"
    original = new_command("payment", "sandbox", "charge", CHARGE, idempotency_key=key)
    first = await client.submit(original, via="http")
    done = await client.outcome(first.id, OUTCOME_TIMEOUT)
    assert done.completed

    repeat = new_command("payment", "sandbox", "charge", CHARGE, idempotency_key=key)
    second = await client.submit(repeat, via="http")
    assert second.replayed
    assert second.id == original.id and second.duplicate_of == original.id
    assert second.status is not None  # the ledger's view of the original, which may lag
    # Either id leads to the original's outcome, although it ended before the repeat.
    assert (await client.outcome(second.id, OUTCOME_TIMEOUT)).event == done.event
    assert (await client.outcome(repeat.id, OUTCOME_TIMEOUT)).event == done.event


async def test_the_same_key_asking_for_something_else_is_a_conflict(
    client: SwitchyardClient,
) -> None:
    key = f"order-{uuid4()}-charge"
    await client.submit(
        new_command("payment", "sandbox", "charge", CHARGE, idempotency_key=key), via="http"
    )
    other = new_command(
        "payment", "sandbox", "charge", {**CHARGE, "amount": 501}, idempotency_key=key
    )
    with pytest.raises(IdempotencyConflict) as conflict:
        await client.submit(other, via="http")
    assert conflict.value.status == 422
    assert conflict.value.type.endswith("idempotency_conflict")
    assert conflict.value.field == "idempotency_key"


async def test_an_unknown_provider_is_refused_at_the_door(client: SwitchyardClient) -> None:
    with pytest.raises(InvalidCommand) as refused:
        await client.submit(new_command("payment", "nosuch", "charge", CHARGE), via="http")
    assert refused.value.field == "provider"


async def test_a_payload_its_schema_rejects_names_the_field(client: SwitchyardClient) -> None:
    with pytest.raises(InvalidCommand) as refused:
        await client.submit(
            new_command("payment", "sandbox", "charge", {"amount": 500}), via="http"
        )
    assert refused.value.field is not None and refused.value.field.startswith("payload")


async def test_a_wrong_token_is_unauthenticated(fleet: FleetEnv) -> None:
    async with SwitchyardClient(fleet.url, "not-the-token") as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.submit(new_command("payment", "sandbox", "charge", CHARGE))


async def test_the_ledger_tells_what_happened(client: SwitchyardClient) -> None:
    outcome = await client.run(
        new_command("payment", "sandbox", "charge", CHARGE), timeout=OUTCOME_TIMEOUT
    )
    assert outcome.completed
    assert await client.command(uuid4()) is None
