"""What the tests share: the fleet's environment, payloads and the sandbox's control API."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import httpx

from switchyard_client import Event, Status

REQUIRED = (
    "SWITCHYARD_URL",
    "SWITCHYARD_TOKEN",
    "SWITCHYARD_AMQP_URL",
    "SWITCHYARD_SANDBOX_URL",
    "SWITCHYARD_SANDBOX_CA",
    "SWITCHYARD_TEST_BROKER_RESTART",
)

HOW_TO_GET_A_FLEET = """\
this suite runs against a real Switchyard fleet, but the environment lacks {missing}.
Run it through the harness, which starts a fleet and sets everything:
    cargo test -p switchyard-e2e --test clients the_python
or start a fleet by hand and source its environment:
    SWITCHYARD_FLEET_ENV_FILE=/tmp/py-fleet.env \\
      cargo test -p switchyard-e2e --test clients -- --ignored --nocapture serve_a_fleet &
    source /tmp/py-fleet.env    # once the file exists; rm /tmp/py-fleet.env stops the fleet
(the fleet needs RabbitMQ with its management plugin: ./dev test sets that up)."""

CHARGE: dict[str, Any] = {"amount": 500, "currency": "eur", "payment_method": "pm_card_visa"}
SMS: dict[str, Any] = {"to": "+14155550100", "body": "Your parcel is on its way"}
OUTCOME_TIMEOUT = 30.0


@dataclass(frozen=True)
class FleetEnv:
    """Where the fleet is."""

    url: str
    token: str
    amqp_url: str
    sandbox_url: str
    sandbox_ca: str
    broker_restart: str


class Sandbox:
    """Scripts the sandbox providers' answers and reads what they saw."""

    def __init__(self, fleet: FleetEnv) -> None:
        context = ssl.create_default_context(cafile=fleet.sandbox_ca)
        self._http = httpx.AsyncClient(base_url=fleet.sandbox_url, verify=context, timeout=10)

    async def scenario(self, command_id: UUID, steps: list[str]) -> None:
        """``PUT /_sandbox/scenarios/{id}``: the command's next answers, one step per request."""
        response = await self._http.put(f"/_sandbox/scenarios/{command_id}", json={"steps": steps})
        assert response.status_code == 200, response.text

    async def seen(self, command_id: UUID) -> dict[str, Any]:
        """``GET /_sandbox/commands/{id}``: the requests and effects the sandbox saw."""
        response = await self._http.get(f"/_sandbox/commands/{command_id}")
        if response.status_code == 404:
            return {"requests": [], "effects": 0}
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def aclose(self) -> None:
        await self._http.aclose()


class Recorder:
    """Collects what a subscriber hands over, and lets a test wait for a condition on it."""

    def __init__(self) -> None:
        self.handled: list[Event] = []
        self.unknown: list[Event] = []
        self.stale: list[Event] = []
        self._changed = asyncio.Condition()

    async def on_event(self, event: Event) -> None:
        await self._add(self.handled, event)

    async def on_unknown(self, event: Event) -> None:
        await self._add(self.unknown, event)

    async def on_stale(self, event: Event) -> None:
        await self._add(self.stale, event)

    def of(self, command_id: UUID) -> list[Status]:
        """The statuses handled for ``command_id``, in the order they were handled."""
        return [e.status for e in self.handled if e.command_id == command_id]

    async def until(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        """Waits until ``ready()`` holds; fails the test with what was seen after ``timeout``."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(ready), timeout)
            except asyncio.TimeoutError:
                seen = [(str(e.command_id)[-6:], e.status.value) for e in self.handled]
                raise AssertionError(f"not within {timeout} s; handled so far: {seen}") from None

    async def _add(self, into: list[Event], event: Event) -> None:
        async with self._changed:
            into.append(event)
            self._changed.notify_all()


def queue_name(purpose: str) -> str:
    """A queue of the test's own, so runs against one fleet never share one."""
    return f"test.python.{purpose}.{uuid4().hex[:12]}"
