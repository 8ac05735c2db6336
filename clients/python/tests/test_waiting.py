"""Long-running work: ``waiting``, then ``completed`` by a signed webhook or by polling."""

from __future__ import annotations

from switchyard_client import Status, SwitchyardClient, new_command

from .support import OUTCOME_TIMEOUT, SMS


async def test_an_async_provider_waits_then_completes_by_webhook(client: SwitchyardClient) -> None:
    command = new_command("notification", "sandbox_async", "send_sms", SMS)
    outcome = await client.run(command, timeout=OUTCOME_TIMEOUT, via="http")
    assert outcome.completed, outcome
    statuses = outcome.statuses()
    assert Status.waiting in statuses
    assert statuses.index(Status.waiting) < statuses.index(Status.completed)
    waiting = next(e for e in outcome.history if e.status is Status.waiting)
    assert waiting.provider_reference, "waiting names the provider's reference"


async def test_a_polled_provider_waits_then_completes_by_status_check(
    client: SwitchyardClient,
) -> None:
    command = new_command("notification", "sandbox_polled", "send_sms", SMS)
    outcome = await client.run(command, timeout=OUTCOME_TIMEOUT, via="amqp")
    assert outcome.completed, outcome
    assert outcome.statuses()[-2:] == [Status.waiting, Status.completed]
