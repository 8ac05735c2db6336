"""Identifiers the client makes itself.

Command ids are made on the client, before anything is sent, for two reasons: the caller can
bind to the command's events (and script a sandbox scenario) before the command exists
anywhere, and every retry of one logical command carries the same id and idempotency key.
"""

from __future__ import annotations

import os
import time
from uuid import UUID

_RAND_A_BITS = 12
_RAND_B_BITS = 62


def uuid7() -> UUID:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits.

    The same kind of id the ingress makes when it chooses one, so ids sort by creation time
    in the ledger whoever made them. (The standard library has ``uuid.uuid7`` only from 3.14.)
    """
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> (80 - _RAND_A_BITS)
    rand_b = rand & ((1 << _RAND_B_BITS) - 1)
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= rand_a << 64
    value |= 0b10 << 62  # variant
    value |= rand_b
    return UUID(int=value)
