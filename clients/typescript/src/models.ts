/* eslint-disable */
/**
 * The contract's command and event types, generated from schemas/command.v1.json and
 * schemas/event.v1.json by `npm run generate` (scripts/generate-models.ts). Do not edit by
 * hand: change the schemas (they are generated from the Rust types) and run it again.
 */

/**
 * An idempotency key: 1 to 255 characters, the command's identity in place of its `id`.
 * Within the idempotency window, a command with the same key and the same kind, provider,
 * operation and payload is a duplicate, never executed again; one with the same key and
 * anything else of these is a conflict, refused. The provider's idempotency key derives
 * from it.
 *
 * This interface was referenced by `Command`'s JSON-Schema
 * via the `definition` "IdempotencyKey".
 */
export type IdempotencyKey = string;
/**
 * A kind, provider or operation name.
 *
 * This interface was referenced by `Command`'s JSON-Schema
 * via the `definition` "Name".
 */
export type Name = string;

/**
 * A command as it travels on `switchyard.commands` (the v1 envelope).
 */
export interface Command {
  /**
   * Set by the publisher.
   */
  created_at: string;
  /**
   * Schedule-to-close: past it the command ends `failed` with class `expired`.
   */
  deadline?: string | null;
  /**
   * Unique per command.
   */
  id: string;
  /**
   * The command's identity, in place of `id`, within the idempotency window
   * (`worker.idempotency_window`, 24 h by default): the same key with the same kind,
   * provider, operation and payload is a duplicate, never executed again; with another
   * kind, provider, operation or payload, a conflict, refused. The key sent to the provider
   * derives from it, so it is the same on every retry and replay.
   */
  idempotency_key?: IdempotencyKey | null;
  /**
   * Integration kind; must match the routing key.
   */
  kind: Name;
  /**
   * Echoed on every event.
   */
  metadata?: Metadata;
  /**
   * Operation; must match the routing key.
   */
  operation: Name;
  /**
   * Operation input, validated against the operation's JSON Schema.
   */
  payload: {
    [k: string]: unknown;
  };
  /**
   * Provider; must match the routing key.
   */
  provider: Name;
}
/**
 * Free-form string pairs echoed on every event: at most 32 entries.
 *
 * This interface was referenced by `Command`'s JSON-Schema
 * via the `definition` "Metadata".
 */
export interface Metadata {
  [k: string]: string;
}

/**
 * How a failure is classified. The worker alone maps a class to a broker action.
 *
 * This interface was referenced by `LifecycleEvent`'s JSON-Schema
 * via the `definition` "ErrorClass".
 */
export type ErrorClass = 'transient' | 'permanent' | 'timeout' | 'invalid' | 'expired' | 'unknown';
/**
 * Where a command is in its lifecycle.
 *
 * This interface was referenced by `LifecycleEvent`'s JSON-Schema
 * via the `definition` "Status".
 */
export type Status =
  | 'pending'
  | 'processing'
  | 'retrying'
  | 'waiting'
  | 'completed'
  | 'failed'
  | 'unknown'
  | 'duplicate';

/**
 * A lifecycle event as published on `switchyard.events`.
 */
export interface LifecycleEvent {
  /**
   * The attempt this event belongs to (0 before the first attempt).
   */
  attempt: number;
  /**
   * The command this event is about.
   */
  command_id: string;
  /**
   * The original command, on `duplicate` (v1.1).
   */
  duplicate_of?: string | null;
  /**
   * Why, on `retrying`, `unknown` and `failed`.
   */
  error?: ErrorInfo | null;
  /**
   * Deterministic per transition: the same transition replayed has the same id.
   */
  event_id: string;
  /**
   * Integration kind.
   */
  kind: Name;
  /**
   * The command's metadata, echoed.
   */
  metadata?: Metadata;
  /**
   * When the next attempt is due, on `retrying`.
   */
  next_attempt_at?: string | null;
  /**
   * When the transition happened.
   */
  occurred_at: string;
  /**
   * Operation.
   */
  operation: Name;
  /**
   * Provider.
   */
  provider: Name;
  /**
   * The provider's own id for the work, when it gave one.
   */
  provider_reference?: string | null;
  /**
   * The outcome, on `completed`.
   */
  result?: unknown;
  /**
   * The run this event belongs to (v1.1): 0 for the first, n for the n-th replay.
   */
  run?: number;
  /**
   * Increases along one command's lifecycle, across runs: the highest `seq` is the current
   * state.
   */
  seq: number;
  /**
   * The new status.
   */
  status: Status;
  [k: string]: unknown;
}
/**
 * The `error` object of a `failed` or `retrying` event, and of dead-letter headers.
 *
 * This interface was referenced by `LifecycleEvent`'s JSON-Schema
 * via the `definition` "ErrorInfo".
 */
export interface ErrorInfo {
  /**
   * The classification.
   */
  class: ErrorClass;
  /**
   * A short machine-readable code, e.g. `http_503`, `card_declined`, `schema`.
   */
  code: string;
  /**
   * The provider's HTTP status, when there was one.
   */
  http_status?: number | null;
  /**
   * A human-readable, redacted explanation.
   */
  message: string;
  [k: string]: unknown;
}
