"""The machine-wide broker lock, ``/tmp/sy-broker.lock``, shared by every suite on one broker.

A suite that stops the broker holds it exclusively while it does; this suite holds it shared
for as long as it runs, so a lock-respecting restart elsewhere waits for it rather than
pulling the broker out from under a test, and takes it exclusively for its own restart.

A run wrapped in ``flock /tmp/sy-broker.lock ...`` passes the locked file down to this
process: the parent already holds it exclusively, so nothing more is taken (and the parent's
lock is never released or weakened from here).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

LOCK = Path("/tmp/sy-broker.lock")
WAIT = 600.0


def _inherited() -> int | None:
    """A descriptor of LOCK this process inherited (from ``flock LOCK cmd``), if any."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return None
    for entry in fds.iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(entry) == str(LOCK):
                return int(entry.name)
    return None


class BrokerLock:
    """Shared while the suite runs, exclusive around a restart."""

    def __init__(self) -> None:
        self._inherited = _inherited() is not None
        self._fd = -1 if self._inherited else os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o666)

    def hold_shared(self) -> None:
        """Waits (up to WAIT) for any restart elsewhere to end, then holds the lock shared."""
        if self._inherited:
            return
        deadline = time.monotonic() + WAIT
        while not self._try(fcntl.LOCK_SH):
            assert time.monotonic() < deadline, f"{LOCK} stayed locked for {WAIT:g} s"
            time.sleep(0.5)

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Holds the lock exclusively for the duration (then shared again)."""
        if self._inherited:
            yield
            return
        deadline = time.monotonic() + WAIT
        while not self._try(fcntl.LOCK_EX):
            assert time.monotonic() < deadline, f"{LOCK} stayed locked for {WAIT:g} s"
            await asyncio.sleep(0.5)
        try:
            yield
        finally:
            self.hold_shared()

    def release(self) -> None:
        """Lets go of the lock (never one inherited from a parent)."""
        if not self._inherited:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)

    def _try(self, mode: int) -> bool:
        try:
            fcntl.flock(self._fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
