"""The HTTP side: ``POST /v1/commands`` on the ingress and ``GET /v1/commands/{id}`` (the ledger).

A submit is retried only where a retry cannot do harm, which is everywhere thanks to the
command's fixed id and ``Idempotency-Key``: a 503 (the broker did not confirm; nothing was
accepted) after its ``Retry-After``, a 502/504 from a proxy, and a connection that failed or
timed out (the first request may or may not have arrived; the repeat is answered ``200``
with ``Idempotent-Replayed`` if it did).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import ssl
import time
from typing import Any
from uuid import UUID

import httpx

from .commands import command_body
from .errors import ProblemError, TransportError, problem_from
from .models import Command, Status
from .results import CommandRecord, Submission

log = logging.getLogger("switchyard_client.http")

RETRYABLE_STATUSES = frozenset({502, 503, 504})


class HttpApi:
    """A thin typed wrapper over the ingress's API.

    ``max_attempts`` bounds how often one submit is tried; ``max_retry_after`` caps how long a
    single ``Retry-After`` may make it wait (the ingress's is a second or two).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 10.0,
        max_attempts: int = 5,
        max_retry_after: float = 30.0,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout,
            verify=verify,
            transport=transport,
        )
        self._max_attempts = max(1, max_attempts)
        self._max_retry_after = max_retry_after

    async def aclose(self) -> None:
        """Closes the connection pool."""
        await self._http.aclose()

    async def submit(self, command: Command) -> Submission:
        """POSTs ``command``; returns once the ingress confirmed it (202) or recognised it (200).

        Raises a :class:`~switchyard_client.errors.ProblemError` subclass for a refusal,
        :class:`~switchyard_client.errors.Unavailable` when 503 outlasted every retry and
        :class:`~switchyard_client.errors.TransportError` when the ingress stayed unreachable.
        """
        body = command_body(command)
        headers = {"Content-Type": "application/json"}
        if command.idempotency_key is not None:
            headers["Idempotency-Key"] = command.idempotency_key
        last: Exception | None = None
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = await self._http.post("/v1/commands", content=body, headers=headers)
            except httpx.TransportError as exc:
                last = exc
                log.warning("submit %s: attempt %d failed: %s", command.id, attempt, exc)
                if attempt < self._max_attempts:
                    await asyncio.sleep(_backoff(attempt))
                continue
            if response.status_code in (200, 202):
                return _submission(command, response)
            problem = problem_from(response.status_code, _json_or_text(response))
            if response.status_code not in RETRYABLE_STATUSES:
                raise problem
            last = problem
            wait = self._retry_after(response, attempt)
            log.warning(
                "submit %s: %d on attempt %d, retrying in %.1f s",
                command.id,
                response.status_code,
                attempt,
                wait,
            )
            if attempt < self._max_attempts:
                await asyncio.sleep(wait)
        if isinstance(last, ProblemError):
            raise last
        raise TransportError(f"the ingress stayed unreachable for command {command.id}: {last}")

    async def command(self, command_id: UUID) -> CommandRecord | None:
        """The ledger's record of ``command_id``, or ``None`` when it never heard of it."""
        try:
            response = await self._http.get(f"/v1/commands/{command_id}")
        except httpx.TransportError as exc:
            raise TransportError(
                f"cannot read command {command_id} from the ledger: {exc}"
            ) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise problem_from(response.status_code, _json_or_text(response))
        return CommandRecord.model_validate_json(response.content)

    def _retry_after(self, response: httpx.Response, attempt: int) -> float:
        """The server's ``Retry-After`` (seconds or an HTTP date), capped; else a backoff."""
        value = response.headers.get("Retry-After")
        wait: float | None = None
        if value:
            try:
                wait = float(value)
            except ValueError:
                when = email.utils.parsedate_to_datetime(value)
                wait = when.timestamp() - time.time() if when else None
        if wait is None or wait < 0:
            wait = _backoff(attempt)
        return min(wait, self._max_retry_after)


def _backoff(attempt: int, base: float = 0.2, cap: float = 5.0) -> float:
    """Capped exponential backoff with full jitter, so many clients do not retry in step."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _submission(command: Command, response: httpx.Response) -> Submission:
    doc = response.json()
    try:
        status: Status | None = Status(doc.get("status"))
    except ValueError:
        status = None
    return Submission(
        id=UUID(str(doc["id"])),
        submitted_id=command.id,
        idempotency_key=command.idempotency_key or str(command.id),
        transport="http",
        replayed=response.headers.get("Idempotent-Replayed", "").lower() == "true",
        status=status,
        status_url=doc.get("status_url"),
    )
