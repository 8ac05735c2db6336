"""Switchyard's Python client.

Submit commands over HTTP or AMQP with a stable idempotency key, await their outcome without
missing an event, and subscribe to lifecycle events through a durable queue. See README.md.
"""

from .client import SwitchyardClient
from .commands import new_command, routing_key
from .errors import (
    BrokerRefused,
    BrokerUnavailable,
    CommandReturned,
    ConfigurationError,
    IdempotencyConflict,
    InvalidCommand,
    MalformedCommand,
    NotFound,
    OutcomeTimeout,
    PayloadTooLarge,
    ProblemError,
    PublishError,
    PublishNacked,
    SwitchyardError,
    TopologyMissing,
    TransportError,
    Unauthenticated,
    Unavailable,
    UnknownCommand,
    UnsupportedMediaType,
)
from .ids import uuid7
from .models import Command, ErrorClass, ErrorInfo, Event, Status
from .results import TERMINAL, CommandRecord, Outcome, Submission, is_terminal
from .state import MemoryState, SubscriberState
from .subscriber import Subscriber, SubscriberStats

__version__ = "0.1.0"

__all__ = [
    "TERMINAL",
    "BrokerRefused",
    "BrokerUnavailable",
    "Command",
    "CommandRecord",
    "CommandReturned",
    "ConfigurationError",
    "ErrorClass",
    "ErrorInfo",
    "Event",
    "IdempotencyConflict",
    "InvalidCommand",
    "MalformedCommand",
    "MemoryState",
    "NotFound",
    "Outcome",
    "OutcomeTimeout",
    "PayloadTooLarge",
    "ProblemError",
    "PublishError",
    "PublishNacked",
    "Status",
    "Submission",
    "Subscriber",
    "SubscriberState",
    "SubscriberStats",
    "SwitchyardClient",
    "SwitchyardError",
    "TopologyMissing",
    "TransportError",
    "Unauthenticated",
    "Unavailable",
    "UnknownCommand",
    "UnsupportedMediaType",
    "is_terminal",
    "new_command",
    "routing_key",
    "uuid7",
]
