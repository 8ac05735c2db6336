"""Every error the client raises, as typed exceptions.

HTTP refusals carry the ingress's RFC 9457 problem details (``type``, ``title``, ``detail`` and
the offending ``field``), so a caller can branch on the class and show the detail. AMQP
publishes fail with a :class:`PublishError` subclass naming why the broker did not take
responsibility for the command.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from .models import Event


class SwitchyardError(Exception):
    """Base of everything this package raises."""


class ConfigurationError(SwitchyardError):
    """The client lacks what an operation needs (an ingress URL, an AMQP URL, a token)."""


class TransportError(SwitchyardError):
    """The ingress could not be reached, or kept failing, after every polite retry."""


class ProblemError(SwitchyardError):
    """The ingress refused the request with ``application/problem+json``.

    Nothing was accepted: the command does not exist (except for :class:`Unavailable`, where
    a later retry of the same command may still succeed).
    """

    def __init__(
        self,
        status: int,
        type: str,
        title: str,
        detail: str,
        field: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}" + (f" (field {field})" if field else ""))
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.field = field
        self.body = body or {}


class MalformedCommand(ProblemError):
    """400: the body is not a well-formed command (or a header contradicts it)."""


class Unauthenticated(ProblemError):
    """401: no valid bearer token."""


class NotFound(ProblemError):
    """404: the ledger never heard of the id, or the route does not exist."""


class PayloadTooLarge(ProblemError):
    """413: the body exceeds the ingress's limit."""


class UnsupportedMediaType(ProblemError):
    """415: the body was not sent as JSON."""


class InvalidCommand(ProblemError):
    """422: well-formed but refused (unknown kind, provider or operation, or a payload its
    schema rejects); ``field`` names the culprit."""


class IdempotencyConflict(ProblemError):
    """422 ``...idempotency_conflict``: the key (or id) already names a command that asks
    for something else. Nothing was accepted; the original is untouched."""


class Unavailable(ProblemError):
    """503 after every retry: the broker could not confirm. Submitting the same command
    object again later is safe."""

    retry_after: float | None = None


class PublishError(SwitchyardError):
    """The broker did not take responsibility for an AMQP publish."""


class BrokerUnavailable(PublishError):
    """No broker connection, or no confirm, within the allowed time and attempts."""


class PublishNacked(PublishError):
    """The broker refused the message every time (e.g. a full queue with reject-publish)."""


class CommandReturned(PublishError):
    """The mandatory publish came back unroutable: ``switchyard.commands`` has no alternate
    exchange here (its topology is not Switchyard's)."""

    def __init__(self, routing_key: str, reply_code: int, reply_text: str) -> None:
        super().__init__(
            f"command returned as unroutable ({reply_code} {reply_text}): {routing_key}"
        )
        self.routing_key = routing_key
        self.reply_code = reply_code
        self.reply_text = reply_text


class TopologyMissing(PublishError):
    """``switchyard.commands`` does not exist on this vhost: the fleet never declared its
    topology (run ``switchyard topology apply``, or start a worker or the ingress)."""


class BrokerRefused(SwitchyardError):
    """The broker refused a set-up for good (a queue that exists with other arguments, no
    access, bad credentials): reconnecting will not help, the configuration must change."""


class UnknownCommand(SwitchyardError, LookupError):
    """``outcome()`` of an id this client did not submit, which the ledger does not know (yet):
    pass ``kind`` and ``provider`` to wait for its events anyway."""


class OutcomeTimeout(SwitchyardError, TimeoutError):
    """No terminal event within the timeout. The command may still finish: ``last_event`` is
    the latest event seen (``waiting``, ``unknown``, ``retrying``...), if any."""

    def __init__(self, command_id: UUID, timeout: float, last_event: Event | None) -> None:
        seen = f"; last status {last_event.status.value}" if last_event else "; no event seen"
        super().__init__(
            f"command {command_id} reached no terminal status within {timeout:g} s{seen}"
        )
        self.command_id = command_id
        self.timeout = timeout
        self.last_event = last_event


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: MalformedCommand,
    401: Unauthenticated,
    404: NotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidCommand,
    503: Unavailable,
}


def problem_from(status: int, body: Any) -> ProblemError:
    """The typed exception for a problem+json answer (or any error answer, read leniently)."""
    doc: dict[str, Any] = body if isinstance(body, dict) else {}
    ptype = str(doc.get("type", "about:blank"))
    title = str(doc.get("title", f"HTTP {status}"))
    detail = str(doc.get("detail", "" if doc else str(body)[:500]))
    field = doc.get("field")
    cls: type[ProblemError]
    if status == 422 and ptype.endswith("idempotency_conflict"):
        cls = IdempotencyConflict
    else:
        cls = _BY_STATUS.get(status, ProblemError)
    return cls(status, ptype, title, detail, str(field) if field is not None else None, doc)
