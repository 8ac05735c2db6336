/**
 * What the contract says about statuses and events, as code: which statuses end a command,
 * and a check that a message really is a v1 lifecycle event before anything trusts its fields.
 */
import { DecodeError } from './errors.js';
import type { LifecycleEvent, Status } from './models.js';

/** The statuses that end a command's run (for its id). */
export const TERMINAL_STATUSES = ['completed', 'failed', 'duplicate'] as const satisfies readonly Status[];

/** A status that ends the run. */
export type TerminalStatus = (typeof TERMINAL_STATUSES)[number];

/** Every status, in lifecycle order. */
export const STATUSES = [
  'pending',
  'processing',
  'retrying',
  'waiting',
  'unknown',
  'completed',
  'failed',
  'duplicate',
] as const satisfies readonly Status[];

/** Whether `status` ends the command's run. */
export function isTerminal(status: Status): status is TerminalStatus {
  return (TERMINAL_STATUSES as readonly string[]).includes(status);
}

/** A lifecycle event that ends the command's run. */
export type TerminalEvent = LifecycleEvent & { status: TerminalStatus };

/** Whether `event` ends the command's run. */
export function isTerminalEvent(event: LifecycleEvent): event is TerminalEvent {
  return isTerminal(event.status);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const REQUIRED_STRINGS = ['event_id', 'command_id', 'kind', 'provider', 'operation', 'occurred_at'] as const;

/**
 * Decodes a message body (JSON bytes or an already parsed value) into a lifecycle event.
 * Checks what the client relies on (ids, `seq`, a known `status`); unknown extra fields are
 * kept, as the schema allows them.
 */
export function parseEvent(body: Buffer | string | unknown): LifecycleEvent {
  let value: unknown = body;
  if (Buffer.isBuffer(body) || typeof body === 'string') {
    try {
      value = JSON.parse(body.toString());
    } catch (cause) {
      throw new DecodeError('the event is not JSON', { cause });
    }
  }
  if (!isRecord(value)) throw new DecodeError('the event is not a JSON object');
  for (const field of REQUIRED_STRINGS) {
    if (typeof value[field] !== 'string') throw new DecodeError(`the event has no string "${field}"`);
  }
  for (const field of ['seq', 'attempt'] as const) {
    const n = value[field];
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) {
      throw new DecodeError(`the event's "${field}" is not a non-negative integer`);
    }
  }
  if (!(STATUSES as readonly unknown[]).includes(value.status)) {
    throw new DecodeError(`the event's status ${JSON.stringify(value.status)} is not a v1 status`);
  }
  return value as LifecycleEvent;
}

/** The events' routing key: `{kind}.{provider}.{status}`. */
export function eventRoutingKey(kind: string, provider: string, status: Status | '*'): string {
  return `${kind}.${provider}.${status}`;
}
