/**
 * Every error the client throws is a {@link SwitchyardError}; the subclasses say what the caller
 * can do about it. Problem answers of the HTTP API (RFC 9457) keep their body in `problem`.
 */
import type { LifecycleEvent } from './models.js';

/** Base class: `instanceof SwitchyardError` catches everything this library throws. */
export class SwitchyardError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The client was configured without what the call needs (e.g. no AMQP URL for `outcome`). */
export class ConfigurationError extends SwitchyardError {}

/** An `application/problem+json` body as the Switchyard HTTP APIs send it. */
export interface Problem {
  /** e.g. `urn:switchyard:problem:invalid`. */
  type: string;
  title: string;
  status: number;
  detail?: string;
  /** The offending field of the command, when one is to blame. */
  field?: string;
  [member: string]: unknown;
}

/** The HTTP API refused the request with a problem; nothing was accepted. Not retried. */
export class ProblemError extends SwitchyardError {
  readonly status: number;
  readonly problem: Problem;

  constructor(problem: Problem) {
    const where = problem.field === undefined ? '' : ` (field ${problem.field})`;
    super(`${problem.status} ${problem.title}${where}: ${problem.detail ?? problem.type}`);
    this.status = problem.status;
    this.problem = problem;
  }
}

/** 400, 413, 415 or 422: the command is malformed, too large, or not acceptable as it is. */
export class InvalidCommandError extends ProblemError {}

/**
 * 422 whose problem `type` ends in `idempotency_conflict`: the idempotency key (or the id)
 * already names a command asking for something else. Use a new key for a new command.
 */
export class IdempotencyConflictError extends ProblemError {}

/** 401 or 403: the bearer token is missing or not accepted. */
export class AuthenticationError extends ProblemError {}

/** 404: the ledger never heard of the command. */
export class NotFoundError extends ProblemError {}

/**
 * The fleet could not be reached in time: the ingress kept answering 503 (or could not be
 * reached) through the retry budget, or no broker connection came up. Nothing is known to be
 * accepted; submitting again with the same idempotency key is safe.
 */
export class UnavailableError extends SwitchyardError {
  /** How many requests were made. */
  readonly attempts: number;

  constructor(message: string, attempts: number, options?: { cause?: unknown }) {
    super(message, options);
    this.attempts = attempts;
  }
}

/** Why an AMQP publish was not confirmed. */
export type PublishFailure = 'nacked' | 'unavailable' | 'timeout' | 'not_found';

/**
 * The broker did not take responsibility for the command within the publish budget. Publishing
 * again with the same id and idempotency key is safe: the fleet runs one command per identity.
 */
export class PublishError extends SwitchyardError {
  readonly reason: PublishFailure;

  constructor(reason: PublishFailure, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.reason = reason;
  }
}

/**
 * The broker returned the mandatory publish: nothing routes it, not even the alternate
 * exchange, so the topology is not in place (`switchyard topology apply`). Not retried.
 */
export class UnroutableError extends SwitchyardError {
  readonly routingKey: string;

  constructor(routingKey: string, replyText: string) {
    super(`the broker returned the command (${replyText}): nothing routes ${routingKey}`);
    this.routingKey = routingKey;
  }
}

/**
 * No terminal event within the time asked. `lastEvent` is the latest status seen, if any: a
 * command that is `waiting` or `unknown` is still open, and an `unknown` one must not be
 * retried as if it had failed (the provider may have acted).
 */
export class OutcomeTimeoutError extends SwitchyardError {
  readonly commandId: string;
  readonly lastEvent: LifecycleEvent | undefined;

  constructor(commandId: string, timeoutMs: number, lastEvent: LifecycleEvent | undefined) {
    const last = lastEvent === undefined ? 'no event seen' : `last status ${lastEvent.status}`;
    super(`command ${commandId} reached no terminal status within ${timeoutMs} ms (${last})`);
    this.commandId = commandId;
    this.lastEvent = lastEvent;
  }
}

/** A message on `switchyard.events` that is not a v1 lifecycle event. */
export class DecodeError extends SwitchyardError {}

/** The subscriber's handler threw; the event will be delivered again. */
export class HandlerError extends SwitchyardError {
  readonly event: LifecycleEvent;

  constructor(event: LifecycleEvent, cause: unknown) {
    super(`the handler failed on event ${event.event_id} (${event.status} of ${event.command_id})`, {
      cause,
    });
    this.event = event;
  }
}

/** The client or subscriber was closed while the call was waiting. */
export class ClosedError extends SwitchyardError {}
