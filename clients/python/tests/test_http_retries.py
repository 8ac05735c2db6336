"""The HTTP transport's retry and error rules, against a scripted ingress (no fleet needed):
what must hold for every retry is that it repeats the same command byte for byte."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from switchyard_client import (
    IdempotencyConflict,
    InvalidCommand,
    Unauthenticated,
    Unavailable,
    new_command,
)
from switchyard_client.http import HttpApi

PROBLEM = {"Content-Type": "application/problem+json"}


def scripted(
    answers: list[Callable[[httpx.Request], httpx.Response]],
) -> tuple[HttpApi, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1](request)

    api = HttpApi(
        "http://ingress.test", "tok", transport=httpx.MockTransport(handle), max_attempts=3
    )
    return api, seen


def accepted(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(
        202, json={"id": body["id"], "status": "pending", "status_url": "/v1/commands/x"}
    )


def unavailable(_: httpx.Request) -> httpx.Response:
    problem = {
        "type": "urn:switchyard:problem:unavailable",
        "title": "Temporarily unavailable",
        "status": 503,
        "detail": "retry later",
    }
    return httpx.Response(503, json=problem, headers={**PROBLEM, "Retry-After": "0"})


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


async def test_a_503_is_retried_after_retry_after_with_the_same_key_and_body() -> None:
    api, seen = scripted([unavailable, refused, accepted])
    command = new_command(
        "payment", "sandbox", "charge", {"amount": 500}, idempotency_key="order-42"
    )
    submission = await api.submit(command)
    assert submission.id == command.id and not submission.replayed
    assert len(seen) == 3
    assert {r.headers["Idempotency-Key"] for r in seen} == {"order-42"}
    assert len({r.content for r in seen}) == 1, "every retry sends the same bytes"
    assert all(r.headers["Authorization"] == "Bearer tok" for r in seen)
    await api.aclose()


async def test_503_past_every_attempt_is_unavailable() -> None:
    api, seen = scripted([unavailable])
    with pytest.raises(Unavailable):
        await api.submit(new_command("payment", "sandbox", "charge", {"amount": 500}))
    assert len(seen) == 3
    await api.aclose()


@pytest.mark.parametrize(
    ("status", "ptype", "expected"),
    [
        (422, "urn:switchyard:problem:idempotency_conflict", IdempotencyConflict),
        (422, "urn:switchyard:problem:invalid", InvalidCommand),
        (401, "urn:switchyard:problem:unauthenticated", Unauthenticated),
    ],
)
async def test_refusals_are_typed_and_not_retried(
    status: int, ptype: str, expected: type[Exception]
) -> None:
    def refuse(_: httpx.Request) -> httpx.Response:
        problem = {
            "type": ptype,
            "title": "No",
            "status": status,
            "detail": "because",
            "field": "payload.amount",
        }
        return httpx.Response(status, json=problem, headers=PROBLEM)

    api, seen = scripted([refuse])
    with pytest.raises(expected) as caught:
        await api.submit(new_command("payment", "sandbox", "charge", {"amount": 500}))
    assert len(seen) == 1
    assert caught.value.field == "payload.amount"  # type: ignore[attr-defined]
    await api.aclose()
