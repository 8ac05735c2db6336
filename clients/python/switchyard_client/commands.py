"""Building commands: one :class:`~switchyard_client.models.Command` per logical command.

A command built here is complete and frozen in its identity: its ``id``, ``idempotency_key``
and ``created_at`` are fixed once, so submitting the same object again (after a timeout, a
503, a lost connection) repeats the same command, which Switchyard answers instead of
executing twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from .ids import uuid7
from .models import Command

MAX_KEY_LENGTH = 255
MAX_METADATA_ENTRIES = 32
COMMAND_TYPE = "switchyard.command.v1"


def new_command(
    kind: str,
    provider: str,
    operation: str,
    payload: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    metadata: Mapping[str, str] | None = None,
    deadline: datetime | None = None,
    command_id: UUID | None = None,
) -> Command:
    """A new logical command.

    ``idempotency_key`` is the caller's business identity for the command (an order number
    and step, say): the same key always means the same command, across processes and days.
    Without one, the command's own id (a fresh UUIDv7) is its key, which still makes every
    retry of *this* command safe. A ``deadline`` must carry a time zone.
    """
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_KEY_LENGTH:
        raise ValueError(f"an idempotency key has 1 to {MAX_KEY_LENGTH} characters")
    if metadata is not None and len(metadata) > MAX_METADATA_ENTRIES:
        raise ValueError(f"metadata holds at most {MAX_METADATA_ENTRIES} entries")
    cid = command_id or uuid7()
    return Command(
        id=cid,
        kind=kind,
        provider=provider,
        operation=operation,
        payload=dict(payload),
        idempotency_key=idempotency_key if idempotency_key is not None else str(cid),
        metadata=dict(metadata) if metadata else None,
        deadline=deadline,
        created_at=datetime.now(timezone.utc),
    )


def routing_key(command: Command) -> str:
    """``{kind}.{provider}.{operation}``: where ``switchyard.commands`` routes the command."""
    return f"{command.kind}.{command.provider}.{command.operation}"


def command_body(command: Command) -> bytes:
    """The v1 envelope as JSON: the same bytes for every retry of the same command object."""
    return command.model_dump_json(exclude_none=True, by_alias=True).encode()


def identity(command: Command) -> str:
    """The key Switchyard identifies the command by: its idempotency key, else its id."""
    return command.idempotency_key if command.idempotency_key is not None else str(command.id)
