"""The client a core app holds: submit commands, await their outcome, read the ledger.

One :class:`SwitchyardClient` per process is the intended use: it keeps one HTTP connection
pool and one AMQP connection (publisher plus outcome watcher), both reconnecting on their own.
"""

from __future__ import annotations

import os
import socket
import ssl
from types import TracebackType
from uuid import UUID, uuid4

from .errors import ConfigurationError, OutcomeTimeout, UnknownCommand
from .http import HttpApi
from .link import Link
from .models import Command
from .publisher import CommandPublisher
from .results import CommandRecord, Outcome, Submission, Transport
from .watcher import OutcomeWatcher, Track


class SwitchyardClient:
    """Submits commands over HTTP (``url``, ``token``) or AMQP (``amqp_url``) and reports
    their outcomes (which needs ``amqp_url``: outcomes are events on ``switchyard.events``).

    Use it as an async context manager, or call :meth:`connect` and :meth:`close`::

        async with SwitchyardClient.from_env() as client:
            command = new_command("payment", "stripe", "charge", {...})
            submission = await client.submit(command)
            outcome = await client.outcome(submission.id, timeout=30)
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        amqp_url: str | None = None,
        *,
        verify: ssl.SSLContext | bool = True,
        http_timeout: float = 10.0,
        http_attempts: int = 5,
        confirm_timeout: float = 10.0,
        publish_attempts: int = 5,
        connect_timeout: float = 15.0,
        watch_outcomes: bool = True,
        watcher_queue: str | None = None,
        name: str = "switchyard-client",
    ) -> None:
        if url is None and amqp_url is None:
            raise ConfigurationError("give an ingress url, an amqp_url, or both")
        self._http = (
            HttpApi(url, token, timeout=http_timeout, max_attempts=http_attempts, verify=verify)
            if url
            else None
        )
        self._connect_timeout = connect_timeout
        self._link: Link | None = None
        self._publisher: CommandPublisher | None = None
        self._watcher: OutcomeWatcher | None = None
        if amqp_url:
            self._link = Link(amqp_url, name=name, connect_timeout=connect_timeout)
            self._publisher = CommandPublisher(
                self._link, confirm_timeout=confirm_timeout, max_attempts=publish_attempts
            )
            if watch_outcomes:
                queue = watcher_queue or (
                    f"switchyard.client.{socket.gethostname()}.{os.getpid()}.{uuid4().hex[:8]}"
                )
                self._watcher = OutcomeWatcher(
                    self._link, queue_name=queue, bind_timeout=connect_timeout
                )
                self._link.add_set_up(self._watcher.set_up)

    @classmethod
    def from_env(cls, **options: object) -> SwitchyardClient:
        """A client from ``SWITCHYARD_URL``, ``SWITCHYARD_TOKEN`` and ``SWITCHYARD_AMQP_URL``."""
        return cls(
            os.environ.get("SWITCHYARD_URL") or None,
            os.environ.get("SWITCHYARD_TOKEN") or None,
            os.environ.get("SWITCHYARD_AMQP_URL") or None,
            **options,  # type: ignore[arg-type]
        )

    async def __aenter__(self) -> SwitchyardClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connects to the broker (when configured), so the first submit finds it ready."""
        if self._link is not None:
            await self._link.start(self._connect_timeout)

    async def close(self) -> None:
        """Closes the broker connection and the HTTP pool."""
        if self._link is not None:
            await self._link.close()
        if self._http is not None:
            await self._http.aclose()

    @property
    def reconnects(self) -> int:
        """How many times the broker connection was re-established."""
        return self._link.reconnects if self._link is not None else 0

    async def submit(self, command: Command, *, via: Transport | None = None) -> Submission:
        """Sends ``command`` (made by :func:`~switchyard_client.new_command`); returns once
        Switchyard has it durably.

        ``via`` is ``"http"`` (the default when an ingress url is set) or ``"amqp"``. Submitting
        the same command object again is always safe: it carries the same id and idempotency
        key, so Switchyard answers the repeat instead of running it twice. When outcomes are
        watched, the watcher is bound to the command's events before anything is sent.
        """
        transport: Transport = via or ("http" if self._http is not None else "amqp")
        if self._watcher is not None:
            await self._watcher.bind(command.kind, command.provider)
            _mark(self._watcher.track(command.id), command, complete=True)
        if transport == "http":
            if self._http is None:
                raise ConfigurationError("submit via http needs the ingress url")
            submission = await self._http.submit(command)
            if self._watcher is not None and submission.id != command.id:
                # A repeat of an earlier command: outcome() of either id follows the original,
                # whose events may predate our binding, so it reads the ledger once.
                self._watcher.track(command.id).alias = submission.id
                _mark(self._watcher.track(submission.id), command, complete=False)
            return submission
        if self._publisher is None or self._link is None:
            raise ConfigurationError("submit via amqp needs amqp_url")
        await self._publisher.publish(command)
        return Submission(
            id=command.id,
            submitted_id=command.id,
            idempotency_key=command.idempotency_key or str(command.id),
            transport="amqp",
        )

    async def outcome(
        self,
        command_id: UUID,
        timeout: float = 60.0,
        *,
        kind: str | None = None,
        provider: str | None = None,
    ) -> Outcome:
        """Waits for ``command_id``'s terminal event (completed, failed or duplicate).

        For a command this client submitted, nothing can be missed: the watcher was bound
        first. For any other id (another process's, an HTTP repeat's original) the ledger is
        read once after binding, for what happened before; without an ingress url, pass
        ``kind`` and ``provider`` and only events from now on are seen. Raises
        :class:`~switchyard_client.errors.OutcomeTimeout` after ``timeout`` seconds (with the
        last status seen), once the ledger, if configured, was read a last time.
        """
        watcher = self._watcher
        if watcher is None:
            raise ConfigurationError(
                "outcome() needs amqp_url (and watch_outcomes): "
                "outcomes are events on switchyard.events"
            )
        track = watcher.track(command_id)
        if track.alias is not None:
            command_id = track.alias
            track = watcher.track(command_id)
        if not track.complete:
            if kind is not None and provider is not None:
                track.pair = (kind, provider)
            if track.pair is None:
                await self._read_ledger(command_id)
                ended = track.outcome(command_id)
                if ended is not None:
                    return ended
            if track.pair is None:
                if self._http is None:
                    raise ConfigurationError(
                        f"command {command_id} was not submitted by this client: pass kind= and "
                        "provider=, or give the client the ingress url to ask the ledger"
                    )
                raise UnknownCommand(
                    f"the ledger has no command {command_id} (yet): pass kind= and provider= "
                    "to wait for its events anyway"
                )
            await watcher.bind(*track.pair)
            track.complete = True
            await self._read_ledger(command_id)
        try:
            return await watcher.wait(command_id, timeout)
        except OutcomeTimeout:
            await self._read_ledger(command_id)
            found = track.outcome(command_id)
            if found is None:
                raise
            return found

    async def run(
        self, command: Command, *, timeout: float = 60.0, via: Transport | None = None
    ) -> Outcome:
        """:meth:`submit`, then :meth:`outcome` of the command that runs."""
        submission = await self.submit(command, via=via)
        return await self.outcome(submission.id, timeout)

    async def command(self, command_id: UUID) -> CommandRecord | None:
        """The ledger's record of ``command_id`` (``GET /v1/commands/{id}``), or ``None``."""
        if self._http is None:
            raise ConfigurationError("reading the ledger needs the ingress url")
        return await self._http.command(command_id)

    async def _read_ledger(self, command_id: UUID) -> None:
        """One read of the ledger into the watcher's record, when an ingress url is set."""
        if self._http is None or self._watcher is None:
            return
        record = await self._http.command(command_id)
        if record is None:
            return
        self._watcher.merge(command_id, record.events)
        if record.kind and record.provider:
            self._watcher.track(command_id).pair = (record.kind, record.provider)


def _mark(track: Track, command: Command, *, complete: bool) -> None:
    track.pair = (command.kind, command.provider)
    track.complete = track.complete or complete
