# Generated from schemas/command.v1.json and schemas/event.v1.json by
# clients/python/generate.sh (datamodel-code-generator, pydantic v2). Do not edit by hand:
# change the schemas and run ./generate.sh; tests/test_models.py fails when this file drifts.

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from typing_extensions import TypeAliasType

IdempotencyKey = TypeAliasType(
    "IdempotencyKey", Annotated[str, Field(max_length=255, min_length=1)]
)
"""
An idempotency key: 1 to 255 characters, the command's identity in place of its `id`.
Within the idempotency window, a command with the same key and the same kind, provider,
operation and payload is a duplicate, never executed again; one with the same key and
anything else of these is a conflict, refused. The provider's idempotency key derives
from it.
"""


Metadata = TypeAliasType("Metadata", Annotated[dict[str, str], Field(max_length=32)])
"""
Free-form string pairs echoed on every event: at most 32 entries.
"""


class ErrorClass(str, Enum):
    """
    How a failure is classified. The worker alone maps a class to a broker action.
    """

    transient = "transient"
    """
    The outcome is unknown or the provider is temporarily unable: retry with the same key.
    """
    permanent = "permanent"
    """
    The provider refused for good (4xx, business rejection): never retried.
    """
    timeout = "timeout"
    """
    The attempt ran out of time: an unknown outcome, retried like a transient failure.
    """
    invalid = "invalid"
    """
    The command could not be decoded or validated: never retried.
    """
    expired = "expired"
    """
    The command's deadline passed before it could finish.
    """
    unknown = "unknown"
    """
    The provider may have acted but its answer cannot be read (v1.1): never retried
    blindly; a status check or an operator decides.
    """


class ErrorInfo(BaseModel):
    """
    The `error` object of a `failed` or `retrying` event, and of dead-letter headers.
    """

    class_: Annotated[ErrorClass, Field(alias="class")]
    """
    The classification.
    """
    code: str
    """
    A short machine-readable code, e.g. `http_503`, `card_declined`, `schema`.
    """
    http_status: Annotated[int | None, Field(ge=0, le=65535)] = None
    """
    The provider's HTTP status, when there was one.
    """
    message: str
    """
    A human-readable, redacted explanation.
    """


class Status(str, Enum):
    """
    Where a command is in its lifecycle.
    """

    pending = "pending"
    """
    Accepted and durably queued.
    """
    processing = "processing"
    """
    A worker is calling the provider.
    """
    retrying = "retrying"
    """
    An attempt failed transiently; the next one is scheduled.
    """
    waiting = "waiting"
    """
    The provider accepted a long-running operation.
    """
    completed = "completed"
    """
    Finished successfully. Terminal.
    """
    failed = "failed"
    """
    Failed for good. Terminal.
    """
    unknown = "unknown"
    """
    The provider may have acted but its answer cannot be read (v1.1). Not terminal: a
    status check or an operator ends it.
    """
    duplicate = "duplicate"
    """
    A repeat of an earlier command's identity and fingerprint under another id (v1.1): not
    executed; `duplicate_of` names the original. Terminal for this id.
    """


class Command(BaseModel):
    """
    A command as it travels on `switchyard.commands` (the v1 envelope).
    """

    model_config = ConfigDict(
        extra="forbid",
    )
    created_at: AwareDatetime
    """
    Set by the publisher.
    """
    deadline: AwareDatetime | None = None
    """
    Schedule-to-close: past it the command ends `failed` with class `expired`.
    """
    id: UUID
    """
    Unique per command.
    """
    idempotency_key: IdempotencyKey | None = None
    """
    The command's identity, in place of `id`, within the idempotency window
    (`worker.idempotency_window`, 24 h by default): the same key with the same kind,
    provider, operation and payload is a duplicate, never executed again; with another
    kind, provider, operation or payload, a conflict, refused. The key sent to the provider
    derives from it, so it is the same on every retry and replay.
    """
    kind: Annotated[str, Field(pattern="^[a-z][a-z0-9_]{0,62}$")]
    """
    Integration kind; must match the routing key.
    """
    metadata: Metadata | None = None
    """
    Echoed on every event.
    """
    operation: Annotated[str, Field(pattern="^[a-z][a-z0-9_]{0,62}$")]
    """
    Operation; must match the routing key.
    """
    payload: dict[str, Any]
    """
    Operation input, validated against the operation's JSON Schema.
    """
    provider: Annotated[str, Field(pattern="^[a-z][a-z0-9_]{0,62}$")]
    """
    Provider; must match the routing key.
    """


class Event(BaseModel):
    """
    A lifecycle event as published on `switchyard.events`.
    """

    attempt: Annotated[int, Field(ge=0)]
    """
    The attempt this event belongs to (0 before the first attempt).
    """
    command_id: UUID
    """
    The command this event is about.
    """
    duplicate_of: UUID | None = None
    """
    The original command, on `duplicate` (v1.1).
    """
    error: ErrorInfo | None = None
    """
    Why, on `retrying`, `unknown` and `failed`.
    """
    event_id: UUID
    """
    Deterministic per transition: the same transition replayed has the same id.
    """
    kind: Annotated[str, Field(pattern="^[a-z][a-z0-9_]{0,62}$")]
    """
    Integration kind.
    """
    metadata: Metadata | None = {}
    """
    The command's metadata, echoed.
    """
    next_attempt_at: AwareDatetime | None = None
    """
    When the next attempt is due, on `retrying`.
    """
    occurred_at: AwareDatetime
    """
    When the transition happened.
    """
    operation: Annotated[str, Field(pattern="^[a-z][a-z0-9_]{0,62}$")]
    """
    Operation.
    """
    provider: Annotated[str, Field(pattern="^[a-z][a-z0-9_]{0,62}$")]
    """
    Provider.
    """
    provider_reference: str | None = None
    """
    The provider's own id for the work, when it gave one.
    """
    result: Any | None = None
    """
    The outcome, on `completed`.
    """
    run: Annotated[int | None, Field(ge=0)] = 0
    """
    The run this event belongs to (v1.1): 0 for the first, n for the n-th replay.
    """
    seq: Annotated[int, Field(ge=0)]
    """
    Increases along one command's lifecycle, across runs: the highest `seq` is the current
    state.
    """
    status: Status
    """
    The new status.
    """


Message = TypeAliasType("Message", Annotated[Command | Event, Field(title="Message")])
"""
Anything Switchyard carries on its exchanges: a command or an event.
"""
