"""Fixtures: the fleet's addresses from the environment, a connected client, the sandbox.

The suite runs against a real fleet. ``cargo test -p switchyard-e2e --test clients the_python``
starts one and runs this suite with its environment; by hand, start one with

    SWITCHYARD_FLEET_ENV_FILE=/tmp/py-fleet.env \\
      cargo test -p switchyard-e2e --test clients -- --ignored --nocapture serve_a_fleet &
    source /tmp/py-fleet.env   # once the file exists; rm it to stop the fleet

A missing variable fails every test that needs the fleet, saying this; nothing is skipped.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from switchyard_client import SwitchyardClient

from .broker_lock import BrokerLock
from .support import HOW_TO_GET_A_FLEET, REQUIRED, FleetEnv, Sandbox


@pytest.fixture(scope="session", autouse=True)
def broker_lock() -> Iterator[BrokerLock]:
    """The broker lock, held shared for the whole run (see broker_lock.py)."""
    lock = BrokerLock()
    lock.hold_shared()
    yield lock
    lock.release()


@pytest.fixture(scope="session")
def fleet() -> FleetEnv:
    """The fleet's environment; fails loudly, with directions, when any of it is missing."""
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        pytest.fail(HOW_TO_GET_A_FLEET.format(missing=", ".join(missing)), pytrace=False)
    return FleetEnv(*(os.environ[name] for name in REQUIRED))


@pytest.fixture
async def client(fleet: FleetEnv) -> AsyncIterator[SwitchyardClient]:
    """A client on both transports, connected."""
    async with SwitchyardClient(fleet.url, fleet.token, fleet.amqp_url) as c:
        yield c


@pytest.fixture
async def sandbox(fleet: FleetEnv) -> AsyncIterator[Sandbox]:
    box = Sandbox(fleet)
    yield box
    await box.aclose()
