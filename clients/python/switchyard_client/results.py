"""What the client hands back: a submission's receipt, a command's outcome, a ledger record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from .models import ErrorInfo, Event, Status

Transport = Literal["http", "amqp"]

TERMINAL: frozenset[Status] = frozenset({Status.completed, Status.failed, Status.duplicate})


def is_terminal(event: Event) -> bool:
    """Whether ``event`` ends its command (for its id): completed, failed or duplicate."""
    return event.status in TERMINAL


@dataclass(frozen=True)
class Submission:
    """The receipt for a submitted command.

    ``id`` is the command Switchyard will run and report on. It differs from the submitted
    command's id only for an HTTP repeat of an earlier command (``replayed``): then it is the
    original's id, whose events tell the outcome. Over AMQP a repeat is only discovered by
    the worker, which reports it as a ``duplicate`` event under the submitted id.
    """

    id: UUID
    submitted_id: UUID
    idempotency_key: str
    transport: Transport
    replayed: bool = False
    status: Status | None = None
    status_url: str | None = None

    @property
    def duplicate_of(self) -> UUID | None:
        """The original command when this submission repeated another one (HTTP only)."""
        return self.id if self.replayed and self.id != self.submitted_id else None


@dataclass(frozen=True)
class Outcome:
    """How a command ended: its terminal ``event`` and the events seen on the way."""

    command_id: UUID
    event: Event
    history: tuple[Event, ...]

    @property
    def status(self) -> Status:
        """``completed``, ``failed`` or ``duplicate``."""
        return self.event.status

    @property
    def completed(self) -> bool:
        """The provider did the work; :attr:`result` holds what it answered."""
        return self.event.status is Status.completed

    @property
    def failed(self) -> bool:
        """Failed for good; :attr:`error` says why (``error.code == "unroutable"``: nobody
        serves the routing key; ``"idempotency_conflict"``: the key names another command)."""
        return self.event.status is Status.failed

    @property
    def duplicate(self) -> bool:
        """Not executed: a repeat of :attr:`duplicate_of`, whose outcome is the answer."""
        return self.event.status is Status.duplicate

    @property
    def result(self) -> Any:
        """The provider's result, on ``completed``."""
        return self.event.result

    @property
    def error(self) -> ErrorInfo | None:
        """Why, on ``failed``."""
        return self.event.error

    @property
    def duplicate_of(self) -> UUID | None:
        """The original command, on ``duplicate``."""
        return self.event.duplicate_of

    def statuses(self) -> list[Status]:
        """The statuses seen, in ``seq`` order (e.g. pending, processing, waiting, completed)."""
        return [e.status for e in self.history]


class CommandRecord(BaseModel):
    """The ledger's answer to ``GET /v1/commands/{id}`` (docs/ledger.md).

    The status fields are ``None`` while only attempt records have reached the ledger. Unknown
    members are kept (``model_extra``), so a newer ledger does not break an older client.
    """

    model_config = ConfigDict(extra="allow")

    id: UUID
    kind: str | None = None
    provider: str | None = None
    operation: str | None = None
    status: Status | None = None
    seq: int | None = None
    run: int | None = None
    attempt: int | None = None
    provider_reference: str | None = None
    result: Any = None
    error: ErrorInfo | None = None
    metadata: dict[str, str] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    events: list[Event] = []
    attempts: list[dict[str, Any]] = []
    resolution: dict[str, Any] | None = None
